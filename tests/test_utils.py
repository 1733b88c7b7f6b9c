"""The one atomic-write helper every output goes through never replaces what is at a path by
something of another kind: a device, FIFO or socket is written in place, a symlink stays a link
and the file it points to gets the content, a folder is refused."""

from __future__ import annotations

import csv
import io
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgcls.__main__ import main
from imgcls.errors import DiskFullError, ImgclsError
from imgcls.utils import atomic_path, atomic_write_bytes, atomic_write_text

DEV_NULL, DEV_FULL = Path("/dev/null"), Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full on this system")


DEVICES = {"/dev/null": (1, 3), "/dev/full": (1, 7)}


@pytest.fixture(autouse=True)
def devices_stay_devices() -> Iterator[None]:
    """A regression here would, as root, turn the machine's /dev/null, /dev/full or /dev/stdout
    into plain files, breaking every other process: put them back, then fail."""
    yield
    broken = []
    for name, (major, minor) in DEVICES.items():
        if os.path.exists(name) and not stat.S_ISCHR(os.lstat(name).st_mode):
            broken.append(name)
            if os.geteuid() == 0:
                os.mknod(f"{name}.imgcls-restore", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
                os.replace(f"{name}.imgcls-restore", name)
                os.chmod(name, 0o666)
    stdout = "/dev/stdout"
    if os.path.lexists(stdout) and stat.S_ISREG(os.lstat(stdout).st_mode):
        broken.append(stdout)
        if os.geteuid() == 0:
            os.symlink("/proc/self/fd/1", f"{stdout}.imgcls-restore")
            os.replace(f"{stdout}.imgcls-restore", stdout)
    assert not broken, f"replaced by a plain file (now restored): {broken}"


def is_char_device(path: Path) -> bool:
    return stat.S_ISCHR(os.lstat(path).st_mode)


def read_fifo(fifo: Path) -> tuple[threading.Thread, list[bytes]]:
    """A reader on ``fifo`` in a thread (a writer's open blocks until one exists)."""
    got: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as fh:
            got.append(fh.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, got


# ----------------------------------------------------------------------------- the helpers
def test_dev_null_is_written_in_place_and_stays_a_device() -> None:
    assert is_char_device(DEV_NULL)
    atomic_write_text(DEV_NULL, "rows\n")
    atomic_write_bytes(DEV_NULL, b"\0" * 1000)
    with atomic_path(DEV_NULL) as target, open(target, "w") as fh:
        assert target == DEV_NULL  # no temp file beside it
        fh.write("more")
    assert is_char_device(DEV_NULL)
    assert DEV_NULL.read_bytes() == b""


@needs_dev_full
def test_a_full_device_is_a_disk_full_error_and_stays_a_device() -> None:
    with pytest.raises(DiskFullError) as e:
        atomic_write_text(DEV_FULL, "x" * 100_000)
    assert isinstance(e.value, ImgclsError)
    assert str(e.value).startswith("/dev/full: no space left on the device it names")
    assert "\n" not in str(e.value)
    assert is_char_device(DEV_FULL)


def test_a_fifo_gets_the_bytes_and_stays_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    thread, got = read_fifo(fifo)
    atomic_write_text(fifo, "a,b\n1,2\n")
    thread.join(10)
    assert got == [b"a,b\n1,2\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temp file was made


def test_a_symlink_stays_a_link_and_its_target_gets_the_content(tmp_path: Path) -> None:
    real = tmp_path / "data" / "pred.csv"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "pred.csv"
    link.symlink_to(Path("data") / "pred.csv")  # relative, as people make them
    atomic_write_text(link, "new\n")
    assert link.is_symlink() and os.readlink(link) == str(Path("data") / "pred.csv")
    assert real.read_text() == "new\n"
    # staged beside the file it points to and renamed there: no temp file left anywhere
    assert sorted(p.name for p in real.parent.iterdir()) == ["pred.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "pred.csv"]


def test_a_failed_write_through_a_symlink_leaves_its_target_intact(tmp_path: Path) -> None:
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    with pytest.raises(RuntimeError, match="boom"), atomic_path(link) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert link.is_symlink() and real.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "real.csv"]


def test_a_dangling_symlink_creates_the_file_it_points_to(tmp_path: Path) -> None:
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "made.csv")
    atomic_write_text(link, "rows\n")
    assert link.is_symlink() and (tmp_path / "made.csv").read_text() == "rows\n"


def test_a_regular_file_is_still_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        assert tmp != path and tmp.parent == tmp_path
        tmp.write_text("half")
        raise RuntimeError
    assert path.read_text() == "old\n"
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n" and not path.is_symlink()


def test_a_folder_is_still_refused(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep").write_text("mine")
    with pytest.raises(IsADirectoryError):
        atomic_write_text(folder, "rows\n")
    assert (folder / "keep").read_text() == "mine"


# ----------------------------------------------------------------------------- the command
@pytest.fixture()
def pngs(tmp_path: Path) -> Path:
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(3):
        img = np.zeros((28, 28), np.uint8)
        img[4:24, 12 + i : 16 + i] = 255  # a stroke: a "1"-ish digit
        Image.fromarray(img).save(folder / f"d{i}.png")
    return folder


def infer_cmd(model: Path, pngs: Path, out: str) -> list[str]:
    return ["infer", "--model", str(model), str(pngs), "--out", out]


@pytest.mark.real_data
def test_infer_out_dev_stdout_prints_the_rows_and_leaves_the_device(
    exported_lenet: Path, pngs: Path
) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "imgcls",
            *infer_cmd(exported_lenet / "model.onnx", pngs, "/dev/stdout"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [Path(r["input"]).name for r in rows] == ["d0.png", "d1.png", "d2.png"]
    assert all(0.0 < float(r["probability"]) <= 1.0 for r in rows)
    assert os.path.islink("/dev/stdout") or stat.S_ISCHR(os.lstat("/dev/stdout").st_mode)
    assert is_char_device(DEV_NULL)


@pytest.mark.real_data
@needs_dev_full
def test_infer_out_dev_full_is_one_line_and_exit_2(
    exported_lenet: Path, pngs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(infer_cmd(exported_lenet / "model.onnx", pngs, str(DEV_FULL))) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("imgcls: error:")]
    assert err == [
        "imgcls: error: /dev/full: no space left on the device it names (No space left on "
        "device); nothing more can be written to it. Free some space or pass another path"
    ]
    assert is_char_device(DEV_FULL)


@pytest.mark.real_data
def test_infer_out_dev_null_a_fifo_and_a_symlink(
    exported_lenet: Path, pngs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = exported_lenet / "model.onnx"
    assert main(infer_cmd(model, pngs, str(DEV_NULL))) == 0
    assert is_char_device(DEV_NULL)

    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert main(infer_cmd(model, pngs, str(link))) == 0
    assert link.is_symlink()
    by_link = list(csv.DictReader(io.StringIO(real.read_text())))
    assert [Path(r["input"]).name for r in by_link] == ["d0.png", "d1.png", "d2.png"]

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    thread, got = read_fifo(fifo)
    assert main(infer_cmd(model, pngs, str(fifo))) == 0
    thread.join(10)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got == [real.read_bytes()]  # the same rows as through the link
    capsys.readouterr()
