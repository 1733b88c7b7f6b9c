"""Small shared helpers: atomic file writes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from imgcls.errors import ConfigError, DiskFullError

__all__ = [
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


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``final``; rename it onto ``final`` only if the block succeeds.

    A crash or exception leaves ``final`` as it was and removes the temp file, so a reader
    never sees half a file where a good one was. A full disk becomes ``DiskFullError``.
    """
    final = Path(final)
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
        raise DiskFullError(
            e.errno,
            f"{final}: the disk is full; it was not written, and what was there before is "
            "intact. Free some space and run the command again",
        ) from e
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
