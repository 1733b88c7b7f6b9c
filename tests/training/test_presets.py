"""The presets of configs/callbacks and configs/debug, each run once on the tiny data."""

from __future__ import annotations

import csv
from pathlib import Path

from tests.helpers import FAST, ROOT, run_imgcls

CONFIGS = ROOT / "configs"
TINY = ["--data.val_size", "100", "--data.batch_size", "50", "--model.net", "mlp"]


def fit(tiny: tuple[Path, dict[str, str]], cwd: Path, *args: str) -> str:
    data, env = tiny
    proc = run_imgcls("fit", *FAST, *TINY, "--data.data_dir", str(data), *args, cwd=cwd, env=env)
    return proc.stdout


def epochs(run: Path) -> list[int]:
    with (run / "metrics.csv").open() as fh:
        return sorted({int(r["epoch"]) for r in csv.DictReader(fh) if r.get("val/acc")})


def test_early_stopping_keeps_the_checkpoints_and_the_profiler_reports(tiny, tmp_path):
    # Stacked with the profiler: one run checks both presets. The tiny data is learnt in the
    # first epoch, so val/acc stops improving and patience 3 ends the run after epoch 4 of 10.
    fit(
        tiny,
        tmp_path,
        "-c",
        str(CONFIGS / "callbacks/early_stopping.yaml"),
        "-c",
        str(CONFIGS / "debug/profiler.yaml"),
        "--trainer.max_epochs",
        "10",
    )
    run = tmp_path / "runs" / "mnist-mlp" / "version_0"
    assert len(epochs(run)) < 10
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    report = (run / "fit-profile.txt").read_text()
    assert "FIT Profiler Report" in report and "run_training_epoch" in report


def test_overfit_trains_on_a_few_batches(tiny, tmp_path):
    fit(tiny, tmp_path, "-c", str(CONFIGS / "debug/overfit.yaml"), "--trainer.max_epochs", "2")
    run = tmp_path / "runs" / "mnist-mlp" / "version_0"
    with (run / "metrics.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/acc")]
    assert [int(r["step"]) for r in rows] == [3, 7]  # 4 batches an epoch, not 10
    assert (run / "curves.png").is_file()


def test_fast_dev_run_runs_one_batch_and_saves_nothing(tiny, tmp_path):
    out = fit(tiny, tmp_path, "-c", str(CONFIGS / "debug/fast.yaml"))
    assert "fast_dev_run: a trial run; nothing was logged or saved" in out
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("metrics.csv"))
