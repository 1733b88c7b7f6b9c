"""IDX files (LeCun's MNIST format), read with numpy: ``read_idx``, and ``is_idx_file`` to tell
one from an image file whatever its name.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from imgcls.errors import ImageFileError

__all__ = ["MAX_IDX_BYTES", "MAX_IDX_ITEM_VALUES", "is_idx_file", "read_idx"]

# IDX (LeCun's MNIST format): 2 zero bytes, a type code, the number of dimensions, then one
# big-endian uint32 per dimension, then the data, row-major, big-endian.
_IDX_TYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
# What an IDX file may declare. Its header is read before anything is allocated; a file of more
# is refused. MNIST's training images are 47,040,000 bytes; an image (one item) of up to
# 4096 x 4096 values is far more than a 28x28 model needs.
MAX_IDX_BYTES = 256 * 1024 * 1024
MAX_IDX_ITEM_VALUES = 4096 * 4096


def _is_idx_header(head: bytes) -> bool:
    return (
        len(head) >= 4
        and head[0] == 0
        and head[1] == 0
        and head[2] in _IDX_TYPES
        and 1 <= head[3] <= 4
    )


def _open(path: Path) -> io.BufferedIOBase:
    """The file, or its decompressed stream when it is gzipped (as the files come from the web:
    train-images-idx3-ubyte.gz)."""
    fh = path.open("rb")
    if fh.read(2) == b"\x1f\x8b":
        fh.close()
        return gzip.open(path, "rb")
    fh.seek(0)
    return fh


def _read_exactly(fh: io.BufferedIOBase, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at the end of the stream."""
    parts, left = [], n
    while left > 0:
        part = fh.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def read_idx(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_IDX_BYTES,
    max_item_values: int = MAX_IDX_ITEM_VALUES,
) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array of its shape and type.

    The header is checked before anything is allocated: a file that declares more than
    ``max_bytes`` of data, or items (images) of more than ``max_item_values`` values each, is
    refused. A gzipped file is inflated as a stream into the array, never past what its
    header declares, so a small file that would inflate to gigabytes costs nothing.

    Raises:
        ImageFileError: the file is missing, its magic number is not IDX's, its size does not
            match its header (truncated or trailing bytes), its gzip stream is damaged, or it
            declares more than the limits.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    try:
        with _open(path) as fh:
            head = _read_exactly(fh, 4)
            if not _is_idx_header(head):
                raise ImageFileError(
                    f"{path}: not an IDX file (magic bytes {head.hex() or 'none'}; "
                    "expected 0000 08xx)"
                )
            ndim = head[3]
            raw_dims = _read_exactly(fh, 4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise ImageFileError(f"{path}: truncated IDX header")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            dtype = np.dtype(_IDX_TYPES[head[2]])
            shape = "x".join(map(str, dims))
            expected = math.prod(dims) * dtype.itemsize
            item = math.prod(dims[1:]) if ndim > 1 else 1
            if expected > max_bytes or item > max_item_values:
                raise ImageFileError(
                    f"{path}: refused, its IDX header declares {shape} items ({expected:,} "
                    f"bytes); imgcls reads at most {max_bytes:,} bytes of data and "
                    f"{max_item_values:,} values per image: split the file or check where it "
                    "came from"
                )
            data = np.empty(expected, np.uint8)
            view, got = data.data, 0
            while got < expected:
                n = fh.readinto(view[got:])
                if not n:
                    break
                got += n
            trailing = len(fh.read(1)) if got == expected else 0
    except (OSError, EOFError, zlib.error) as e:
        raise ImageFileError(f"{path}: a damaged gzip file or unreadable ({e})") from e
    if got != expected or trailing:
        held = f"{got} bytes" if got < expected else "more bytes than that"
        raise ImageFileError(
            f"{path}: IDX header says {shape} items ({expected} bytes) "
            f"but the file holds {held} of data: it is truncated or damaged"
        )
    array = data.view(dtype).reshape(dims)
    if not dtype.isnative:  # big-endian on disk: swapped in place, no second copy
        array = array.byteswap(inplace=True).view(dtype.newbyteorder())
    return array


def is_idx_file(path: Path) -> bool:
    """Whether a file (gzipped or not) starts with an IDX header."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if head[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError, zlib.error), gzip.open(path, "rb") as gz:
            head = gz.read(4)
    return _is_idx_header(head)
