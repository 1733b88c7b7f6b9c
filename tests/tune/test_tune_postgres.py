"""One study in a real PostgreSQL server, two ``imgcls tune`` processes on it at once (two
folders, as two machines would have): every trial recorded once, none lost, each process's
trials its own, no two with the same parameters, the budget met."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.tune.conftest import trial_args, write_tune_file

N_TRIALS = 4


@pytest.mark.postgres
def test_two_processes_share_one_postgres_study(tiny, tmp_path, postgres_url):
    data, env = tiny
    tune_file = write_tune_file(
        tmp_path / "shared.yaml",
        {"model.scheduler.init_args.max_lr": {"low": 0.003, "high": 0.03, "log": True}},
        sampler={"name": "random", "seed": None},  # seeded alike, two processes draw alike
        pruner="none",
    )
    args = ["tune", "-c", str(tune_file), "--storage", postgres_url, "--n_trials", str(N_TRIALS)]
    folders = [tmp_path / "a", tmp_path / "b"]
    procs = []
    for folder in folders:
        folder.mkdir()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "imgcls", *args, *trial_args(data, 1)],
                cwd=folder,
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]

    storage = optuna.storages.RDBStorage(postgres_url)
    try:
        trials = optuna.load_study(study_name="shared", storage=storage).trials
    finally:
        storage.engine.dispose()  # close its connections now, not at interpreter exit
    assert N_TRIALS <= len(trials) <= N_TRIALS + 1  # both may start the last one at once
    assert [t.number for t in trials] == list(range(len(trials)))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    lrs = [t.params["model.scheduler.init_args.max_lr"] for t in trials]
    assert len(set(lrs)) == len(lrs)
    # each trial finished in exactly one of the processes, and both did some
    finished = [{int(n) for n in re.findall(r"Trial (\d+) finished", err)} for _, err in outs]
    assert finished[0] and finished[1] and not finished[0] & finished[1]
    assert finished[0] | finished[1] == {t.number for t in trials}
    assert len({t.user_attrs["owner"]["pid"] for t in trials}) == 2
    run_dirs = [Path(t.user_attrs["run_dir"]) for t in trials]
    assert len(set(run_dirs)) == len(trials)
    for t, run in zip(trials, run_dirs, strict=True):
        assert (run / "checkpoints" / "best.ckpt").is_file()
        owner = folders[0] if t.number in finished[0] else folders[1]
        assert run.is_relative_to(owner)
    # each writes the whole study as it stands when it ends: the last to end, all of it
    full = f"trials: {len(trials)}: {len(trials)} complete, 0 pruned, 0 failed"
    assert any(full in out for out, _ in outs)
    for folder in folders:
        assert (folder / "runs/mnist-lenet5/tune/shared/best.yaml").is_file()
