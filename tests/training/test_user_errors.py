"""``imgcls fit`` given a user's mistake: one ``imgcls: error:`` line naming the option, exit
status 2, no traceback, and nothing already saved lost.

The runs are in-process (``imgcls.__main__.main``) on the small generated data set
(``tiny_data``), so that a full disk can be simulated where the run writes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imgcls.__main__ import main
from tests.helpers import FAST
from tests.helpers.training import plain_argv as _plain_argv  # noqa: F401  (autouse)


@pytest.fixture(autouse=True)
def no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMGCLS_DEBUG", raising=False)


def fit_args(data: Path, root: Path, *extra: str, epochs: int = 1) -> list[str]:
    return [
        "fit",
        *FAST,
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.default_root_dir",
        str(root),
        "--data.init_args.data_dir",
        str(data),
        "--data.init_args.val_size",
        "100",
        *extra,
    ]


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one ``imgcls: error:`` line (Lightning's own info lines may come before it)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("imgcls: error: ")]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n"), err
    return errors[0]


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------- data options
def test_negative_num_workers_is_one_line(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    assert main(fit_args(tiny_data, runs, "--data.init_args.num_workers", "-1")) == 2
    assert error_line(capsys) == (
        "imgcls: error: num_workers must be >= 0, got -1; 0 loads batches in the main process "
        "(fastest for these in-memory tensors)"
    )
    assert not runs.exists()


@pytest.mark.parametrize("below", ["", "sub"])
def test_data_dir_naming_a_file_is_one_line(
    below: str, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "mnist.tar"
    a_file.write_bytes(b"not a folder")
    data_dir = a_file / below if below else a_file
    runs = tmp_path / "runs"
    assert main(fit_args(tiny_data, runs, "--data.init_args.data_dir", str(data_dir))) == 2
    where = "it is a file" if not below else f"{a_file} is a file"
    assert error_line(capsys).startswith(
        f"imgcls: error: data_dir {data_dir}: {where}, not a folder; pass the data root"
    )
    assert a_file.read_bytes() == b"not a folder" and not runs.exists()


# ----------------------------------------------------------------------------- full disk
# The run's config file gets half written, then the disk is full. In a subprocess, as a user
# runs it (a run that stops in setup leaves its folder's lock file to the interpreter's exit).
FULL_DISK_ON_CONFIG_SAVE = """
import errno, os, sys
from lightning.pytorch.cli import LightningArgumentParser
from imgcls.__main__ import main

def save(self, cfg, path, *a, **kw):
    with open(path, "w") as fh:
        fh.write("model:\\n  net: le")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

LightningArgumentParser.save = save
sys.exit(main(sys.argv[1:]))
"""


def fit_on_a_full_disk(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "IMGCLS_DEBUG"}
    return subprocess.run(
        [sys.executable, "-c", FULL_DISK_ON_CONFIG_SAVE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def one_error_line(stderr: str) -> str:
    """The one ``imgcls: error:`` line, last (Lightning's own info lines may come before it)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("imgcls: error: ")]
    assert len(errors) == 1 and stderr.endswith(errors[0] + "\n"), stderr
    return errors[0]


def test_full_disk_before_a_new_run_is_one_line_and_leaves_nothing(
    tiny_data: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    proc = fit_on_a_full_disk(fit_args(tiny_data, runs), tmp_path)
    assert proc.returncode == 2, proc.stderr
    run = runs / "mnist-lenet5" / "version_0"
    assert one_error_line(proc.stderr) == (
        f"imgcls: error: the disk holding {run} is full (no space left, or over quota): "
        f"{run / 'config.yaml'} could not be written and training did not start; nothing was "
        "lost. Free some space, or pass --trainer.default_root_dir with a folder on another disk"
    )
    assert snapshot(runs) == {}  # no half config, no empty run folder


def test_full_disk_when_resuming_keeps_the_run_as_it_was(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    assert main(fit_args(tiny_data, runs)) == 0
    run = runs / "mnist-lenet5" / "version_0"
    before = snapshot(runs)
    assert f"{run.relative_to(runs)}/checkpoints/last.ckpt" in before

    proc = fit_on_a_full_disk(fit_args(tiny_data, runs, "--ckpt_path", "last", epochs=2), tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert line.startswith(f"imgcls: error: the disk holding {run} is full")
    assert f"{run / 'config.resume-1.yaml'} could not be written" in line
    assert snapshot(runs) == before  # the checkpoints, config and metrics byte for byte


def test_full_disk_while_writing_the_logs_is_one_line_and_keeps_the_checkpoints(
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import torch
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    runs = tmp_path / "runs"
    last = runs / "mnist-lenet5" / "version_0" / "checkpoints" / "last.ckpt"
    real_save = ExperimentWriter.save

    def save(self: ExperimentWriter) -> None:
        if last.is_file():  # the disk fills up once the first checkpoints are saved
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "metrics.csv")
        real_save(self)

    monkeypatch.setattr(ExperimentWriter, "save", save)
    assert main(fit_args(tiny_data, runs, epochs=2)) == 2
    line = error_line(capsys)
    assert line.startswith(
        "imgcls: error: the disk is full (no space left, or over quota) writing metrics.csv: "
        "the run stopped; checkpoints saved before are intact."
    )
    assert "--trainer.default_root_dir" in line
    # the first epoch's checkpoints, whole: the disk filled up while the second was logged
    for ckpt in (last, last.with_name("best.ckpt")):
        state = torch.load(ckpt, weights_only=False)
        assert state["epoch"] == 0 and state["state_dict"], ckpt
