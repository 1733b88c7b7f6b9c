"""Runs saved by an earlier imgcls keep working.

``tests/fixtures/saved_run_a2a409c/`` is a real run (an MLP with 10 hidden units, one epoch on
512 MNIST images) saved by imgcls at commit a2a409c, before the training code moved into
``imgcls.training``. Its ``config.yaml`` names ``imgcls.loggers.RunCSVLogger`` as a
``class_path`` and ``imgcls.data.MNISTDataModule`` as its data; its checkpoints were written by
the old ``imgcls.checkpoint``. Each test works on a copy, so the fixture never changes.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import FAST, ROOT, run_imgcls

SAVED = ROOT / "tests" / "fixtures" / "saved_run_a2a409c" / "mnist-mlp-10" / "version_0"
# What that run's metrics.csv recorded: validation accuracy after its one epoch.
SAVED_VAL_ACC = 0.25390625

pytestmark = pytest.mark.real_data


@pytest.fixture()
def saved_run(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "mnist-mlp-10" / "version_0"
    shutil.copytree(SAVED, run)
    return run


def _rows(metrics_csv: Path) -> list[dict[str, str]]:
    with metrics_csv.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _last_row(metrics_csv: Path, key: str) -> float:
    return float([r for r in _rows(metrics_csv) if r.get(key)][-1][key])


def test_the_fixture_names_the_old_homes() -> None:
    """The fixture is what it claims: saved with the names that the move made old."""
    config = (SAVED / "config.yaml").read_text()
    assert "class_path: imgcls.loggers.RunCSVLogger" in config
    assert "class_path: imgcls.data.MNISTDataModule" in config
    assert _last_row(SAVED / "metrics.csv", "val/acc") == SAVED_VAL_ACC


def test_an_old_run_tests_and_exports_to_the_same_accuracy(
    saved_run: Path, real_data_root: Path
) -> None:
    data = ["--data.init_args.data_dir", str(real_data_root)]
    run_imgcls(
        "test", "--ckpt_path", "runs/mnist-mlp-10/version_0", *FAST, *data, cwd=saved_run.parents[2]
    )
    test_acc = _last_row(saved_run / "test" / "version_0" / "metrics.csv", "test/acc")
    # one epoch on 512 images: well above chance (0.1), far below a trained MLP
    assert 0.2 < test_acc < 0.5
    out = saved_run.parents[2] / "export"
    proc = run_imgcls(
        "export",
        "--ckpt",
        str(saved_run / "checkpoints" / "best.ckpt"),
        "--out",
        str(out),
        "--data_dir",
        str(real_data_root),
        "--json",
        cwd=saved_run.parents[2],
    )
    parity = json.loads(proc.stdout)
    assert parity["n_images"] == 10_000 and parity["top1_agreement"] == 1.0
    # the same weights, read by the new checkpoint IO and by ONNX: the same answers
    assert parity["onnx_accuracy"] == pytest.approx(test_acc, abs=1e-6)
    assert (out / "model.onnx").is_file()


def test_an_old_run_resumes_in_place_from_its_own_config(
    saved_run: Path, real_data_root: Path
) -> None:
    """``-c <run>/config.yaml`` loads the old class paths; ``--ckpt_path <run>`` resumes it."""
    run_imgcls(
        "fit",
        "-c",
        str(saved_run / "config.yaml"),
        "--ckpt_path",
        str(saved_run),
        "--trainer.max_epochs",
        "2",
        "--data.init_args.data_dir",
        str(real_data_root),
        *FAST,
        cwd=saved_run.parents[2],
    )
    rows = _rows(saved_run / "metrics.csv")
    epochs = sorted({int(r["epoch"]) for r in rows if r.get("val/acc")})
    assert epochs == [0, 1]  # appended to, not restarted
    assert float(next(r for r in rows if r.get("val/acc"))["val/acc"]) == SAVED_VAL_ACC
    assert (saved_run / "config.resume-1.yaml").is_file()
    import torch

    last = torch.load(saved_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1
    assert sorted(p.name for p in saved_run.parent.iterdir()) == ["version_0"]
