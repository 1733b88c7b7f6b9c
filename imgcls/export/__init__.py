"""The export stage: a trained checkpoint becomes a verified ONNX folder (and, on request, a
Triton model repository).

One concern per module: ``pipeline`` (``export_checkpoint``: load, graph, gates, extras,
place), ``graph`` (what the ONNX graph computes, and its export), ``gates`` (the checker and
the parity checks every file must pass), ``int8`` and ``features`` (the extra models),
``ensemble`` (several checkpoints as one graph), ``model_card`` (README.md), ``triton`` (the
Triton model repository).
"""

from imgcls.export.graph import OPSET
from imgcls.export.pipeline import (
    EXPORT_ROOT,
    ExportResult,
    default_export_dir,
    export_checkpoint,
    export_ensemble,
)

__all__ = [
    "EXPORT_ROOT",
    "OPSET",
    "ExportResult",
    "default_export_dir",
    "export_checkpoint",
    "export_ensemble",
]
