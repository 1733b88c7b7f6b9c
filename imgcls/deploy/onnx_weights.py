"""The float32 initializers of an ONNX file (the learned weights), read without the onnx package:
the deployment install has only onnxruntime, which does not hand them out.

An ONNX file is a protobuf ``ModelProto``; its ``graph`` (field 7) lists ``initializer``
tensors (field 5), each with ``dims`` (1), ``data_type`` (2; 1 is float32), ``name`` (8) and
its values as ``raw_data`` (9, little-endian) or ``float_data`` (4). This module walks that
wire format (varints and length-delimited fields) and nothing more.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from imgcls.errors import ModelLoadError

__all__ = ["float_initializers"]

FLOAT = 1


def _varint(b: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(b):
            raise ValueError("truncated varint")
        byte = b[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _fields(b: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one message: varints as ints, length-delimited
    fields as bytes; fixed-width fields as their bytes."""
    out: list[tuple[int, int, int | bytes]] = []
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(b, i)
            out.append((field, wire, v))
        elif wire == 2:
            n, i = _varint(b, i)
            if i + n > len(b):
                raise ValueError("truncated field")
            out.append((field, wire, b[i : i + n]))
            i += n
        elif wire == 1:
            out.append((field, wire, b[i : i + 8]))
            i += 8
        elif wire == 5:
            out.append((field, wire, b[i : i + 4]))
            i += 4
        else:
            raise ValueError(f"wire type {wire}")
    return out


def _tensor(b: bytes) -> tuple[str, np.ndarray] | None:
    dims: list[int] = []
    floats: list[float] = []
    name, dtype, raw = "", 0, None
    for field, _, v in _fields(b):
        if isinstance(v, int):
            if field == 1:
                dims.append(v)
            elif field == 2:
                dtype = v
        elif field == 1:  # packed dims
            j = 0
            while j < len(v):
                d, j = _varint(v, j)
                dims.append(d)
        elif field == 8:
            name = v.decode("utf-8")
        elif field == 9:
            raw = v
        elif field == 4:  # packed, or one fixed32 value
            floats.extend(struct.unpack(f"<{len(v) // 4}f", v))
    if dtype != FLOAT:
        return None
    n = int(np.prod(dims)) if dims else 1
    values = np.frombuffer(raw, "<f4") if raw is not None else np.asarray(floats, "<f4")
    if values.size != n:
        return None  # external data, or a tensor this reader does not understand
    return name, values.reshape(dims)


def float_initializers(model: Path) -> dict[str, np.ndarray]:
    """Every float32 initializer of ``model`` by name, in the file's order.

    Raises:
        ModelLoadError: the file cannot be read or is not a protobuf ONNX model.
    """
    try:
        data = Path(model).read_bytes()
        out: dict[str, np.ndarray] = {}
        for field, _, graph in _fields(data):
            if field != 7 or not isinstance(graph, bytes):
                continue
            for gfield, _, tensor in _fields(graph):
                if gfield == 5 and isinstance(tensor, bytes):
                    found = _tensor(tensor)
                    if found is not None:
                        out[found[0]] = found[1]
        return out
    except (OSError, ValueError, UnicodeDecodeError, struct.error) as e:
        raise ModelLoadError(f"{model}: its weights cannot be read ({e})") from e
