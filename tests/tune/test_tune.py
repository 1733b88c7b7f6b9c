"""``imgcls tune`` end to end on the tiny data: one shared study whose space holds a good
peak learning rate, a hopeless one (1e-9: pruned) and one that diverges (1e30: NaN, failed),
2 epochs a trial, then best.yaml retrained by ``imgcls fit -c best.yaml``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from imgcls import runs
from tests.helpers import run_imgcls
from tests.tune.conftest import trial_args, write_tune_file

KEY = "model.scheduler.init_args.max_lr"
N_TRIALS = 6
EPOCHS = 2


@pytest.fixture(scope="module")
def study(tiny: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory):
    """The shared study's folder, the command's output and the trials as trials.csv rows."""
    data, env = tiny
    work = tmp_path_factory.mktemp("study")
    tune_file = write_tune_file(
        work / "mixed.yaml",
        {KEY: [0.01, 1.0e-9, 1.0e30]},
        sampler={"name": "random", "seed": 1},
    )
    proc = run_imgcls(
        "tune",
        "-c",
        str(tune_file),
        "--n_trials",
        str(N_TRIALS),
        *trial_args(data, EPOCHS),
        cwd=work,
        env=env,
    )
    folder = work / "runs" / "mnist-lenet5" / "tune" / "mixed"
    with open(folder / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return work, folder, proc, rows


def _by_state(rows: list[dict], state: str) -> list[dict]:
    return [r for r in rows if r["state"] == state]


def test_hopeless_trials_are_pruned_after_fewer_epochs(study):
    _, _, _, rows = study
    assert len(rows) == N_TRIALS
    pruned, complete = _by_state(rows, "PRUNED"), _by_state(rows, "COMPLETE")
    assert pruned and complete
    assert all(json.loads(r[KEY]) == 1e-9 for r in pruned)
    assert all(int(r["epochs"]) < EPOCHS for r in pruned)
    assert all(int(r["epochs"]) == EPOCHS for r in complete)
    for r in pruned:  # the run itself stopped: its metrics end at the first epoch
        with open(Path(r["run_dir"]) / "metrics.csv", newline="") as fh:
            epochs = {int(float(m["epoch"])) for m in csv.DictReader(fh) if m["epoch"]}
        assert epochs == {0}


def test_a_diverging_trial_fails_with_its_reason_and_the_study_goes_on(study):
    _, _, _, rows = study
    failed = _by_state(rows, "FAIL")
    assert failed and all(json.loads(r[KEY]) == 1e30 for r in failed)
    assert all("NonFiniteLossError" in r["fail_reason"] for r in failed)
    first_failure = min(int(r["number"]) for r in failed)
    later = [r for r in rows if int(r["number"]) > first_failure and r["state"] == "COMPLETE"]
    assert later, "no trial completed after the failed one"


def test_outputs_and_summary(study):
    _, folder, proc, rows = study
    complete = _by_state(rows, "COMPLETE")
    best = max(complete, key=lambda r: float(r["value"]))
    for name in ("best.yaml", "trials.csv", "history.png", "parallel.png", "summary.txt"):
        assert (folder / name).is_file(), name
    # importances need two completed trials whose parameters differ
    varied = len({r[KEY] for r in complete}) > 1
    assert (folder / "importances.png").is_file() == varied
    counts = (len(complete), len(_by_state(rows, "PRUNED")), len(_by_state(rows, "FAIL")))
    assert f"{counts[0]} complete, {counts[1]} pruned, {counts[2]} failed" in proc.stdout
    assert f"best: trial {best['number']}, val/acc = " in proc.stdout
    assert f"retrain: imgcls fit -c {Path('runs/mnist-lenet5/tune/mixed/best.yaml')}" in proc.stdout
    assert ("skipped importances.png" in proc.stdout) != varied
    assert (folder / "summary.txt").read_text() in proc.stdout


def test_best_yaml_reruns_as_it_is(study, tiny):
    work, folder, _, rows = study
    best = max(_by_state(rows, "COMPLETE"), key=lambda r: float(r["value"]))
    cfg = yaml.safe_load((folder / "best.yaml").read_text())
    assert cfg["model"]["scheduler"]["init_args"]["max_lr"] == 0.01
    assert cfg["trainer"]["max_epochs"] == EPOCHS  # the fit options given to tune are in it
    run_imgcls("fit", "-c", str(folder / "best.yaml"), cwd=work, env=tiny[1])
    new_run = runs.runs(work / "runs" / "mnist-lenet5")[-1]
    assert str(new_run.resolve()) not in {r["run_dir"] for r in rows}  # a new run, not a resume

    def last_val_loss(run: Path) -> float:
        with open(run / "metrics.csv", newline="") as fh:
            return [float(m["val/loss"]) for m in csv.DictReader(fh) if m.get("val/loss")][-1]

    # the same config and seed on the CPU: the trial's training, repeated exactly
    assert last_val_loss(new_run) == pytest.approx(last_val_loss(Path(best["run_dir"])), rel=1e-6)


@pytest.mark.slow
def test_a_trial_judged_after_its_last_epoch_completes(tiny, tmp_path):
    """Pruning after the last epoch saves nothing: such a trial completes, with its value."""
    data, env = tiny
    tune_file = write_tune_file(
        tmp_path / "one.yaml", {KEY: [0.01, 1.0e-9]}, sampler={"name": "random", "seed": 0}
    )
    run_imgcls(
        "tune", "-c", str(tune_file), "--n_trials", "4", *trial_args(data, 1), cwd=tmp_path, env=env
    )
    with open(tmp_path / "runs/mnist-lenet5/tune/one/trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    lrs = [json.loads(r[KEY]) for r in rows]
    assert 0.01 in lrs and 1e-9 in lrs[lrs.index(0.01) + 1 :]  # a hopeless one after a good one
    assert [r["state"] for r in rows] == ["COMPLETE"] * 4
    assert all(r["epochs"] == "1" for r in rows)
