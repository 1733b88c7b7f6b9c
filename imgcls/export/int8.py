"""int8 post-training static quantization of an exported imgcls model (``model.int8.onnx``).

``quantize_static_qdq`` turns the fp32 ``model.onnx`` graph into a QDQ graph
(QuantizeLinear/DequantizeLinear pairs around each quantized op) with onnxruntime's
``quantize_static``:

* QDQ format, not QOperator: TensorRT and other accelerators take QDQ graphs, and
  onnxruntime's CPU provider fuses DQ -> Conv/Gemm -> Q into QLinearConv / QGemm itself at
  ORT_ENABLE_ALL, so one file serves both.
* weights int8, symmetric, per output channel (a scale per conv filter / Gemm output row):
  per-tensor scales lose too much on small nets whose filters differ by orders of magnitude.
* activations uint8 (asymmetric): what onnxruntime recommends for x86-64 CPUs, whose
  VNNI / AVX2 u8s8 kernels take unsigned activations times signed weights; QInt8 activations
  need the s8s8 path, which is slower there (``quant_format_doc`` in onnxruntime's docs).
* calibration MinMax over the images given (``calibration_images``); the caller picks them
  from the validation split, never from the test set the gate measures on.
* the graph is first run through ``quant_pre_process`` (symbolic + ONNX shape inference and
  onnxruntime's basic optimisations), which onnxruntime recommends so that every tensor has
  a shape and fusable patterns (e.g. Conv + BatchNorm) are folded before scales are chosen.
* the gate (``int8_model``): the int8 model must agree on the top-1 class with the fp32
  ``model.onnx`` on >= 99.5 % of the parity (test) images and have its test accuracy within
  0.2 points of model.onnx's (``imgcls.export.gates``).
* Softmax stays float: ``probabilities`` must sum to 1 and a uint8 softmax output is coarse
  (1/255 steps); the graph's inputs and outputs stay float32.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from imgcls.export import gates
from imgcls.export.graph import set_metadata

__all__ = [
    "CALIBRATION_METHOD",
    "INT8_FILE",
    "ImageCalibrationReader",
    "calibration_set",
    "int8_model",
    "quantize_static_qdq",
]

INT8_FILE = "model.int8.onnx"
CALIBRATION_METHOD = "MinMax"
CALIBRATION_BATCH = 100  # images per calibration run; the calibrator stacks their ranges
DEFAULT_VAL_SIZE, DEFAULT_SEED = 5000, 42  # ImageDataModule's defaults


def calibration_set(
    ckpt: dict[str, Any], dataset: str, n: int, data_dir: str | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """The calibration images of a checkpoint: uint8 (n, C, H, W) and where they came from.

    They are the first ``n`` images of the validation split the checkpoint's training run
    used (its DataModule's ``val_size`` and ``seed``, from ``datamodule_hyper_parameters``;
    the DataModule defaults when the checkpoint has none). A run trained with ``val_size=0``
    had no validation split: then a seeded random slice of the training images is used and
    the info says ``"split": "train"``. Never the test set: the int8 gate measures on it.
    """
    from imgcls.data import trained_datamodule

    if n < 1:
        raise ValueError(f"calibration_images must be >= 1, got {n}")
    dmh = ckpt.get("datamodule_hyper_parameters") or {}
    val_size, seed = dmh.get("val_size", DEFAULT_VAL_SIZE), int(dmh.get("seed", DEFAULT_SEED))
    info: dict[str, Any] = {
        "val_size": val_size,
        "seed": seed,
        "split_from": "checkpoint" if dmh else "datamodule defaults (none in the checkpoint)",
    }
    names = (ckpt.get("hyper_parameters") or {}).get("class_names")
    dm = trained_datamodule(dataset, dmh, data_dir, names, val_size=val_size, seed=seed)
    if dm.n_val > 0:
        dm.setup("fit")
        assert dm.val_set is not None
        images = dm.val_set.images[:n].cpu().numpy()
        info["split"] = "validation"
    else:  # no validation split: a seeded slice of all the training images
        pool, _ = dm._load_split(train=True)
        rng = np.random.default_rng(seed)
        take = min(n, len(pool))
        idx = np.sort(rng.choice(len(pool), size=take, replace=False))
        images = pool[idx].numpy()
        info["split"] = "train"
        info["note"] = (
            "the training run had no validation split (val_size 0): calibrated on a seeded "
            "slice of the training images"
        )
    info["images"] = int(len(images))
    return images, info


class ImageCalibrationReader:
    """onnxruntime ``CalibrationDataReader`` over float32 pixels (N, C, H, W) in [0, 1]."""

    def __init__(
        self, images: np.ndarray, input_name: str = "pixels", batch: int = CALIBRATION_BATCH
    ) -> None:
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.input_name, self.batch = input_name, batch
        self._it: Iterator[dict[str, np.ndarray]] | None = None
        self.rewind()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, len(self.images), self.batch):
            yield {self.input_name: self.images[i : i + self.batch]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        assert self._it is not None
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._batches()

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch)


def quantize_static_qdq(
    model: bytes | str | Path | onnx.ModelProto,
    calibration_images: np.ndarray,
    per_channel: bool = True,
    *,
    activation_type: str = "QUInt8",
    calibrate_method: str = CALIBRATION_METHOD,
    reduce_range: bool = False,
    quant_format: str = "QDQ",
    nodes_to_exclude: list[str] | None = None,
) -> onnx.ModelProto:
    """The int8 QDQ model of ``model`` (fp32), calibrated on ``calibration_images``.

    Args:
        model: the fp32 ONNX model (serialised bytes, a path or a ModelProto).
        calibration_images: float32 pixels (N, C, H, W) in [0, 1], N >= 1, from the
            validation split.
        per_channel: a weight scale per output channel (default) or one per tensor.
        activation_type: ``QUInt8`` (default, see the module docstring) or ``QInt8``.
        calibrate_method: ``MinMax`` | ``Entropy`` | ``Percentile``.
        reduce_range: 7-bit weights (for CPUs without VNNI, where u8s8 can saturate).
        quant_format: ``QDQ`` (what ships) or ``QOperator`` (for comparison only).
        nodes_to_exclude: node names left in float.

    The metadata of ``model`` is carried over unchanged; the caller sets the int8 one.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = np.asarray(calibration_images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"calibration_images must be (N, C, H, W) with N >= 1, got {images.shape}")
    if images.dtype != np.float32 or images.min() < 0.0 or images.max() > 1.0:
        raise ValueError("calibration_images must be float32 pixels in [0, 1]")
    if isinstance(model, bytes | bytearray):
        proto = onnx.load_from_string(bytes(model))
    elif isinstance(model, onnx.ModelProto):
        proto = model
    else:
        proto = onnx.load(str(model))
    metadata = {p.key: p.value for p in proto.metadata_props}
    input_name = proto.graph.input[0].name

    class _Reader(CalibrationDataReader):  # the ABC onnxruntime checks for
        def __init__(self) -> None:
            self.inner = ImageCalibrationReader(images, input_name)

        def get_next(self) -> dict[str, Any] | None:
            return self.inner.get_next()

        def rewind(self) -> None:
            self.inner.rewind()

    softmax = [n.name for n in proto.graph.node if n.op_type == "Softmax"]
    with tempfile.TemporaryDirectory(prefix="imgcls-int8-") as tmp:
        src, pre, dst = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save(proto, str(src))
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre),
            str(dst),
            _Reader(),
            quant_format=getattr(QuantFormat, quant_format),
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=getattr(QuantType, activation_type),
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, calibrate_method),
            nodes_to_exclude=[*softmax, *(nodes_to_exclude or [])],
            extra_options={
                # symmetric int8 weights: zero points are 0, which the u8s8 kernels need
                "WeightSymmetric": True,
                "ActivationSymmetric": False,
            },
        )
        # Loaded in full while the folder still exists (no external data at these sizes).
        out = onnx.load(str(dst))
    del out.metadata_props[:]
    onnx.helper.set_model_props(out, metadata)
    return out


def int8_model(
    *,
    ckpt: dict[str, Any],
    dataset: str,
    model_bytes: bytes,
    metadata: dict[str, Any],
    images: torch.Tensor,
    logits: np.ndarray,
    labels: np.ndarray,
    n_calibration: int,
    data_dir: str | None,
    batch_size: int,
    out: Path,
    log: Callable[[str], None],
) -> tuple[bytes, dict[str, Any]]:
    """``model.int8.onnx`` through its gate, and its parity figures.

    ``logits`` are model.onnx's on the parity ``images`` (the test images): the int8 model
    is compared with them, so the gate needs no second fp32 pass. Calibration images come
    from ``calibration_set`` (the validation split), never from ``images``.
    """
    from imgcls.deploy.classifier import OnnxClassifier

    calib, info = calibration_set(ckpt, dataset, n_calibration, data_dir)
    log(
        f"quantizing to int8 (static QDQ, per-channel; {CALIBRATION_METHOD} "
        f"calibration on {info['images']} {info['split']} images)"
    )
    proto = quantize_static_qdq(
        model_bytes, calib.astype(np.float32) / np.float32(255.0), per_channel=True
    )
    calibration = {"method": CALIBRATION_METHOD, **info}
    quantization = {
        "format": "QDQ",
        "per_channel": True,
        "weights": "int8 (symmetric)",
        "activations": "uint8",
        "calibration": calibration,
    }
    set_metadata(proto, {**metadata, "precision": "int8", "quantization": quantization})
    gates.check_graph(proto, out, "int8")

    got = OnnxClassifier(proto.SerializeToString(), device="cpu", batch_size=batch_size).logits(
        images.numpy()
    )
    parity = gates.compare_logits(
        got, logits, min_agreement=gates.MIN_INT8_AGREEMENT, against="fp32"
    )
    correct, correct32 = (
        int((got.argmax(1) == labels).sum()),
        int((logits.argmax(1) == labels).sum()),
    )
    acc, acc32 = correct / len(labels), correct32 / len(labels)
    figures = {
        "n_images": len(labels),
        "top1_agreement_with_fp32": parity.top1_agreement,
        "disagreements": parity.disagreements,
        "onnx_accuracy": acc,
        "fp32_onnx_accuracy": acc32,
        "accuracy_diff_vs_fp32": acc - acc32,
        "max_abs_logit_diff_vs_fp32": parity.max_abs_diff,
        "thresholds": {
            "min_top1_agreement_with_fp32": gates.MIN_INT8_AGREEMENT,
            "max_abs_accuracy_diff_vs_fp32": gates.MAX_INT8_ACCURACY_DIFF,
        },
        "quantization": quantization,
    }
    failures = list(parity.failures)
    if not gates.accuracy_gap_allowed(correct, correct32, len(labels)):
        failures.append(
            f"test accuracy {acc:.2%} vs fp32 {acc32:.2%}: differs by more than "
            f"{100 * gates.MAX_INT8_ACCURACY_DIFF:.1f} points"
        )
    gates.gate("int8 parity", failures, out)
    set_metadata(
        proto,
        {**metadata, "precision": "int8", "quantization": quantization, "test_accuracy": acc},
    )
    return proto.SerializeToString(), figures
