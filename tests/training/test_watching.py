"""Watching a run: curves.png and confusion_matrix.png in the run folder, TensorBoard event
files beside metrics.csv, several loggers in one folder. One tiny run (fit, its resume, its
test) is shared by the module."""

from __future__ import annotations

import csv
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch.loggers import CSVLogger

from imgcls.training import callbacks
from imgcls.training.curves import run_series
from tests.helpers import FAST, ROOT, run_imgcls

CONFIGS = ROOT / "configs"
TINY = ["--data.val_size", "100", "--data.batch_size", "50", "--model.net", "mlp"]
# 10 steps an epoch; the step loss and learning rate logged every 3 steps
STEPS = ["--trainer.log_every_n_steps", "3"]
LOGGERS = ["-c", str(CONFIGS / "logger/csv.yaml"), "-c", str(CONFIGS / "logger/tensorboard.yaml")]


@pytest.fixture(scope="module")
def run(tiny: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch MLP run with the CSV and TensorBoard loggers stacked, resumed to 2 epochs,
    then tested: its run folder."""
    data, env = tiny
    work = tmp_path_factory.mktemp("watch")
    common = [*LOGGERS, *FAST, *TINY, *STEPS, "--data.data_dir", str(data)]
    run_imgcls("fit", *common, "--trainer.max_epochs", "1", cwd=work, env=env)
    folder = work / "runs" / "mnist-mlp" / "version_0"
    assert (folder / "curves.png").is_file()
    (folder / "curves.png").unlink()  # the resume must draw it again
    run_imgcls(
        "fit", *common, "--trainer.max_epochs", "2", "--ckpt_path", "last", cwd=work, env=env
    )
    run_imgcls("test", *common, "--ckpt_path", str(folder), cwd=work, env=env)
    return folder


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def csv_column(path: Path, column: str) -> dict[int, float]:
    """{epoch or step: value} of one column, read with nothing but the csv module."""
    key = "step" if column.startswith("lr") or column == "train/loss" else "epoch"
    with path.open() as fh:
        return {int(r[key]): float(r[column]) for r in csv.DictReader(fh) if r.get(column)}


def test_curves_png_is_drawn_after_fit_and_resume(run: Path) -> None:
    path = run / "curves.png"
    assert png_size(path) == (1500, 450)
    assert path.stat().st_size > 20_000  # three panels of lines, not an empty canvas


def test_curves_plot_what_metrics_csv_holds(run: Path) -> None:
    series = run_series(run / "metrics.csv")
    for name, column in [
        ("val/acc", "val/acc"),
        ("val/loss", "val/loss"),
        ("train/acc", "train/acc"),
        ("train/loss", "train/loss_epoch"),
    ]:
        expected = csv_column(run / "metrics.csv", column)
        assert series[name] == (
            [e + 1.0 for e in sorted(expected)],
            [expected[e] for e in sorted(expected)],
        )
        assert series[name][0] == [1.0, 2.0]  # the resumed epoch is in
    lr = csv_column(run / "metrics.csv", "lr-Adam")
    assert sorted(lr) == [2, 5, 8, 11, 14, 17]
    assert series["lr"] == ([(s + 1) / 10 for s in sorted(lr)], [lr[s] for s in sorted(lr)])
    assert max(series["lr"][1]) > min(series["lr"][1])  # the one-cycle schedule, not a constant
    assert len(series["train/loss_step"][0]) == 6


def test_confusion_matrix_png_beside_the_csv(run: Path) -> None:
    test_dir = run / "test" / "version_0"
    assert (test_dir / "confusion_matrix.csv").is_file()
    width, height = png_size(test_dir / "confusion_matrix.png")
    assert width == height >= 500


def test_a_failure_to_plot_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(folder: object) -> None:
        raise RuntimeError("no fonts")

    monkeypatch.setattr(callbacks, "write_curves", broken)
    trainer = SimpleNamespace(
        is_global_zero=True, fast_dev_run=False, loggers=[CSVLogger(tmp_path, name="x")]
    )
    with pytest.warns(UserWarning, match=r"curves.png was not written \(RuntimeError: no fonts\)"):
        callbacks.RunCurves().on_fit_end(trainer, None)  # type: ignore[arg-type]
    assert not list(tmp_path.rglob("*.png"))


# ----------------------------------------------------------------------------- TensorBoard
def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_one_run_folder_for_both_loggers(run: Path) -> None:
    experiment = run.parent
    assert [p.name for p in experiment.iterdir()] == ["version_0"]  # no second version counter
    assert (run / "metrics.csv").is_file() and (run / "config.yaml").is_file()
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # the fit and its resume
    assert not list(run.rglob("lightning_logs"))


def test_tensorboard_holds_the_runs_metrics(run: Path) -> None:
    tb = scalars(run)
    steps = {s for s, _ in tb["train/loss"]}
    assert steps == {2, 5, 8, 11, 14, 17}  # per step, every log_every_n_steps
    val = csv_column(run / "metrics.csv", "val/acc")
    assert [v for _, v in tb["val/acc"]] == pytest.approx([val[0], val[1]])
    assert [s for s, _ in tb["val/acc"]] == [9, 19]  # per epoch
    assert [v for _, v in tb["lr-Adam"]] == pytest.approx(
        list(csv_column(run / "metrics.csv", "lr-Adam").values())
    )
    assert "hp_metric" not in tb
    assert tb["final/best_val_acc"][-1][1] == pytest.approx(max(val.values()))


def test_tensorboard_hparams_tab(run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["net"].string_value == "mlp"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    assert "final/best_val_acc" in {m.name.tag for m in experiment.metric_infos}


def test_tensorboard_of_the_test(run: Path) -> None:
    tb = scalars(run / "test" / "version_0")
    with (run / "test" / "version_0" / "metrics.csv").open() as fh:
        test_acc = float(next(r for r in csv.DictReader(fh) if r.get("test/acc"))["test/acc"])
    assert tb["test/acc"][-1][1] == pytest.approx(test_acc)
    assert tb["final/test_acc"][-1][1] == pytest.approx(test_acc)


# ----------------------------------------------------------------------------- imgcls compare
def test_compare_two_runs_and_one_without_metrics(run: Path, tmp_path: Path) -> None:
    runs_root = tmp_path / "runs"
    shutil.copytree(run, runs_root / "mnist-mlp" / "version_0")
    other = runs_root / "mnist-mlp" / "version_1"  # a second run: metrics, no checkpoint
    other.mkdir()
    for name in ("metrics.csv", "config.yaml"):
        shutil.copyfile(run / name, other / name)
    empty = runs_root / "mnist-lenet5" / "version_0"
    empty.mkdir(parents=True)
    out = tmp_path / "cmp"
    proc = run_imgcls(
        "compare", str(runs_root / "mnist-mlp" / "version_*"), str(empty), "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout.count("skipped") == 1 and f"{empty}: no metrics" in proc.stdout
    with (out / "compare.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["run"] for r in rows] == ["mnist-mlp/version_0", "mnist-mlp/version_1"]
    first = rows[0]
    val = csv_column(run / "metrics.csv", "val/acc")
    assert first["net"] == "mlp" and first["epochs"] == "2"
    assert float(first["best_val_acc"]) == pytest.approx(max(val.values()), abs=1e-4)
    assert int(first["parameters"]) > 1000 and rows[1]["parameters"] == ""  # no checkpoint
    assert float(first["test_acc"]) >= 0 and rows[1]["test_acc"] == ""
    assert (out / "compare.md").read_text() in proc.stdout
    assert png_size(out / "compare.png") == (1500, 450)
    assert png_size(out / "compare_table.png")[0] == 1200


def test_compare_with_nothing_comparable_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "runs" / "x" / "version_0").mkdir(parents=True)
    proc = run_imgcls("compare", "runs/x", "runs/nope", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("imgcls: error: nothing to compare")
    assert "runs/nope: not a run folder" in proc.stdout
    assert not (tmp_path / "compare").exists()


def test_a_resume_drops_the_learning_rate_rows_it_logs_again(tmp_path: Path) -> None:
    from imgcls.training.loggers import drop_rows_after

    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,lr-Adam,step,val/acc\n"
        ",0.1,4,\n0,,9,0.5\n"  # epoch 0, finished and checkpointed at global step 10
        ",0.2,14,\n1,,19,0.6\n"  # epoch 1, finished but not checkpointed
        ",0.3,24,\n"  # epoch 2, interrupted
    )
    assert drop_rows_after(path, epoch=0, step=10) == 3
    assert path.read_text() == "epoch,lr-Adam,step,val/acc\n,0.1,4,\n0,,9,0.5\n"
