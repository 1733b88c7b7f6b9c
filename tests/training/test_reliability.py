"""Reliability: interrupted runs, damaged files, determinism, failing ranks, odd paths.

Each test asserts the outcome a user relies on, not merely that nothing crashed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from imgcls.data import MNISTDataModule
from imgcls.errors import ConfigError
from imgcls.training.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointError,
    load_checkpoint,
    load_classifier,
)
from imgcls.training.lightning_module import ImageClassifier
from tests.helpers import CONFIGS_DIR as CONFIGS
from tests.helpers import FAST, run_imgcls


def _fit(
    tmp_path: Path, data: Path, epochs: int, ckpt_path: str | None = None, **trainer_kw
) -> tuple[L.Trainer, ImageClassifier]:
    from imgcls.training.callbacks import RngState, RunCheckpoint

    L.seed_everything(7, verbose=False)
    model = ImageClassifier(
        net="convnet", net_args={"channels": [4, 8], "hidden": 16}
    )  # has dropout: uses the RNG
    dm = MNISTDataModule(
        data_dir=str(data), val_size=100, batch_size=64, shift_augment=2
    )  # augmentation: RNG too
    ckpt = RunCheckpoint(
        dirpath=tmp_path / "ckpt",
        monitor="val/acc",
        mode="max",
        filename="best",
        save_last=True,
        enable_version_counter=False,
    )
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ckpt, RngState()],  # what every `imgcls fit` has
        plugins=[AtomicCheckpointIO()],
        **trainer_kw,
    )
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return trainer, model


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# 1 ---------------------------------------------------------------------------------------------
def test_resume_parity_is_bit_identical(tiny_data, tmp_path):
    straight, m1 = _fit(tmp_path / "a", tiny_data, epochs=3)
    _fit(tmp_path / "b", tiny_data, epochs=1)
    resumed, m2 = _fit(
        tmp_path / "b", tiny_data, epochs=3, ckpt_path=str(tmp_path / "b" / "ckpt" / "last.ckpt")
    )
    assert resumed.current_epoch == straight.current_epoch == 3
    assert _same_weights(m1.state_dict(), m2.state_dict()), (
        "resumed weights differ from the uninterrupted run"
    )
    for key in ("val/acc", "val/loss", "train/loss_epoch", "train/acc"):
        assert float(straight.callback_metrics[key]) == float(resumed.callback_metrics[key])


def test_last_ckpt_is_the_last_epoch_even_without_a_new_best(tiny_data, tmp_path):
    """Lightning 2.6 alone leaves last.ckpt at the last *best* epoch; a resume would repeat
    epochs."""
    from functools import partial

    from imgcls.training.callbacks import RunCheckpoint

    ckpt = RunCheckpoint(
        dirpath=tmp_path,
        monitor="val/acc",
        mode="max",
        filename="best",
        save_last=True,
        enable_version_counter=False,
    )
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ckpt],
    )
    frozen = ImageClassifier(
        net="lenet5_small", optimizer=partial(torch.optim.SGD, lr=0.0)
    )  # val/acc never improves
    trainer.fit(frozen, MNISTDataModule(data_dir=str(tiny_data), val_size=100, batch_size=100))
    assert load_checkpoint(tmp_path / "best.ckpt")["epoch"] == 0
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == 2


# 7 ---------------------------------------------------------------------------------------------
def test_two_seeded_deterministic_runs_are_identical(tiny_data, tmp_path):
    t1, m1 = _fit(tmp_path / "a", tiny_data, epochs=2, deterministic=True)
    t2, m2 = _fit(tmp_path / "b", tiny_data, epochs=2, deterministic=True)
    assert _same_weights(m1.state_dict(), m2.state_dict())
    assert {k: float(v) for k, v in t1.callback_metrics.items()} == {
        k: float(v) for k, v in t2.callback_metrics.items()
    }


# 2 ---------------------------------------------------------------------------------------------
@pytest.mark.real_data
def test_sigkill_mid_epoch_then_resume_last(real_data_root, tmp_path):
    args = [
        "fit",
        "--config",
        str(CONFIGS / "model/lenet5.yaml"),
        *FAST,
        "--trainer.max_epochs",
        "3",
        "--data.init_args.data_dir",
        str(real_data_root),
        "--data.init_args.train_subset",
        "20000",
        "--data.init_args.val_size",
        "500",
        "--data.init_args.batch_size",
        "32",
    ]  # 625 steps an epoch
    run = tmp_path / "runs" / "mnist-lenet5" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgcls", *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 240
        while not last.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert last.exists(), "epoch 0 never finished"
        # Inside epoch 1: 0.5 s is < 200 of its 625 steps even on a quiet machine (~2.5 ms a step).
        time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert load_checkpoint(last)["epoch"] == 0  # loadable, and from the finished epoch
    run_imgcls(*args, "--ckpt_path", "last", cwd=tmp_path)
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    val_epochs = [
        r.split(",")[header.index("epoch")]
        for r in rows[1:]
        if r.split(",")[header.index("val/acc")]
    ]
    assert val_epochs == ["0", "1", "2"], "epoch 0 not repeated, 1 and 2 finished once"
    assert load_checkpoint(last)["epoch"] == 2


# 3 ---------------------------------------------------------------------------------------------
def test_failed_checkpoint_write_keeps_previous_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"good": torch.ones(3)}, target)
    before = target.read_bytes()

    def disk_full(obj, f, *a, **k):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="the disk is full; .* previous one there is intact"):
        io.save_checkpoint({"good": torch.zeros(3)}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"], "no temp file left behind"


def test_failed_data_fetch_write_keeps_previous_file(tiny_data, monkeypatch):
    from imgcls.data import provision
    from imgcls.utils import atomic_write_bytes

    raw = provision.raw_dir(tiny_data, "mnist")
    target = raw / "t10k-labels-idx1-ubyte"
    before = target.read_bytes()

    def failing_fsync(fd):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"\x00" * 10)
    assert target.read_bytes() == before
    assert not list(raw.glob(".*.tmp"))


# 4 ---------------------------------------------------------------------------------------------
@pytest.fixture()
def bad_checkpoints(trained_ckpt, tmp_path) -> dict[str, Path]:
    blob = trained_ckpt.read_bytes()
    out = {}
    out["truncated"] = tmp_path / "truncated.ckpt"
    out["truncated"].write_bytes(blob[: len(blob) // 2])
    # Flip a bit inside the weights of the first conv: same size, still a valid zip.
    ckpt = torch.load(trained_ckpt, map_location="cpu", weights_only=True)
    w = ckpt["state_dict"]["net.features.0.weight"]
    raw = w.view(-1).view(torch.int32)
    raw[0] ^= 1 << 20
    out["bitflip"] = tmp_path / "bitflip.ckpt"
    torch.save(ckpt, out["bitflip"])
    out["not_a_checkpoint"] = tmp_path / "notes.ckpt"
    out["not_a_checkpoint"].write_text("these are my notes, not weights\n")
    out["other_torch_file"] = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(2)}, out["other_torch_file"])
    return out


@pytest.mark.real_data
@pytest.mark.parametrize("kind", ["truncated", "bitflip", "not_a_checkpoint", "other_torch_file"])
def test_bad_checkpoint_gives_error_naming_file(bad_checkpoints, kind):
    path = bad_checkpoints[kind]
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_classifier(path)


@pytest.mark.real_data
@pytest.mark.parametrize("command", ["fit", "test"])
def test_bad_checkpoint_in_cli(bad_checkpoints, real_data_root, tmp_path, command):
    for kind in ("truncated", "bitflip", "not_a_checkpoint"):
        path = bad_checkpoints[kind]
        proc = run_imgcls(
            command,
            "--config",
            str(CONFIGS / "model/lenet5.yaml"),
            *FAST,
            "--ckpt_path",
            str(path),
            "--data.init_args.data_dir",
            str(real_data_root),
            cwd=tmp_path,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert str(path) in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "runs").exists(), "nothing started"


# 8 ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.real_data
def test_ddp_rank_failure_ends_the_run(real_data_root, tmp_path):
    script = tmp_path / "fail_rank1.py"
    script.write_text(
        textwrap.dedent(f"""
        import lightning as L
        from imgcls.data import MNISTDataModule
        from imgcls.training.lightning_module import ImageClassifier

        class FailOnRank1(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_rank == 1 and batch_idx == 2:
                    raise RuntimeError("rank 1 fails on purpose")

        trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            callbacks=[FailOnRank1()])
        trainer.fit(ImageClassifier(), MNISTDataModule(data_dir={str(real_data_root)!r},
                                                       train_subset=2000, val_size=500))
    """)
    )
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode != 0
    assert "rank 1 fails on purpose" in proc.stderr
    assert time.time() - t0 < 170, "the surviving rank hung"


# 12 --------------------------------------------------------------------------------------------
def test_unwritable_output_dir_fails_before_training(tiny_data, tmp_path, monkeypatch):
    from imgcls.training.cli import ImgclsCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["imgcls"])
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if mode & os.W_OK else real_access(p, mode)
    )
    with pytest.raises(ConfigError, match="cannot write into .*: .* is not writable"):
        ImgclsCLI(
            args=[
                "fit",
                "--config",
                str(CONFIGS / "model/lenet5.yaml"),
                "--data.init_args.data_dir",
                str(tiny_data),
                "--data.init_args.val_size",
                "100",
            ]
        )
    assert not (tmp_path / "runs").exists()


@pytest.mark.real_data
def test_paths_with_spaces_and_non_ascii(real_data_root, tmp_path):
    work = tmp_path / "my runs ü 数据"
    data = work / "dätä dir"
    (data / "MNIST").mkdir(parents=True)
    (data / "MNIST" / "raw").symlink_to(real_data_root / "MNIST" / "raw")
    run_imgcls(
        "fit",
        "--config",
        str(CONFIGS / "model/lenet5_small.yaml"),
        *FAST,
        "--trainer.max_epochs",
        "1",
        "--data.init_args.data_dir",
        str(data),
        "--data.init_args.train_subset",
        "500",
        "--data.init_args.val_size",
        "200",
        cwd=work,
    )
    best = work / "runs" / "mnist-lenet5_small" / "version_0" / "checkpoints" / "best.ckpt"
    assert load_classifier(best).hparams.net == "lenet5_small"
