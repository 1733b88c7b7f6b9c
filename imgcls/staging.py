"""Folders that appear whole or not at all: the one mechanism behind every folder imgcls puts
in place (an export, a Triton model, a download being unpacked).

A folder is built in a staged folder beside its target (``staged_folder``), named after the
process that made it (``.<name>.<pid>.<random>.tmp``), and swapped into place only when the
block that fills it succeeds (``swap_into_place``): a reader never sees half of it, and a
failure leaves the previous folder as it was. A process killed meanwhile leaves its staged
folder behind; ``remove_stale`` removes those whose process is gone, or that are older than
``STALE_AFTER_S``.

A folder is removed only when imgcls provably made it, never for its name alone: each staged
folder holds a marker file (``MARKER``: JSON with the pid, that process's start time and the
creation time), written before anything else goes in. A folder without a valid marker (a
user's ``.notes.abcdefgh.tmp``) is never touched; one whose pid is alive again but with another
start time (the pid was reused) counts as gone.

This module imports nothing but the standard library, so the torch-free deployment shares it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "MARKER",
    "STAGED",
    "STALE_AFTER_S",
    "Marker",
    "holds_cwd",
    "make_staged",
    "pid_alive",
    "process_gone",
    "process_start",
    "read_marker",
    "remove_stale",
    "scratch_folder",
    "staged_folder",
    "swap_into_place",
    "umask",
    "write_durable",
]

STALE_AFTER_S = 3600.0  # a staged folder this old is left over even if its pid is alive again
# .<name>.<pid>.<random>.tmp: which names are looked at (the marker decides what is removed)
STAGED = re.compile(r"^\..+?\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp$")
MARKER = ".imgcls-staging"  # inside each staged folder: who made it (see Marker)


def umask() -> int:
    """The process's umask (reading it means setting it, so it is put back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as an opaque string that differs for a reused pid; None
    if it is not running or the system cannot tell.

    On Linux: field 22 of ``/proc/<pid>/stat`` (clock ticks after boot). Elsewhere ``ps -o
    lstart=`` (to the second, enough to tell a reused pid from the process that wrote a marker).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():  # /proc works: the process is gone
            return None
    except OSError:
        return None
    else:
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after
        # its last ")"; the fields after it start at field 3, so field 22 is index 19.
        fields = stat[stat.rfind(")") + 2 :].split()
        return f"linux:{fields[19]}" if len(fields) > 19 else None
    try:
        ps = subprocess.run(
            ["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return f"ps:{ps.stdout.strip()}" if ps.returncode == 0 and ps.stdout.strip() else None


def process_gone(pid: int, start: str | None) -> bool:
    """Whether the process ``pid`` that started at ``start`` (``process_start``'s answer then;
    None: unknown) is no longer running. A live pid with another start time is a reused pid:
    the process is gone. With ``start`` unknown a reuse cannot be told, and a live pid counts
    as the same process."""
    if not pid_alive(pid):
        return True
    if start is None:
        return False
    now = process_start(pid)
    return now is not None and now != start


@dataclass(frozen=True)
class Marker:
    """What the marker file of a staged folder says: who made it and when."""

    pid: int
    start: str | None  # process_start(pid) when the folder was made (None: unknown)
    created: float  # time.time() when the folder was made

    @classmethod
    def of_this_process(cls) -> Marker:
        return cls(os.getpid(), process_start(os.getpid()), time.time())

    def write(self, folder: Path) -> None:
        with (folder / MARKER).open("wb") as fh:  # synced, so that it outlives a crash
            fh.write(json.dumps(asdict(self)).encode())
            fh.flush()
            os.fsync(fh.fileno())

    def process_gone(self) -> bool:
        """The process that made the folder is no longer running (its pid may be reused; with
        no start time recorded, a reuse cannot be told and ``STALE_AFTER_S`` decides)."""
        return process_gone(self.pid, self.start)


def read_marker(folder: Path) -> Marker | None:
    """The marker in ``folder``, or None if it has none or it is not one imgcls wrote."""
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid, start, created = data.get("pid"), data.get("start"), data.get("created")
    if (
        isinstance(pid, bool)
        or not isinstance(pid, int)
        or pid <= 0
        or not (start is None or isinstance(start, str))
        or isinstance(created, bool)
        or not isinstance(created, int | float)
    ):
        return None
    return Marker(pid, start, float(created))


def make_staged(parent: Path, prefix: str, suffix: str = ".tmp") -> Path:
    """A new, empty-but-for-its-marker folder ``<prefix><random><suffix>`` in ``parent``.

    The marker goes in before the folder is handed out; a kill between the two leaves a folder
    without a marker, which is never removed, rather than one that looks like someone else's.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    try:
        Marker.of_this_process().write(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


@contextlib.contextmanager
def scratch_folder(parent: str | os.PathLike[str], prefix: str, suffix: str = "") -> Iterator[Path]:
    """A marked staged folder (``make_staged``) for work files, removed however the block
    ends; one that a kill leaves behind is removed by a later ``remove_stale``."""
    folder = make_staged(Path(parent), prefix, suffix)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale(
    parent: str | os.PathLike[str],
    pattern: re.Pattern[str] = STAGED,
    *,
    stale_after_s: float = STALE_AFTER_S,
    on_remove: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Remove the staged folders in ``parent`` that killed processes left behind.

    A folder is looked at when ``pattern`` matches its name, and removed only when it holds a
    valid marker (``MARKER``) and the process the marker names is gone (not running, or
    running with another start time: the pid was reused) or the marker is older than
    ``stale_after_s``. A folder without a marker is never removed, whatever its name; nor are
    symlinks and files. ``on_remove`` is told each folder before it goes.

    Returns:
        The folders removed.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return []
    removed = []
    now = time.time()
    for entry in parent.iterdir():
        if pattern.match(entry.name) is None or entry.is_symlink() or not entry.is_dir():
            continue
        marker = read_marker(entry)
        if marker is None:  # not provably ours: a user's folder with a similar name
            continue
        if marker.process_gone() or now - marker.created > stale_after_s:
            if on_remove is not None:
                on_remove(entry)
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def write_durable(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it, so that the swap publishes whole files."""
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def swap_into_place(staged: Path, out: Path) -> None:
    """Put the folder ``staged`` at ``out``, replacing a previous folder there."""
    if not out.exists():
        os.replace(staged, out)
        return
    if _exchange(staged, out):  # `out` never disappears, not even for a moment
        shutil.rmtree(staged)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    try:
        os.replace(staged, out)
    except OSError:
        os.replace(old, out)
        raise
    shutil.rmtree(old)


def holds_cwd(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` (symlinks followed) is the current folder or holds it: swapping it
    would move the current folder away, leaving this process, and the shell that started it,
    in a removed folder."""
    real, here = Path(os.path.realpath(folder)), Path.cwd().resolve()
    return real == here or real in here.parents


@contextlib.contextmanager
def staged_folder(
    out: str | os.PathLike[str], *, wrap: Callable[[OSError], Exception] | None = None
) -> Iterator[Path]:
    """Yield a staged folder beside ``out``, empty but for its ``MARKER`` (which the block
    leaves alone); when the block succeeds, remove the marker, give the folder the usual
    permissions (mkdtemp makes it 0700) and swap it into place at ``out``. The staged folder is
    removed however the block ends.

    ``out`` may not be the current folder or hold it (``EBUSY``). It is a path to the folder,
    not to a link: a symlink (at ``out`` or on the way to it) is followed, so the folder it
    points to is replaced and the link stays a link (swapping would put a real folder where
    the link was). A dangling link's target is created; a link that loops is ``ELOOP``.

    ``wrap`` turns an ``OSError`` while making the staged folder into the caller's error.
    """
    out = Path(os.path.realpath(out))
    try:
        if out.is_symlink():  # realpath stops at a link that loops
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(out))
        if holds_cwd(out):
            raise OSError(errno.EBUSY, "it is the current folder, or holds it", str(out))
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = make_staged(out.parent, f".{out.name}.{os.getpid()}.")
    except OSError as e:
        if wrap is None:
            raise
        raise wrap(e) from e
    try:
        yield staged
        os.chmod(staged, 0o777 & ~umask())
        (staged / MARKER).unlink()  # the placed folder holds only what the block wrote
        swap_into_place(staged, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staged)
