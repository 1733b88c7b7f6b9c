"""Runs saved by an earlier imgcls keep working.

Before the training code moved into ``imgcls.training``, a run's ``config.yaml`` named
``imgcls.loggers.RunCSVLogger`` as a ``class_path``; checkpoints hold no class paths, so that
name is what an old run carries. The fixture trains a small real run (an MLP with 10 hidden
units, one epoch on 512 MNIST images) and writes its config back with the old name, as the
earlier version saved it: no checkpoint file is kept in the repository.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.helpers import FAST, ROOT, run_imgcls

NEW_HOME = "class_path: imgcls.training.loggers.RunCSVLogger"
OLD_HOME = "class_path: imgcls.loggers.RunCSVLogger"

pytestmark = pytest.mark.real_data


@pytest.fixture()
def saved_run(tmp_path: Path, real_data_root: Path) -> Path:
    run_imgcls(
        "fit",
        "-c",
        str(ROOT / "configs/model/mlp10.yaml"),
        *FAST,
        "--data.init_args.data_dir",
        str(real_data_root),
        "--data.init_args.train_subset",
        "512",
        "--data.init_args.val_size",
        "256",
        "--trainer.max_epochs",
        "1",
        "--seed_everything",
        "7",
        cwd=tmp_path,
    )
    run = tmp_path / "runs" / "mnist-mlp-10" / "version_0"
    config = run / "config.yaml"
    text = config.read_text()
    assert NEW_HOME in text
    config.write_text(text.replace(NEW_HOME, OLD_HOME))
    return run


def _rows(metrics_csv: Path) -> list[dict[str, str]]:
    with metrics_csv.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _last_row(metrics_csv: Path, key: str) -> float:
    return float([r for r in _rows(metrics_csv) if r.get(key)][-1][key])


def test_the_fixture_names_the_old_homes(saved_run: Path) -> None:
    """The fixture is what it claims: saved with the names that the move made old."""
    config = (saved_run / "config.yaml").read_text()
    assert "class_path: imgcls.loggers.RunCSVLogger" in config
    assert "class_path: imgcls.data.MNISTDataModule" in config
    assert 0.1 < _last_row(saved_run / "metrics.csv", "val/acc") < 0.6


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
    saved_val_acc = _last_row(saved_run / "metrics.csv", "val/acc")
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
    assert float(next(r for r in rows if r.get("val/acc"))["val/acc"]) == saved_val_acc
    assert (saved_run / "config.resume-1.yaml").is_file()
    import torch

    last = torch.load(saved_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1
    assert sorted(p.name for p in saved_run.parent.iterdir()) == ["version_0"]
