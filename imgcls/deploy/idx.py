"""IDX files (LeCun's MNIST format), read with numpy: ``read_idx``, and ``is_idx_file`` to tell
one from an image file whatever its name.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import struct
from pathlib import Path

import numpy as np

from imgcls.errors import ImageFileError

__all__ = ["is_idx_file", "read_idx"]

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


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip, as the files come from the web (train-images-idx3-ubyte.gz)
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ImageFileError(f"{path}: a damaged gzip file ({e})") from e
    return data


def _is_idx_header(head: bytes) -> bool:
    return (
        len(head) >= 4
        and head[0] == 0
        and head[1] == 0
        and head[2] in _IDX_TYPES
        and 1 <= head[3] <= 4
    )


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array of its shape and type.

    Raises:
        ImageFileError: the file is missing, its magic number is not IDX's, or its size does
            not match its header (truncated or trailing bytes).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    data = _read_bytes(path)
    if not _is_idx_header(data[:4]):
        raise ImageFileError(
            f"{path}: not an IDX file (magic bytes {data[:4].hex() or 'none'}; expected 0000 08xx)"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ImageFileError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(data) - header != expected:
        raise ImageFileError(
            f"{path}: IDX header says {'x'.join(map(str, dims))} items ({expected} bytes) "
            f"but the file holds {len(data) - header} bytes of data: it is truncated or damaged"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(dims)
        .astype(dtype.newbyteorder("="))
    )


def is_idx_file(path: Path) -> bool:
    """Whether a file (gzipped or not) starts with an IDX header."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if head[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError), gzip.open(path, "rb") as gz:
            head = gz.read(4)
    return _is_idx_header(head)
