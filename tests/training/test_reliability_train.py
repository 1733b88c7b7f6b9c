"""Reliability of training and evaluation: no silent wrong result, a message instead of a
traceback, nothing saved lost."""

from __future__ import annotations

import errno
import fcntl
from pathlib import Path

import pytest
import torch

from imgcls.training.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointError,
    load_checkpoint,
    state_digest,
)
from tests.helpers import FAST, run_imgcls

SMALL = ["--data.val_size", "100", "--data.batch_size", "50"]


def _fit(tmp_path: Path, data: Path, *args: str, check: bool = True):
    return run_imgcls(
        "fit", *FAST, *SMALL, "--data.data_dir", str(data), *args, cwd=tmp_path, check=check
    )


def _one_line_error(proc, text: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.rstrip().splitlines()[-1]
    assert last.startswith("imgcls: error: ") and text in last, proc.stderr[-2000:]


@pytest.fixture()
def small_run(tiny_data: Path, tmp_path: Path) -> Path:
    """A 2-epoch LeNet-5 run on the tiny data: 10 steps an epoch (500 images, batch 50)."""
    _fit(tmp_path, tiny_data, "--trainer.max_epochs", "2")
    run = tmp_path / "runs" / "mnist-lenet5" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    return run


def test_nan_weights_are_refused_by_every_command(small_run, tiny_data, tmp_path) -> None:
    ckpt = load_checkpoint(small_run / "checkpoints" / "best.ckpt")
    name = next(iter(ckpt["state_dict"]))
    ckpt["state_dict"][name].view(-1)[0] = float("nan")
    ckpt["imgcls_digest"] = state_digest(ckpt["state_dict"])  # "valid" but NaN
    bad = tmp_path / "nan.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match=f"NaN or inf weights \\({name}"):
        load_checkpoint(bad)
    for command in ("test", "validate", "predict"):
        proc = run_imgcls(
            command,
            "--ckpt_path",
            str(bad),
            "--data.data_dir",
            str(tiny_data),
            *SMALL,
            cwd=tmp_path,
            check=False,
        )
        _one_line_error(proc, f"{bad}: the checkpoint holds NaN or inf weights")
    assert not (tmp_path / "predictions.csv").exists()


def test_evaluating_without_weights_needs_asking(tiny_data, tmp_path) -> None:
    proc = run_imgcls("test", "--data.data_dir", str(tiny_data), *SMALL, cwd=tmp_path, check=False)
    _one_line_error(proc, "`imgcls test` needs trained weights: pass --ckpt_path best")
    assert not (tmp_path / "runs").exists()
    run_imgcls(
        "test",
        *FAST,
        "--ckpt_path",
        "untrained",
        "--data.data_dir",
        str(tiny_data),
        *SMALL,
        cwd=tmp_path,
    )


def test_a_run_that_fails_before_its_first_step_leaves_no_folder(small_run, tiny_data, tmp_path):
    proc = _fit(tmp_path, tiny_data, "--model.optimizer.init_args.lr", "-1", check=False)
    _one_line_error(proc, "the optimizer refuses its arguments: Invalid learning rate: -1.0")
    exp = small_run.parent
    assert sorted(p.name for p in exp.iterdir()) == ["version_0"]
    # and the good run is still the one `export --ckpt runs/<exp>` and `test best` find
    from imgcls.runs import resolve_checkpoint

    assert resolve_checkpoint(exp) == small_run / "checkpoints" / "best.ckpt"


def test_checkpoint_of_another_net_is_refused_at_start(small_run, tiny_data, tmp_path) -> None:
    before = sorted(p.name for p in small_run.iterdir())
    proc = _fit(
        tmp_path, tiny_data, "--model.net", "convnet", "--ckpt_path", str(small_run), check=False
    )
    _one_line_error(proc, "does not fit this config (net: checkpoint 'lenet5' vs config 'convnet')")
    assert sorted(p.name for p in small_run.iterdir()) == before  # no config.resume-1.yaml


def test_resume_with_nothing_left_to_train_says_so(small_run, tiny_data, tmp_path) -> None:
    proc = _fit(
        tmp_path, tiny_data, "--trainer.max_epochs", "2", "--ckpt_path", "last", check=False
    )
    _one_line_error(proc, "has finished 2 epoch(s) and max_epochs is 2: nothing to train")
    assert "best checkpoint" not in proc.stdout


def test_one_cycle_schedule_cannot_be_stretched_on_resume(tiny_data, tmp_path) -> None:
    # batch 4: 125 steps an epoch, so the schedule (250 steps) is above its 100-step floor
    _fit(tmp_path, tiny_data, "--trainer.max_epochs", "2", "--data.batch_size", "4")
    run = tmp_path / "runs" / "mnist-lenet5" / "version_0"
    before = sorted(p.name for p in run.iterdir())
    proc = _fit(
        tmp_path,
        tiny_data,
        "--trainer.max_epochs",
        "3",
        "--data.batch_size",
        "4",
        "--ckpt_path",
        "last",
        check=False,
    )
    _one_line_error(proc, "one-cycle learning-rate schedule ends after 250 steps")
    assert "needs about 375" in proc.stderr
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_run_folder_in_use_is_refused(small_run, tiny_data, tmp_path) -> None:
    with open(small_run / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another fit is training here
        proc = _fit(
            tmp_path, tiny_data, "--trainer.max_epochs", "3", "--ckpt_path", "last", check=False
        )
    _one_line_error(proc, f"{Path('runs/mnist-lenet5/version_0')} is in use")
    assert not (small_run / "config.resume-1.yaml").exists()
    # free again: the resume goes ahead
    _fit(tmp_path, tiny_data, "--trainer.max_epochs", "3", "--ckpt_path", "last")
    assert load_checkpoint(small_run / "checkpoints" / "last.ckpt")["epoch"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_gpu_preset_without_a_gpu(tiny_data, tmp_path) -> None:
    from tests.helpers import CONFIGS_DIR

    proc = run_imgcls(
        "fit",
        "-c",
        str(CONFIGS_DIR / "trainer/gpu.yaml"),
        "--data.data_dir",
        str(tiny_data),
        *SMALL,
        cwd=tmp_path,
        check=False,
    )
    _one_line_error(proc, "the trainer cannot start as configured: ")


def test_runs_being_a_file(tiny_data, tmp_path) -> None:
    (tmp_path / "runs").write_text("notes")
    proc = _fit(tmp_path, tiny_data, check=False)
    _one_line_error(proc, "cannot write into runs: runs is a file, not a folder")
    assert (tmp_path / "runs").read_text() == "notes"


def test_config_file_errors_name_the_file(tmp_path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer: {max_epochs: [\n")
    proc = run_imgcls("fit", "-c", str(broken), cwd=tmp_path, check=False)
    _one_line_error(proc, f"{broken}: not valid YAML at line 2")
    empty_unknown = tmp_path / "unknown.yaml"
    empty_unknown.write_text("trainer:\n  max_epochs: 1\nfoo: {}\n")
    proc = run_imgcls("fit", "-c", str(empty_unknown), cwd=tmp_path, check=False)
    _one_line_error(proc, f"{empty_unknown}: unknown key(s) foo")
    nested = tmp_path / "nested.yaml"
    nested.write_text("model:\n  net_args: {}\n  foo: {}\n")
    proc = run_imgcls("fit", "-c", str(nested), cwd=tmp_path, check=False)
    _one_line_error(proc, f"{nested}: unknown key(s) model.foo")
    assert not (tmp_path / "runs").exists()


def test_full_disk_during_checkpoint_save_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "epoch": 0}, path)
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(
        CheckpointError, match="the disk is full; .* the previous one there is intact"
    ):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "epoch": 1}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left


def test_a_pickle_is_refused_with_torchs_reason(tmp_path) -> None:
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"net": "x"}, "x": Payload()}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(f"{path}: refused: the file holds Python objects besides")
    assert "GLOBAL posix.system" in str(e.value) or "GLOBAL os.system" in str(e.value)


def test_resume_after_an_interrupted_epoch_logs_each_row_once(small_run, tiny_data, tmp_path):
    import csv

    metrics = small_run / "metrics.csv"
    with open(metrics, newline="") as fh:
        rows = list(csv.DictReader(fh))
    fields = list(rows[0])
    # what a Ctrl-C in the middle of epoch 2 leaves behind: a row of that epoch
    ghost = dict.fromkeys(fields, "")
    ghost.update({"epoch": "2", "step": "24", "train/loss_epoch": "9.99"})
    with open(metrics, "a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=fields).writerow(ghost)
    _fit(tmp_path, tiny_data, "--trainer.max_epochs", "3", "--ckpt_path", "last")
    with open(metrics, newline="") as fh:
        after = list(csv.DictReader(fh))
    assert "9.99" not in {r.get("train/loss_epoch") for r in after}
    assert [r["epoch"] for r in after if r.get("val/acc")] == ["0", "1", "2"]


def test_evaluating_into_a_read_only_run_fails_before_the_evaluation(
    small_run, tiny_data, tmp_path, monkeypatch
) -> None:
    import os
    import sys

    from imgcls.errors import ConfigError
    from imgcls.training.cli import ImgclsCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["imgcls"])
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if mode & os.W_OK else real_access(p, mode)
    )
    args = ["--ckpt_path", str(small_run), "--data.data_dir", str(tiny_data), *FAST, *SMALL]
    with pytest.raises(ConfigError, match=f"cannot write into {small_run}.* is not writable"):
        ImgclsCLI(args=["test", *args])
    assert not (small_run / "test").exists()
