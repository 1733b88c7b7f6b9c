"""Scale-out, tested on the CPU: 2-process DDP on gloo (Lightning's launcher and torchrun)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CONFIGS_DIR as CONFIGS
from tests.helpers import free_port, run_imgcls

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

DDP = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def _last(path: Path, key: str) -> float:
    return float([r[key] for r in _rows(path) if r.get(key)][-1])


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_ddp_fit_then_test_counts_every_image_once(real_data_root, tmp_path):
    common = [
        "--config",
        str(CONFIGS / "model/lenet5.yaml"),
        "--config",
        str(CONFIGS / "trainer/ddp_cpu.yaml"),
        *DDP,
        "--data.init_args.data_dir",
        str(real_data_root),
    ]
    run_imgcls(
        "fit",
        *common,
        "--trainer.max_epochs",
        "1",
        "--data.init_args.train_subset",
        "2000",
        "--data.init_args.val_size",
        "1001",
        "--snapshots.epochs",
        "[0, -1]",
        cwd=tmp_path,
        timeout=300,
    )
    run = tmp_path / "runs" / "mnist-lenet5" / "version_0"
    # Only rank 0 wrote: one run directory, one best and one last checkpoint, one config.
    assert sorted(p.name for p in (tmp_path / "runs" / "mnist-lenet5").iterdir()) == ["version_0"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert [f for f in _files(run) if f.startswith("config")] == ["config.yaml"]
    # the snapshots too, and no rank waited on a save the others skipped
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["epoch=0.ckpt", "epoch=1.ckpt"]
    # test under DDP: 10,000 images over 2 ranks, every image once; metrics synced across ranks
    run_imgcls(
        "test",
        *common,
        "--ckpt_path",
        str(run / "checkpoints" / "best.ckpt"),
        cwd=tmp_path,
        timeout=300,
    )
    ddp_metrics = run / "test" / "version_0" / "metrics.csv"
    assert _last(ddp_metrics, "test/n_images") == 10000
    # the same checkpoint on one process gives the same accuracy: nothing counted twice or lost
    run_imgcls(
        "test",
        "--config",
        str(CONFIGS / "model/lenet5.yaml"),
        *DDP,
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--ckpt_path",
        str(run / "checkpoints" / "best.ckpt"),
        "--data.init_args.data_dir",
        str(real_data_root),
        cwd=tmp_path,
        timeout=300,
    )
    single = run / "test" / "version_1" / "metrics.csv"
    assert _last(ddp_metrics, "test/acc") == pytest.approx(_last(single, "test/acc"), abs=1e-6)
    assert _last(ddp_metrics, "test/f1") == pytest.approx(_last(single, "test/f1"), abs=1e-6)
    # the odd-sized validation set (1,001 images) was not padded either: val/acc is a multiple
    # of 1/1001
    val_acc = _last(run / "metrics.csv", "val/acc")
    assert abs(val_acc * 1001 - round(val_acc * 1001)) < 1e-3


def test_torchrun_launch(real_data_root, tmp_path):
    """The path multi-node launches take: torchrun starts the processes, Lightning joins them."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),  # the suite runs several files at once: no fixed port
        "-m",
        "imgcls",
        "fit",
        "--config",
        str(CONFIGS / "model/lenet5.yaml"),
        "--config",
        str(CONFIGS / "trainer/ddp_cpu.yaml"),
        *DDP,
        "--trainer.max_epochs",
        "1",
        "--data.init_args.data_dir",
        str(real_data_root),
        "--data.init_args.train_subset",
        "1000",
        "--data.init_args.val_size",
        "500",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = tmp_path / "runs" / "mnist-lenet5"
    assert sorted(p.name for p in run.iterdir()) == ["version_0"]
    assert sorted(p.name for p in (run / "version_0" / "checkpoints").iterdir()) == [
        "best.ckpt",
        "last.ckpt",
    ]
    rows = _rows(run / "version_0" / "metrics.csv")
    # 1,000 images, batch 128 per rank on 2 ranks: 4 optimizer steps in the epoch (not 8)
    assert {r["step"] for r in rows if r.get("val/acc")} == {"3"}
