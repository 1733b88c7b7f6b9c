"""Reliability of ``imgcls export`` and the insight commands' output folders.

An output folder that cannot be written is refused before any data is loaded; a full disk
during an export leaves the previous export as it was.

The exports here start from an untrained MLP checkpoint and the small generated data set
(``tiny_data``): parity between PyTorch and ONNX does not need a trained model.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

import imgcls.data
import imgcls.export as export_mod
import imgcls.insight.testset
from imgcls.__main__ import main
from imgcls.errors import ConfigError
from imgcls.export import export_checkpoint

from .test_insight_shift import make_checkpoint


def quiet(_: str) -> None:
    pass


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "ckpts" / "mlp.ckpt", net_args={"hidden": [16]})


def export_args(ckpt: Path, out: Path, data: Path) -> list[str]:
    return [
        "export",
        "--ckpt",
        str(ckpt),
        "--out",
        str(out),
        "--data_dir",
        str(data),
        "--parity_subset",
        "50",
    ]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The error line, last on stderr, after nothing but the command's own progress lines."""
    lines = capsys.readouterr().err.splitlines()
    assert lines and lines[-1].startswith("imgcls: error: "), lines
    assert all(line.startswith("[imgcls export] ") for line in lines[:-1]), lines
    return lines[-1]


# ----------------------------------------------------------------------------- read-only folders
@pytest.fixture()
def read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that ``os.access`` reports read-only (chmod alone does not stop root), and no
    data loading allowed: the check must come first."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access

    def access(path: object, mode: int, **kw: object) -> bool:
        if mode & os.W_OK and Path(str(path)).resolve() == folder.resolve():
            return False
        return real_access(path, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)

    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("data was loaded before the output folder was checked")

    monkeypatch.setattr(imgcls.data, "get_datamodule", no_data)
    monkeypatch.setattr(imgcls.insight.testset, "load_test_set", no_data)
    return folder


def commands(ckpt: Path, out: Path) -> dict[str, list[str]]:
    return {
        "export": ["export", "--ckpt", str(ckpt), "--out", str(out)],
        "evaluate shift": ["evaluate", "shift", "--ckpt", str(ckpt), "--out", str(out)],
        "visualize": ["visualize", "--ckpt", str(ckpt), "--out", str(out)],
        "visualize kernels": ["visualize", "kernels", "--out", str(out)],
        "sweep subset": ["sweep", "subset", "--sizes", "100", "--seeds", "1", "--out", str(out)],
        "report": ["report", "--quick", "--out", str(out)],
        "summary": ["summary", "--net", "mlp", "--out", str(out)],
    }


COMMANDS = list(commands(Path("c"), Path("o")))


@pytest.mark.parametrize("command", COMMANDS)
def test_read_only_out_fails_before_any_work(
    command: str, ckpt: Path, read_only: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = read_only / "new" / "out"
    if command == "export":
        out = read_only / "model"  # the export is staged beside --out, in read_only itself
    assert main(commands(ckpt, out)[command]) == 2
    err = one_error_line(capsys)
    assert f"cannot write into {out if command != 'export' else read_only}" in err
    assert f"{read_only} is not writable" in err or "it is not writable" in err
    assert "pass --out with a writable folder" in err
    assert list(read_only.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_out_under_a_file_fails_before_any_work(
    command: str, ckpt: Path, tmp_path: Path, read_only: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    out = a_file / "out"
    assert main(commands(ckpt, out)[command]) == 2
    err = one_error_line(capsys)
    assert f"{a_file} is a file, not a folder; pass --out with another folder" in err
    assert a_file.read_text() == "keep me"


def test_report_read_only_runs_dir_names_the_option(
    tmp_path: Path, read_only: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "--quick", "--out", str(tmp_path / "r"), "--runs_dir", str(read_only)]
    assert main(args) == 2
    assert "pass --runs_dir with a writable folder" in one_error_line(capsys)


def test_export_api_checks_the_folder_before_loading_data(ckpt: Path, read_only: Path) -> None:
    with pytest.raises(ConfigError, match=f"cannot write into {re.escape(str(read_only))}"):
        export_checkpoint(ckpt, read_only / "model", log=quiet)


def test_writable_and_missing_out_is_accepted(
    ckpt: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "not" / "yet" / "there"
    assert main(export_args(ckpt, out, tiny_data)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "model.onnx", "parity.json"]


# ----------------------------------------------------------------------------- full disk
@pytest.mark.parametrize("fail_at", [0, 2])
def test_full_disk_keeps_the_previous_export(
    fail_at: int,
    ckpt: Path,
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "export" / "run"
    assert main(export_args(ckpt, out, tiny_data)) == 0
    before = snapshot(out)
    capsys.readouterr()

    real_write = export_mod._write_durable
    calls: list[str] = []

    def write(path: Path, data: bytes) -> None:
        calls.append(path.name)
        if len(calls) > fail_at:
            with path.open("wb") as fh:  # part of the file lands, as on a real full disk
                fh.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, data)

    monkeypatch.setattr(export_mod, "_write_durable", write)
    assert main(export_args(ckpt, out, tiny_data)) == 2
    err = one_error_line(capsys)
    assert "is full" in err and f"the previous export in {out} is untouched" in err
    assert "Free some space" in err
    assert len(calls) == fail_at + 1
    assert snapshot(out) == before
    assert [p.name for p in out.parent.iterdir()] == ["run"]  # no staged folder left


def test_full_disk_on_a_first_export_creates_nothing(
    ckpt: Path,
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(export_mod, "_write_durable", full)
    out = tmp_path / "export" / "run"
    assert main(export_args(ckpt, out, tiny_data)) == 2
    assert f"{out} was not created" in one_error_line(capsys)
    assert list(out.parent.iterdir()) == []
