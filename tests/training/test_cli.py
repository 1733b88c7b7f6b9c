"""The ``imgcls`` entry point: one handler for user errors, where runs go, Lightning's own
switches."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import imgcls.commands.export
from imgcls.__main__ import main
from imgcls.errors import ImgclsError, RunNotFoundError
from tests.helpers import FAST, run_imgcls

ONE_LINE = re.compile(r"imgcls: error: [^\n]+\n")


# ----------------------------------------------------------------------------- the one handler
@pytest.mark.parametrize(
    "argv",
    [
        ["export", "--ckpt", "runs/no-such-experiment"],
        ["export", "--run_dir", "runs/no-such-experiment", "--which", "last"],
        ["summary", "--ckpt", "runs/no-such-experiment/version_0"],
        ["visualize", "--ckpt", "nothing.ckpt"],
        ["evaluate", "shift", "--ckpt", "runs/no-such-experiment"],
        ["report", "--ckpt", "convnet=runs/no-such-experiment"],
        ["infer", "--model", "none.onnx", "x.png"],
        ["evaluate-onnx", "--model", "none.onnx"],
        ["data", "verify", "--dataset", "mnist", "--data_dir", "empty-root"],
        ["summary", "--net", "alexnet"],
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMGCLS_DEBUG", raising=False)
    monkeypatch.setenv("IMGCLS_DATA", str(tmp_path / "data"))
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert ONE_LINE.fullmatch(captured.err), captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_missing_run_gives_the_same_message_in_every_command(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    spec = "runs/mnist-convnet"
    messages = []
    for argv in (
        ["export", "--ckpt", spec],
        ["summary", "--ckpt", spec],
        ["visualize", "--ckpt", spec],
    ):
        assert main(argv) == 2
        messages.append(capsys.readouterr().err)
    assert len(set(messages)) == 1 and messages[0].startswith(
        f"imgcls: error: {spec}: no checkpoint"
    )


def test_debug_shows_the_traceback(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMGCLS_DEBUG", raising=False)
    with pytest.raises(RunNotFoundError):
        main(["--debug", "export", "--ckpt", "runs/x"])
    with pytest.raises(RunNotFoundError):
        main(["export", "--ckpt", "runs/x", "--debug"])
    monkeypatch.setenv("IMGCLS_DEBUG", "1")
    with pytest.raises(RunNotFoundError):
        main(["export", "--ckpt", "runs/x"])


@pytest.mark.parametrize("bug", [ValueError, TypeError, KeyError])
def test_a_bug_is_not_dressed_up_as_a_user_error(bug, monkeypatch) -> None:
    def broken(args):
        raise bug("an internal mistake")

    monkeypatch.setattr(imgcls.commands.export, "run", broken)
    with pytest.raises(bug, match="an internal mistake"):
        main(["export", "--ckpt", "x.ckpt"])


def test_a_bug_keeps_its_traceback_in_a_subprocess(tmp_path) -> None:
    """Exit status 1 and the traceback: what Python does for an uncaught exception."""
    script = (
        "import sys, imgcls.commands.export as e\n"
        "def broken(args): raise KeyError('internal')\n"
        "e.run = broken\n"
        "from imgcls.__main__ import main\n"
        "sys.exit(main(['export', '--ckpt', 'x.ckpt']))\n"
    )
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "KeyError" in proc.stderr


def test_every_user_error_class_shares_the_base() -> None:
    import imgcls.errors as errors

    classes = [getattr(errors, n) for n in errors.__all__]
    assert all(issubclass(c, ImgclsError) for c in classes)
    from imgcls.data.provision import DataError
    from imgcls.errors import (
        ExportError,
        GateError,
        ImageFileError,
        InputError,
        ModelLoadError,
        ProviderError,
    )
    from imgcls.insight import InsightError
    from imgcls.insight.probe import NoConvLayersError
    from imgcls.training.checkpoint_io import CheckpointError
    from imgcls.training.lightning_module import NonFiniteLossError

    for c in (
        CheckpointError,
        DataError,
        ExportError,
        GateError,
        InsightError,
        NoConvLayersError,
        NonFiniteLossError,
        ImageFileError,
        InputError,
        ModelLoadError,
        ProviderError,
    ):
        assert issubclass(c, ImgclsError), c


def test_errors_module_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, imgcls.errors, imgcls.runs; "
        "print(sorted(m for m in ('torch', 'lightning', 'numpy', 'onnxruntime') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- training switches
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--data.val_size", "100000", "val_size must be between 0 and 599 images, got 100000"),
        ("--model.net", "alexnet", "unknown net 'alexnet'; valid names: "),
    ],
)
def test_bad_training_option_is_a_one_line_error(option, value, message, tiny_data, tmp_path):
    proc = run_imgcls(
        "fit", option, value, "--data.data_dir", str(tiny_data), cwd=tmp_path, check=False
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"imgcls: error: {message}" in proc.stderr


def test_no_run_to_test_is_a_one_line_error(tiny_data, tmp_path) -> None:
    proc = run_imgcls("test", "--ckpt_path", "best", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        f"imgcls: error: best: no checkpoint found (looked for {Path('runs') / 'mnist-lenet5'}"
        in proc.stderr
    )


def test_default_root_dir_moves_the_whole_run(tiny_data, tmp_path) -> None:
    elsewhere = tmp_path / "elsewhere"
    args = [
        *FAST,
        "--trainer.max_epochs",
        "1",
        "--data.data_dir",
        str(tiny_data),
        "--data.val_size",
        "100",
    ]
    run_imgcls("fit", *args, "--trainer.default_root_dir", str(elsewhere), cwd=tmp_path)
    run = elsewhere / "mnist-lenet5" / "version_0"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()
    assert not (tmp_path / "runs").exists()
    # and `best` is looked up there too
    run_imgcls(
        "test",
        *FAST,
        "--ckpt_path",
        "best",
        "--data.data_dir",
        str(tiny_data),
        "--data.val_size",
        "100",
        "--trainer.default_root_dir",
        str(elsewhere),
        cwd=tmp_path,
    )
    assert (run / "test" / "version_0" / "metrics.csv").is_file()
    assert not (tmp_path / "runs").exists()


def test_enable_checkpointing_false_trains_without_checkpoints(tiny_data, tmp_path) -> None:
    proc = run_imgcls(
        "fit",
        *FAST,
        "--trainer.max_epochs",
        "1",
        "--trainer.enable_checkpointing=false",
        "--data.data_dir",
        str(tiny_data),
        "--data.val_size",
        "100",
        cwd=tmp_path,
    )
    run = tmp_path / "runs" / "mnist-lenet5" / "version_0"
    assert (run / "metrics.csv").is_file() and not (run / "checkpoints").exists()
    assert "best checkpoint" not in proc.stdout


def test_a_full_disk_in_any_atomic_write_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    import errno
    import os

    from imgcls.errors import DiskFullError
    from imgcls.utils import atomic_write_text

    target = tmp_path / "table.md"
    atomic_write_text(target, "before")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError) as e:
        atomic_write_text(target, "after")
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)
    assert target.read_text() == "before" and [p.name for p in tmp_path.iterdir()] == ["table.md"]
    # a command that writes through it: one line, exit 2
    out = tmp_path / "summary"
    assert main(["summary", "--net", "lenet5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert ONE_LINE.fullmatch(err) and "the disk is full; it was not written" in err
