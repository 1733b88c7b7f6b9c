"""Reliability of ``imgcls export`` and the insight commands' output folders.

An output folder that cannot be written is refused before any data is loaded; a full disk
during an export leaves the previous export as it was; staged folders that a killed export
left behind are removed by the next export into the same parent.

The exports here start from an untrained MLP checkpoint and the small generated data set
(``tiny_data``): parity between PyTorch and ONNX does not need a trained model.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import imgcls.data
import imgcls.insight.testset
import imgcls.staging as staging
from imgcls.__main__ import main
from imgcls.errors import ConfigError
from imgcls.export import export_checkpoint
from imgcls.staging import STALE_AFTER_S
from tests.helpers.training import make_checkpoint


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
    if command == "export":
        assert f"cannot write into {read_only}: it is not writable" in err
    else:
        assert f"cannot write into {out}: {read_only} is not writable" in err
    assert err.endswith("pass --out with a writable folder")
    assert list(read_only.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_chmod_read_only_folder_is_refused(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert main(["export", "--ckpt", str(ckpt), "--out", str(folder / "model")]) == 2
        assert f"cannot write into {folder}: it is not writable" in one_error_line(capsys)
    finally:
        folder.chmod(0o755)


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
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "metadata.json",
        "model.onnx",
        "parity.json",
    ]


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

    real_write = staging.write_durable
    calls: list[str] = []

    def write(path: Path, data: bytes) -> None:
        calls.append(path.name)
        if len(calls) > fail_at:
            with path.open("wb") as fh:  # part of the file lands, as on a real full disk
                fh.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, data)

    monkeypatch.setattr(staging, "write_durable", write)
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

    monkeypatch.setattr(staging, "write_durable", full)
    out = tmp_path / "export" / "run"
    assert main(export_args(ckpt, out, tiny_data)) == 2
    assert f"{out} was not created" in one_error_line(capsys)
    assert list(out.parent.iterdir()) == []


def test_out_that_is_a_symlink_stays_a_link_to_the_new_export(
    ckpt: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    (work / "exports" / "mlp").mkdir(parents=True)
    (work / "exports" / "mlp" / "model.onnx").write_bytes(b"the previous export")
    link = work / "latest"
    link.symlink_to(Path("exports") / "mlp")
    assert main(export_args(ckpt, link, tiny_data)) == 0
    assert link.is_symlink() and os.readlink(link) == str(Path("exports") / "mlp")
    assert (work / "exports" / "mlp" / "model.onnx").read_bytes().startswith(b"\x08")  # ONNX
    assert sorted(p.name for p in work.iterdir()) == ["exports", "latest"]
    assert [p.name for p in (work / "exports").iterdir()] == ["mlp"]  # nothing staged


def test_out_that_is_the_current_folder_is_one_line(
    ckpt: Path,
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(export_args(ckpt, Path("."), tiny_data)) == 2
    assert "--out .: the current folder, or one that holds it" in one_error_line(capsys)
    assert list(here.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpts",
        "data",
        "specs.json",
        "work",
    ]


# ----------------------------------------------------------------------------- stale staged folders
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def staged_folder(parent: Path, name: str, age_s: float = 0.0, pid: int | None = None) -> Path:
    """A folder ``name`` with half a model in it; with ``pid``, a staged folder as that process
    made it (staging's marker, ``age_s`` old), else someone else's (no marker)."""
    if pid is None:
        folder = parent / name
        folder.mkdir()
    else:
        folder = staging.make_staged(parent, name)
        staging.Marker(pid, staging.process_start(pid), time.time() - age_s).write(folder)
    (folder / "model.onnx").write_bytes(b"half a model")
    if age_s:
        then = time.time() - age_s
        os.utime(folder, (then, then))
    return folder


def test_staged_folders_of_killed_exports_are_removed(
    ckpt: Path,
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parent = tmp_path / "export"
    parent.mkdir()
    pid, me = dead_pid(), os.getpid()
    stale = [
        staged_folder(parent, f".run.{pid}.", pid=pid),  # its process is gone
        staged_folder(parent, f".other.{pid}.", pid=pid),  # another export's, also dead
        staged_folder(parent, f".run.{me}.", STALE_AFTER_S + 60, pid=me),  # too old
    ]
    kept = [
        staged_folder(parent, f".run.{me}.", pid=me),  # a running export's
        staged_folder(parent, ".run.nopid456.tmp", 60),  # no marker, recent
        staged_folder(parent, ".run.nopid123.tmp", STALE_AFTER_S + 60),  # no marker, old
        staged_folder(parent, f".run.{pid}.abcd1234.tmp"),  # a dead pid's name, no marker
        staged_folder(parent, ".notes.tmp", STALE_AFTER_S + 60),  # not a staged folder
        staged_folder(parent, "run.1.abcdefgh.tmp", STALE_AFTER_S + 60),  # no leading dot
        # a user's folders whose names merely look staged ("2024" is no pid of ours)
        staged_folder(parent, ".notes.abcdefgh.tmp", STALE_AFTER_S + 60),
        staged_folder(parent, ".photos.2024.backup_1.tmp"),
    ]
    staged_names: list[str] = []
    real_swap = staging.swap_into_place

    def swap(staged: Path, out: Path) -> None:
        staged_names.append(staged.name)
        real_swap(staged, out)

    monkeypatch.setattr(staging, "swap_into_place", swap)
    export_checkpoint(ckpt, parent / "run", data_dir=tiny_data, parity_subset=50, log=quiet)

    assert not any(p.exists() for p in stale)
    assert all((p / "model.onnx").read_bytes() == b"half a model" for p in kept)
    assert sorted(p.name for p in parent.iterdir()) == sorted(["run", *(p.name for p in kept)])
    # The new staged folder carried this process's pid, so a kill would be cleaned up too.
    assert len(staged_names) == 1
    assert re.fullmatch(rf"\.run\.{os.getpid()}\.[a-z0-9_]{{8}}\.tmp", staged_names[0])
    assert staging.STAGED.match(staged_names[0])["pid"] == str(os.getpid())  # type: ignore[index]


def test_killed_export_is_cleaned_up_by_the_next(
    ckpt: Path, tiny_data: Path, tmp_path: Path
) -> None:
    """A real export process killed while its staged folder exists; the next export removes it."""
    parent = tmp_path / "export"
    script = f"""
import os, signal
import imgcls.staging as s
from imgcls.export import export_checkpoint
real = s.write_durable
def write(path, data):
    real(path, data)
    os.kill(os.getpid(), signal.SIGKILL)  # dies with the staged folder half written
s.write_durable = write
export_checkpoint({str(ckpt)!r}, {str(parent / "run")!r}, data_dir={str(tiny_data)!r},
                    parity_subset=20, log=lambda m: None)
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == -9, stderr[-2000:]
    left = [p.name for p in parent.iterdir()]
    assert len(left) == 1 and re.fullmatch(rf"\.run\.{proc.pid}\.[a-z0-9_]{{8}}\.tmp", left[0])
    assert sorted(p.name for p in (parent / left[0]).iterdir()) == [staging.MARKER, "model.onnx"]

    export_checkpoint(ckpt, parent / "run", data_dir=tiny_data, parity_subset=20, log=quiet)
    assert sorted(p.name for p in parent.iterdir()) == ["run"]
