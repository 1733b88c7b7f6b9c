"""The gates an exported model must pass before anything is written: the ONNX checker
(``check_graph``) and parity with a reference (``compare_logits``), for every file an export
writes. A gate that fails raises ``GateError`` (``gate``), which says that nothing was
written and what became of the target folder.

The thresholds, each read when its gate runs:

* ``model.onnx`` vs the PyTorch model (``reference_logits``): largest |Δlogit| <= 1e-4 and
  top-1 agreement 100 %;
* ``model.fp16.onnx`` vs model.onnx: top-1 agreement >= 99.9 %;
* ``model.int8.onnx`` vs model.onnx: top-1 agreement >= 99.5 % and test accuracy within 0.2
  points (``accuracy_gap_allowed``);
* ``model.features.onnx`` vs model.onnx: model.onnx's thresholds, and its feature maps within
  1e-4 of the PyTorch ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from imgcls.errors import GateError

__all__ = [
    "MAX_ABS_FMAP_DIFF",
    "MAX_ABS_LOGIT_DIFF",
    "MAX_INT8_ACCURACY_DIFF",
    "MIN_FP16_AGREEMENT",
    "MIN_FP32_AGREEMENT",
    "MIN_INT8_AGREEMENT",
    "GateError",
    "LogitParity",
    "accuracy_gap_allowed",
    "check_graph",
    "compare_logits",
    "gate",
    "reference_logits",
]

MAX_ABS_LOGIT_DIFF = 1e-4  # fp32 gate: largest |logit_onnx - logit_torch| over the test set
MIN_FP32_AGREEMENT = 1.0  # fp32 gate: top-1 agreement with the PyTorch model
MIN_FP16_AGREEMENT = 0.999  # fp16 gate: top-1 agreement with the fp32 ONNX model
MIN_INT8_AGREEMENT = 0.995  # int8 gate: top-1 agreement with the fp32 ONNX model
MAX_INT8_ACCURACY_DIFF = 0.002  # int8 gate: |accuracy_int8 - accuracy_fp32| (0.2 points)
MAX_ABS_FMAP_DIFF = 1e-4  # features gate: largest |map_onnx - map_torch|


def gate(stage: str, failures: list[str], out: Path) -> None:
    """Raise ``GateError`` for ``stage`` when there are ``failures``; ``out`` is the target
    folder, which the message says is untouched (or was not created)."""
    if failures:
        where = (
            "the previous export in " + str(out) + " is untouched"
            if out.exists()
            else str(out) + " was not created"
        )
        raise GateError(
            f"{stage} gate failed: {'; '.join(failures)}. Nothing was written; {where}."
        )


def check_graph(
    model: onnx.ModelProto | str | os.PathLike[str], out: Path, what: str | None = None
) -> None:
    """The checker gate: ``onnx.checker.check_model(full_check=True)`` on ``model`` (a proto,
    or a file), its stage named ``onnx.checker (<what>)``."""
    try:
        onnx.checker.check_model(
            model if isinstance(model, onnx.ModelProto) else str(model), full_check=True
        )
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        gate(f"onnx.checker ({what})" if what else "onnx.checker", [_first_line(e)], out)


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0][:300]


def _limit(fraction: float) -> str:
    """A threshold as a percentage with the digits it has: 100%, 99.9%, 99.5%."""
    return f"{fraction:.0%}" if round(fraction * 100, 9).is_integer() else f"{fraction:.1%}"


@dataclass(frozen=True)
class LogitParity:
    """How the logits of a model under test agree with a reference's on the same images."""

    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    disagreements: int
    failures: list[str]  # empty when the gate passes


def compare_logits(
    got: np.ndarray,
    ref: np.ndarray,
    *,
    min_agreement: float,
    max_abs_diff: float | None = None,
    against: str | None = None,
    count_in_message: bool = True,
) -> LogitParity:
    """Compare logits ``got`` (N, K) with ``ref`` (N, K): the largest and mean |Δlogit| and
    the top-1 agreement, each checked against its threshold (``max_abs_diff`` None: not
    checked). ``against`` names the reference in the messages (None: the PyTorch model, said
    as nothing); ``count_in_message`` adds how many images differ to the agreement message.
    """
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    same = got.argmax(1) == ref.argmax(1)
    largest, agree, differ = float(diff.max()), float(same.mean()), int((~same).sum())
    failures = []
    if max_abs_diff is not None and not largest <= max_abs_diff:  # NaN fails too
        vs = f" vs {against}" if against else ""
        failures.append(f"max |Δlogit|{vs} {largest:.3g} > {max_abs_diff}")
    if not agree >= min_agreement:
        with_ = f" with {against}" if against else ""
        count = f" ({differ} images differ)" if count_in_message else ""
        failures.append(f"top-1 agreement{with_} {agree:.4%} < {_limit(min_agreement)}{count}")
    return LogitParity(largest, float(diff.mean()), agree, differ, failures)


def accuracy_gap_allowed(correct: int, correct_fp32: int, n: int) -> bool:
    """Whether int8's accuracy is within ``MAX_INT8_ACCURACY_DIFF`` of fp32's, counted in whole
    images, so that a gap of exactly the limit passes: as fractions, 1869/2000 - 1865/2000 is
    0.0020000000000000018, above 0.002."""
    return abs(correct - correct_fp32) <= MAX_INT8_ACCURACY_DIFF * n + 1e-9


def reference_logits(
    model: nn.Module, images: torch.Tensor, mean: float, std: float, batch_size: int = 1000
) -> np.ndarray:
    """The PyTorch model's logits (N, K) on uint8 images (N, C, H, W), the way training
    evaluates them."""
    from imgcls.data.transforms import normalize

    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            out.append(model(normalize(images[i : i + batch_size], mean, std)).float().numpy())
    return np.concatenate(out)
