"""Small shared helpers: atomic file writes that never replace a device, pipe or symlink."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from imgcls.errors import ConfigError, DiskFullError, ImgclsError

__all__ = [
    "OutputWriteError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable_folder",
    "sha256_file",
]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class OutputWriteError(ImgclsError, OSError):
    """Writing to a device, a FIFO or a socket named as an output failed (a closed pipe, a
    device that refuses writes). An ``OSError`` with the errno of the failure."""

    def __str__(self) -> str:
        return str(self.strerror)


def _written_in_place(final: Path) -> bool:
    """True when ``final`` exists and is neither a regular file nor a folder (a character or
    block device such as /dev/null or /dev/stdout, a FIFO, a socket): such a target is written
    to directly, since a rename onto it would replace the device or pipe by a plain file."""
    try:
        mode = os.stat(final).st_mode  # follows symlinks: /dev/stdout -> /proc/self/fd/1 -> ...
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _link_target(final: Path) -> Path:
    """The path a symlink ``final`` finally points to (the link itself stays a link: the new
    content is staged beside, and renamed onto, the file it points to)."""
    try:
        return final.resolve()
    except (OSError, RuntimeError) as e:  # a loop of links (RuntimeError before Python 3.13)
        raise ConfigError(
            f"{final}: a symlink that points to itself (a loop); remove it or pass another path"
        ) from e


def _disk_full(final: Path, e: OSError, in_place: bool) -> DiskFullError:
    if in_place:
        what = (
            f"{final}: no space left on the device it names ({e.strerror}); nothing more can be "
            "written to it. Free some space or pass another path"
        )
    else:
        what = (
            f"{final}: the disk is full; it was not written, and what was there before is "
            "intact. Free some space and run the command again"
        )
    return DiskFullError(e.errno, what)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``final``; rename it onto ``final`` only if the block succeeds.

    A crash or exception leaves ``final`` as it was and removes the temp file, so a reader
    never sees half a file where a good one was. A full disk becomes ``DiskFullError``.

    What is at ``final`` is never replaced by something of another kind: a symlink stays a
    link (the file it points to gets the new content, atomically), and a device, FIFO or
    socket (``/dev/stdout``, ``/dev/null``, a named pipe) is yielded itself and written in
    place; a failed write there becomes ``DiskFullError`` (ENOSPC, as on /dev/full) or
    ``OutputWriteError``.
    """
    final = Path(final)
    if _written_in_place(final):
        try:
            yield final
        except OSError as e:
            if isinstance(e, ImgclsError):
                raise
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(final, e, in_place=True) from e
            raise OutputWriteError(
                e.errno, f"{final}: cannot write to it ({e.strerror or e}); pass another path"
            ) from e
        return
    if final.is_symlink():
        final = _link_target(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix + ".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:  # make the content durable before the rename
            os.fsync(fh.fileno())
        os.replace(tmp_path, final)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or isinstance(e, DiskFullError):
            raise
        raise _disk_full(final, e, in_place=False) from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def _atomic_write(
    final: str | os.PathLike[str], mode: str, write: Callable[[IO[Any]], Any]
) -> None:
    with atomic_path(final) as tmp, open(tmp, mode) as fh:
        write(fh)


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    _atomic_write(final, "wb", lambda fh: fh.write(data))


def atomic_write_text(final: str | os.PathLike[str], text: str) -> None:
    _atomic_write(final, "w", lambda fh: fh.write(text))


def check_writable_folder(folder: str | os.PathLike[str], option: str = "--out") -> Path:
    """Fail now, before any data is loaded or any model run, if nothing can be written into
    ``folder``: it, or the nearest part of its path that exists, must be a writable folder.

    Folders that do not exist yet are not created here; the command creates them when it
    writes.

    Raises:
        ConfigError: a part of the path is a file, or the folder is not writable.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"cannot write into {folder}: {existing} is a file, not a folder; "
            f"pass {option} with another folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "it" if existing == folder else f"{existing}"
        raise ConfigError(
            f"cannot write into {folder}: {where} is not writable (read-only or not yours); "
            f"pass {option} with a writable folder"
        )
    return folder
