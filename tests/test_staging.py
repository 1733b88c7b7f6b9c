"""Clean-up removes only the staged folders imgcls provably made (its marker inside), of a
process that is gone (or a reused pid), or too old; never a folder for its name alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imgcls import staging
from tests.helpers import run_imgcls


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def marked(parent: Path, pid: int, start: str | None, age_s: float = 0.0) -> Path:
    """A staged folder made through the module, its marker saying ``pid`` / ``start``."""
    folder = staging.make_staged(parent, f".run.{pid}.")
    staging.Marker(pid, start, time.time() - age_s).write(folder)
    (folder / "model.onnx").write_bytes(b"half")
    return folder


def test_make_staged_writes_a_marker_of_this_process(tmp_path: Path) -> None:
    before = time.time()
    folder = staging.make_staged(tmp_path, ".run.1.")
    marker = staging.read_marker(folder)
    assert marker is not None and marker.pid == os.getpid()
    assert marker.start == staging.process_start(os.getpid()) and marker.start is not None
    assert before <= marker.created <= time.time()
    assert json.loads((folder / staging.MARKER).read_text())["pid"] == os.getpid()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="no /proc")
def test_process_start_is_field_22_of_proc_stat() -> None:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    assert staging.process_start(os.getpid()) == f"linux:{fields[19]}"
    assert staging.process_start(dead_pid()) is None


def test_a_marked_folder_of_a_dead_pid_is_removed(tmp_path: Path) -> None:
    pid = dead_pid()
    folder = marked(tmp_path, pid, None)
    assert staging.remove_stale(tmp_path) == [folder]
    assert list(tmp_path.iterdir()) == []


def test_a_marked_folder_of_a_live_process_with_its_start_time_stays(tmp_path: Path) -> None:
    folder = marked(tmp_path, os.getpid(), staging.process_start(os.getpid()))
    assert staging.remove_stale(tmp_path) == []
    assert (folder / "model.onnx").read_bytes() == b"half"


def test_a_live_pid_with_another_start_time_is_a_reused_pid_and_removed(tmp_path: Path) -> None:
    now = staging.process_start(os.getpid())
    assert now is not None
    folder = marked(tmp_path, os.getpid(), now + "0")  # made by an earlier process of that pid
    assert staging.remove_stale(tmp_path) == [folder]
    assert not folder.exists()


def test_a_marked_folder_older_than_stale_after_is_removed_even_if_alive(tmp_path: Path) -> None:
    start = staging.process_start(os.getpid())
    old = marked(tmp_path, os.getpid(), start, age_s=staging.STALE_AFTER_S + 60)
    fresh = marked(tmp_path, os.getpid(), start, age_s=60)
    assert staging.remove_stale(tmp_path) == [old]
    assert fresh.exists()


@pytest.mark.parametrize(
    "marker",
    [None, "not json", "[1, 2]", '{"pid": "12", "start": null, "created": 0}', '{"pid": 1}'],
    ids=["none", "junk", "list", "pid-string", "incomplete"],
)
def test_a_folder_without_a_valid_marker_is_never_removed(
    tmp_path: Path, marker: str | None
) -> None:
    pid = dead_pid()
    names = [f".run.{pid}.abcd1234.tmp", ".notes.abcdefgh.tmp", ".photos.2024.backup_1.tmp"]
    for name in names:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "keep").write_text("mine")
        if marker is not None:
            (folder / staging.MARKER).write_text(marker)
        then = time.time() - 10 * staging.STALE_AFTER_S
        os.utime(folder, (then, then))
    assert staging.remove_stale(tmp_path) == []
    assert all((tmp_path / name / "keep").read_text() == "mine" for name in names)


def test_the_placed_folder_has_no_marker_and_the_staged_one_had(tmp_path: Path) -> None:
    out = tmp_path / "model"
    with staging.staged_folder(out) as staged:
        assert staging.read_marker(staged) is not None
        (staged / "model.onnx").write_bytes(b"onnx")
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_symlinked_target_is_replaced_through_the_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "old.onnx").write_bytes(b"old")
    link = tmp_path / "link"
    link.symlink_to("real")
    with staging.staged_folder(link) as staged:
        assert staged.parent == tmp_path
        (staged / "model.onnx").write_bytes(b"new")
    assert os.readlink(link) == "real"
    assert [p.name for p in (tmp_path / "real").iterdir()] == ["model.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    dangling = tmp_path / "dangling"
    dangling.symlink_to("later")
    with staging.staged_folder(dangling) as staged:
        (staged / "model.onnx").write_bytes(b"new")
    assert os.readlink(dangling) == "later" and (tmp_path / "later" / "model.onnx").is_file()
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    with pytest.raises(OSError, match="symbolic links"), staging.staged_folder(loop):
        pass
    assert os.readlink(loop) == "loop"


def test_the_current_folder_is_never_swapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "a" / "here"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    for out in (".", "..", str(here)):
        with (
            pytest.raises(OSError, match="the current folder, or holds it"),
            staging.staged_folder(out),
        ):
            raise AssertionError("nothing is staged")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "here"]


def test_data_fetch_leaves_a_fetch_results_folder_it_did_not_make(
    tiny_data: Path, tmp_path: Path
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    theirs = tmp / "imgcls-fetch-results"  # someone's results, named like a fetch's folder
    theirs.mkdir()
    (theirs / "scores.csv").write_text("a,b\n")
    pid = dead_pid()
    lookalike = tmp / f"imgcls-fetch-{pid}-notes"  # a dead pid's name, but no marker
    lookalike.mkdir()
    killed = staging.make_staged(tmp, f"imgcls-fetch-{pid}-", "")  # a killed fetch's, marked
    staging.Marker(pid, None, time.time()).write(killed)
    proc = run_imgcls(
        "data",
        "fetch",
        "--dataset",
        "mnist",
        cwd=tmp_path,
        env={"TMPDIR": str(tmp), "IMGCLS_DATA": str(tiny_data)},
        timeout=120,
    )
    assert proc.returncode == 0
    assert (theirs / "scores.csv").read_text() == "a,b\n"
    assert sorted(p.name for p in tmp.iterdir()) == sorted([theirs.name, lookalike.name])
