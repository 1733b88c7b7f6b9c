"""Folders that appear whole or not at all: the one mechanism behind every folder imgcls puts
in place (an export, a Triton model, a download being unpacked).

A folder is built in a staged folder beside its target (``staged_folder``), named after the
process that made it (``.<name>.<pid>.<random>.tmp``), and swapped into place only when the
block that fills it succeeds (``swap_into_place``): a reader never sees half of it, and a
failure leaves the previous folder as it was. A process killed meanwhile leaves its staged
folder behind; ``remove_stale`` removes those whose process is gone, or that are older than
``STALE_AFTER_S`` (the pid may have been reused).

This module imports nothing but the standard library, so the torch-free deployment shares it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "STAGED",
    "STALE_AFTER_S",
    "pid_alive",
    "remove_stale",
    "staged_folder",
    "swap_into_place",
    "umask",
    "write_durable",
]

STALE_AFTER_S = 3600.0  # a staged folder this old is left over even if its pid is alive again
# .<name>.<pid>.<random>.tmp, or .<name>.<random>.tmp (no pid) from earlier versions
STAGED = re.compile(r"^\..+?\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp$")


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


def remove_stale(
    parent: str | os.PathLike[str],
    pattern: re.Pattern[str] = STAGED,
    *,
    stale_after_s: float = STALE_AFTER_S,
    pidless_is_stale: bool = False,
    on_remove: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Remove the staged folders in ``parent`` that killed processes left behind.

    A folder counts when ``pattern`` matches its name; the match's ``pid`` group (None when
    the name carries none) names the process that made it. It is stale when that process is
    gone, when it is older than ``stale_after_s``, or, with ``pidless_is_stale``, when its name
    carries no pid. Symlinks and files are never removed. ``on_remove`` is told each folder
    before it goes.

    Returns:
        The folders removed.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return []
    removed = []
    now = time.time()
    for entry in parent.iterdir():
        match = pattern.match(entry.name)
        if match is None or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            age = now - entry.lstat().st_mtime
        except OSError:  # removed meanwhile by the process that made it
            continue
        pid = match["pid"]
        dead = pidless_is_stale if pid is None else not pid_alive(int(pid))
        if dead or age > stale_after_s:
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


@contextlib.contextmanager
def staged_folder(
    out: str | os.PathLike[str], *, wrap: Callable[[OSError], Exception] | None = None
) -> Iterator[Path]:
    """Yield an empty staged folder beside ``out``; when the block succeeds, give it the
    usual permissions (mkdtemp makes it 0700) and swap it into place at ``out``. The staged
    folder is removed however the block ends.

    ``wrap`` turns an ``OSError`` while making the staged folder into the caller's error.
    """
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(
            tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.parent)
        )
    except OSError as e:
        if wrap is None:
            raise
        raise wrap(e) from e
    try:
        yield staged
        os.chmod(staged, 0o777 & ~umask())
        swap_into_place(staged, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staged)
