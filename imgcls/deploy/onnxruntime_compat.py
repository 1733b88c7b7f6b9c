"""The one place imgcls reaches into onnxruntime's private modules.

onnxruntime raises its own exception types (``Fail``, ``InvalidProtobuf``, ``InvalidGraph``,
...) when it cannot load a model, and exports none of them from the ``onnxruntime`` package:
they live in the compiled module ``onnxruntime.capi.onnxruntime_pybind11_state``. They derive
from ``Exception`` only, so catching them by name is the only way to tell "onnxruntime cannot
load this file" from a bug of ours. ``tests/deploy/test_compat.py`` fails with a message
naming onnxruntime when a release moves or renames them.
"""

from __future__ import annotations

from onnxruntime.capi import onnxruntime_pybind11_state as _state

__all__ = ["ORT_ERROR_NAMES", "ORT_ERRORS"]

# The errors creating a session can raise (a missing, damaged or unsupported model).
ORT_ERROR_NAMES = (
    "Fail",
    "InvalidArgument",
    "NoSuchFile",
    "InvalidProtobuf",
    "InvalidGraph",
    "RuntimeException",
    "NotImplemented",
    "EPFail",
)
ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(_state, n) for n in ORT_ERROR_NAMES if hasattr(_state, n)
)
