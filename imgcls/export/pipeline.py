"""Export: a checkpoint (``imgcls.checkpoint``) becomes a verified ONNX model for the
torch-free runtime (``imgcls.deploy.classifier``). ``export_checkpoint`` rebuilds the net from the
checkpoint alone (``load_classifier``), exports it with the dynamo-based
``torch.onnx.export`` (opset pinned, batch axis dynamic) and lets it land only if it passes
the gate:

1. ``onnx.checker.check_model(full_check=True)``;
2. parity with the PyTorch model over the official test set (all 10,000 images unless a
   subset is asked for), run through the serving runtime (``imgcls.deploy.classifier``, onnxruntime
   on the CPU): largest |Δlogit| <= 1e-4 and top-1 agreement 100 %;
3. with ``fp16=True``, ``model.fp16.onnx`` (float16 weights, float32 inputs and outputs)
   must agree on the top-1 class with the fp32 model on >= 99.9 % of those images;
3b. with ``int8=True``, ``model.int8.onnx`` (``imgcls.export.int8``: static QDQ, per-channel
   int8 weights, uint8 activations, calibrated on validation images, never test images)
   must agree on the top-1 class with the fp32 model on >= 99.5 % of those images and have
   its test accuracy within 0.2 points of the fp32 model's;
4. for a net with conv layers (unless ``features=False``), ``model.features.onnx``: the same
   graph with the feature maps as extra outputs ``fmap_0``, ``fmap_1``, ... (see
   ``FeatureMapClassifier``). It must pass the checker, give model.onnx's logits on the
   parity images (same thresholds), and give the PyTorch feature maps on a few of them.
   ``model.onnx`` itself is exported without them, so it stays what the runtime serves.

Decision: normalisation is baked into the graph. The ONNX input ``pixels`` is float32 in
[0, 1], shape (N, C, H, W); the graph computes ``(pixels - mean) / std`` then the net, and
returns ``logits`` and ``probabilities``. The metadata says ``"normalization": "in_graph"``
and the runtime converts uint8 images to [0, 1] itself and refuses anything outside [0, 1],
so nobody can feed the model un-normalised, or twice-normalised, pixels by mistake.

Everything is written into a temp folder beside the target, and that folder replaces the
target only after the gate passed: a failed export leaves the previous good one untouched
and no partial file anywhere. The temp folder's name carries the pid of the process that
made it (``.<name>.<pid>.<random>.tmp``), so that the next export into the same parent can
remove the ones a killed export left behind.

References: timm ``utils/onnx.py`` (dynamic batch, checker, onnxruntime comparison);
https://pytorch.org/docs/stable/onnx_dynamo.html.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

import imgcls
from imgcls.checkpoint import load_checkpoint, load_classifier
from imgcls.deploy import metadata as schema
from imgcls.deploy.classifier import OnnxClassifier
from imgcls.errors import ConfigError, ExportError, GateError
from imgcls.export.model_card import (
    SHIFT_IMAGES,
    is_model_card,
    model_card,
    per_class_accuracy,
    shift_accuracy,
)
from imgcls.insight import probe
from imgcls.runs import run_of
from imgcls.utils import check_writable_folder, sha256_file

__all__ = [
    "ARTIFACTS",
    "MAX_ABS_LOGIT_DIFF",
    "MIN_FP16_AGREEMENT",
    "MIN_INT8_AGREEMENT",
    "OPSET",
    "ExportError",
    "ExportResult",
    "FeatureMapClassifier",
    "GateError",
    "PixelClassifier",
    "default_export_dir",
    "export_checkpoint",
    "feature_outputs",
    "reference_logits",
    "to_features_onnx",
    "to_onnx",
]

OPSET = 18  # pinned: the dynamo exporter's native opset, run by onnxruntime >= 1.14 and TensorRT 10
INPUT_NAME = schema.INPUT_NAME
OUTPUT_NAMES = schema.OUTPUT_NAMES
EXAMPLE_BATCH = 4  # > 1, so that torch.export does not specialise the batch axis to 1
MAX_ABS_LOGIT_DIFF = 1e-4  # fp32 gate: largest |logit_onnx - logit_torch| over the test set
MIN_FP32_AGREEMENT = 1.0  # fp32 gate: top-1 agreement with the PyTorch model
MIN_FP16_AGREEMENT = 0.999  # fp16 gate: top-1 agreement with the fp32 ONNX model
INT8_FILE = "model.int8.onnx"
MIN_INT8_AGREEMENT = 0.995  # int8 gate: top-1 agreement with the fp32 ONNX model
MAX_INT8_ACCURACY_DIFF = 0.002  # int8 gate: |accuracy_int8 - accuracy_fp32| (0.2 points)
FEATURES_FILE = "model.features.onnx"
FMAP_PREFIX = "fmap_"
MAX_ABS_FMAP_DIFF = 1e-4  # features gate: largest |map_onnx - map_torch| on FMAP_CHECK_IMAGES
FMAP_CHECK_IMAGES = 16
ARTIFACTS = (
    "model.onnx",
    "model.fp16.onnx",
    INT8_FILE,
    FEATURES_FILE,
    "metadata.json",
    "parity.json",
)
EXPORT_ROOT = Path("export")
STALE_AFTER_S = 3600  # a staged folder this old is left over even if its pid is alive again
# .<name>.<pid>.<random>.tmp, or .<name>.<random>.tmp (no pid) from earlier versions
_STAGED = re.compile(r"^\..+?\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp$")


# ----------------------------------------------------------------------------- the graph
class PixelClassifier(nn.Module):
    """What the ONNX graph computes: float pixels in [0, 1] -> (logits, probabilities).

    Normalisation lives here, inside the graph, with the training set's mean and std.
    """

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net = net
        self.mean, self.std = float(mean), float(std)

    def forward(
        self, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:  # (N, C, H, W) in [0, 1]
        logits = self.net(
            (pixels - self.mean) / self.std
        )  # (N, K); same ops as data.transforms.normalize
        return logits, torch.softmax(logits, dim=1)


class FeatureMapClassifier(PixelClassifier):
    """``PixelClassifier`` that also returns the outputs of ``taps`` (modules inside ``net``):
    pixels -> (logits, probabilities, map_0, map_1, ...), each map (N, C_k, H_k, W_k).

    Forward hooks on the taps keep each one's first output of the forward pass. The hooks
    stay on ``net`` until ``remove_hooks`` (or the end of a ``with`` block).
    """

    def __init__(self, net: nn.Module, mean: float, std: float, taps: Sequence[nn.Module]) -> None:
        super().__init__(net, mean, std)
        self.n_taps = len(taps)
        self._maps: list[torch.Tensor | None] | None = None
        self._hooks = [
            tap.register_forward_hook(lambda mod, args, out, i=i: self._keep(i, out))
            for i, tap in enumerate(taps)
        ]

    def _keep(self, i: int, out: torch.Tensor) -> None:
        if self._maps is not None and self._maps[i] is None:
            self._maps[i] = out

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        self._maps = [None] * self.n_taps
        try:
            logits, probs = super().forward(pixels)
            maps = self._maps
        finally:
            self._maps = None
        missing = [i for i, m in enumerate(maps) if m is None]
        if missing:
            raise ExportError(f"feature taps {missing} were not reached by the forward pass")
        return (logits, probs, *(m for m in maps if m is not None))

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def __enter__(self) -> FeatureMapClassifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove_hooks()


def feature_outputs(
    net: nn.Module, input_shape: tuple[int, int, int]
) -> list[tuple[str, str, nn.Module, tuple[int, int, int]]]:
    """The feature-map taps of ``net`` (``probe.feature_taps``, pools included) in the order
    the forward pass reaches them, each with its map's shape (C, H, W):
    [(label, kind, module, shape)]. Empty for a net without conv layers.

    Raises:
        ExportError: a tap does not output a 4-D map.
    """
    if not probe.conv_layers(net):
        return []
    taps = probe.feature_taps(net, pools=True)
    first: dict[int, tuple[int, tuple[int, ...]]] = {}  # tap index -> (firing rank, shape)

    def record(i: int, out: object) -> None:
        if i not in first:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
            first[i] = (len(first), shape)

    hooks = [
        m.register_forward_hook(lambda mod, args, out, i=i: record(i, out))
        for i, (_, _, m) in enumerate(taps)
    ]
    was_training = net.training
    try:
        net.eval()
        with torch.inference_mode():
            net(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    found = []
    for i, (label, kind, module) in enumerate(taps):
        if i not in first:
            raise ExportError(f"the feature tap {label} is not reached by the forward pass")
        rank, shape = first[i]
        if len(shape) != 4:
            raise ExportError(f"the feature tap {label} outputs shape {shape}, not (N, C, H, W)")
        found.append((rank, label, kind, module, (shape[1], shape[2], shape[3])))
    return [
        (label, kind, m, shape) for _, label, kind, m, shape in sorted(found, key=lambda t: t[0])
    ]


def _export_graph(
    wrapper: nn.Module,
    input_shape: tuple[int, int, int],
    output_names: Sequence[str],
    opset: int,
) -> onnx.ModelProto:
    """The dynamo-based ``torch.onnx.export`` of ``wrapper`` (pixels -> ``output_names``) with
    a dynamic batch axis, checked for its names, opset and dynamic batch.

    Raises:
        ExportError: the exporter failed, or the graph lost its names or its dynamic batch.
    """
    example = torch.rand(EXAMPLE_BATCH, *input_shape)
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            dynamic_shapes={"pixels": {0: batch}},
            external_data=False,
            verbose=False,
        )
    except (
        Exception
    ) as e:  # the exporter raises many types (torch.export, onnxscript); say which stage failed
        raise ExportError(
            f"torch.onnx.export failed for opset {opset}: {type(e).__name__}: {str(e)[:500]}"
        ) from e
    assert program is not None  # dynamo=True always returns an ONNXProgram
    proto = program.model_proto
    names = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
    if names != ([INPUT_NAME], list(output_names)):
        raise ExportError(
            f"exported graph has inputs/outputs {names}, expected {INPUT_NAME} -> "
            f"{tuple(output_names)}"
        )
    actual = {o.domain: o.version for o in proto.opset_import}.get("")
    if actual != opset:
        raise ExportError(f"asked for opset {opset} but the exporter produced opset {actual}")
    if not proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param:
        raise ExportError(
            "the exported graph has a fixed batch size; the batch axis must stay dynamic"
        )
    return proto


def to_onnx(
    net: nn.Module, mean: float, std: float, input_shape: tuple[int, int, int], opset: int = OPSET
) -> onnx.ModelProto:
    """Export ``net`` (in eval mode) wrapped in ``PixelClassifier`` with a dynamic batch axis.

    Raises:
        ExportError: the exporter failed, or the graph lost its names or its dynamic batch.
    """
    return _export_graph(PixelClassifier(net, mean, std).eval(), input_shape, OUTPUT_NAMES, opset)


def to_features_onnx(
    net: nn.Module,
    mean: float,
    std: float,
    input_shape: tuple[int, int, int],
    taps: Sequence[nn.Module],
    opset: int = OPSET,
) -> onnx.ModelProto:
    """Export ``net`` wrapped in ``FeatureMapClassifier``: outputs ``logits``,
    ``probabilities``, then ``fmap_<k>`` the output of ``taps[k]``, all with a dynamic batch.

    Raises:
        ExportError: the exporter failed, or the graph lost its names or its dynamic batch.
    """
    names = [*OUTPUT_NAMES, *(f"{FMAP_PREFIX}{k}" for k in range(len(taps)))]
    with FeatureMapClassifier(net, mean, std, taps) as wrapper:
        return _export_graph(wrapper.eval(), input_shape, names, opset)


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """float16 weights and activations, float32 inputs and outputs kept (``keep_io_types``)."""
    import onnx_ir as ir
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(proto, keep_io_types=True)
    # The converter appends its input Casts at the end of the node list; the checker wants
    # topological order, which onnx_ir restores.
    model = ir.serde.deserialize_model(half)
    model.graph.sort()
    return ir.serde.serialize_model(model)


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, Any]) -> None:
    """Replace ``proto.metadata_props`` with ``metadata``, one key per entry, values
    JSON-encoded."""
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, schema.encode(metadata))


# ----------------------------------------------------------------------------- parity
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


def _val_scores(ckpt: dict[str, Any], path: Path) -> dict[str, float | None]:
    """val/acc of this checkpoint's weights and the run's best, from the ModelCheckpoint state."""
    val_acc = best = None
    for state in (ckpt.get("callbacks") or {}).values():
        if not isinstance(state, dict) or state.get("monitor") != "val/acc":
            continue
        if state.get("best_model_score") is not None:
            best = float(state["best_model_score"])
        for stored, score in (state.get("best_k_models") or {}).items():
            if (
                Path(stored).name == path.name and score is not None
            ):  # paths are relative to the run's cwd
                val_acc = float(score)
    return {"val_acc": val_acc, "best_val_acc": best}


# ----------------------------------------------------------------------------- where
def default_export_dir(ckpt_path: str | os.PathLike[str], dataset: str, net: str) -> Path:
    """``export/<experiment>-<version>`` (``-last`` etc. appended for other than best.ckpt).

    ``runs/mnist-lenet5/version_0/checkpoints/best.ckpt`` -> ``export/mnist-lenet5-version_0``;
    a checkpoint outside a run directory gives ``export/<dataset>-<net>-<file stem>``.
    """
    path = Path(ckpt_path)
    suffix = "" if path.stem == "best" else f"-{path.stem}"
    run = run_of(path.resolve())
    if run is not None:
        return EXPORT_ROOT / f"{run.parent.name}-{run.name}{suffix}"
    return EXPORT_ROOT / f"{dataset}-{net}-{path.stem}"


# ----------------------------------------------------------------------------- atomic placement
def _check_replaceable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; pass another --out")
    if out.is_dir():
        foreign = sorted(
            p.name
            for p in out.iterdir()
            if p.name not in ARTIFACTS and not (p.name == "README.md" and is_model_card(p))
        )
        if foreign:
            raise ExportError(
                f"{out} holds files that are not part of an imgcls export "
                f"({', '.join(foreign[:5])}); "
                "it would be replaced as a whole: pass a new or empty --out folder"
            )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def _remove_stale_staged(parent: Path, log: Callable[[str], None]) -> None:
    """Remove the staged folders that killed exports left in ``parent``.

    A staged folder is stale when the process named in it is gone, or when it is older than
    ``STALE_AFTER_S`` (the pid may have been reused, or the name has no pid).
    """
    if not parent.is_dir():
        return
    now = time.time()
    for entry in parent.iterdir():
        match = _STAGED.match(entry.name)
        if match is None or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            age = now - entry.stat().st_mtime
        except FileNotFoundError:  # removed meanwhile by the export that made it
            continue
        pid = match["pid"]
        if age > STALE_AFTER_S or (pid is not None and not _pid_alive(int(pid))):
            log(f"removing {entry}, left behind by an export that did not finish")
            shutil.rmtree(entry, ignore_errors=True)


def _write_durable(path: Path, data: bytes) -> None:
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


def _swap_into_place(staged: Path, out: Path) -> None:
    """Put the folder ``staged`` at ``out``, replacing a previous export there."""
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


# ----------------------------------------------------------------------------- the export
@dataclass
class ExportResult:
    out_dir: Path
    files: list[Path]
    metadata: dict[str, Any]
    parity: dict[str, Any] = field(default_factory=dict)


def accuracy_gap_allowed(correct: int, correct_fp32: int, n: int) -> bool:
    """Whether int8's accuracy is within ``MAX_INT8_ACCURACY_DIFF`` of fp32's, counted in whole
    images, so that a gap of exactly the limit passes: as fractions, 1869/2000 - 1865/2000 is
    0.0020000000000000018, above 0.002."""
    return abs(correct - correct_fp32) <= MAX_INT8_ACCURACY_DIFF * n + 1e-9


def _gate(stage: str, failures: list[str], out: Path) -> None:
    if failures:
        where = (
            "the previous export in " + str(out) + " is untouched"
            if out.exists()
            else str(out) + " was not created"
        )
        raise GateError(
            f"{stage} gate failed: {'; '.join(failures)}. Nothing was written; {where}."
        )


def export_checkpoint(
    ckpt_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    fp16: bool = False,
    int8: bool = False,
    calibration_images: int = 1000,
    features: bool = True,
    opset: int = OPSET,
    data_dir: str | os.PathLike[str] | None = None,
    parity_subset: int | None = None,
    batch_size: int = 1000,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Export a checkpoint to ``out_dir`` (default ``export/<run-name>``) through the gate.

    Writes ``model.onnx``, ``metadata.json``, ``parity.json``, the model card ``README.md``
    (``imgcls.export.model_card``) (and ``model.fp16.onnx`` with
    ``fp16``, ``model.features.onnx`` with ``features`` for a net with conv layers) into a
    temp folder beside ``out_dir`` that replaces it only after every check passed.

    Args:
        ckpt_path: a Lightning checkpoint of an ``ImageClassifier``.
        out_dir: target folder; a previous export there is replaced as a whole.
        fp16: also write and gate ``model.fp16.onnx``.
        int8: also write and gate ``model.int8.onnx`` (static int8 QDQ, ``imgcls.export.int8``).
        calibration_images: with ``int8``, calibrate on this many images of the validation
            split the checkpoint's training run used (training images if it had none).
        features: also write and gate ``model.features.onnx`` (the feature maps of each conv
            and pooling layer as extra outputs); skipped, with a log line, for a net without
            conv layers.
        opset: ONNX opset (default pinned ``OPSET``).
        data_dir: data root holding the test set (default ``$IMGCLS_DATA`` / ``~/.cache``).
        parity_subset: check parity on the first N test images only (for tests); default all.
        batch_size: images per batch during parity.
        log: progress messages.

    Raises:
        CheckpointError: the checkpoint is missing, damaged or not an imgcls checkpoint.
        DataError: the test set is missing or corrupted (``imgcls data fetch``).
        ExportError: the exporter failed, or ``out_dir`` holds foreign files.
        GateError: the checker or a parity check failed (nothing written).
    """
    from imgcls.data import get_datamodule

    ckpt_path = Path(ckpt_path)
    ckpt = load_checkpoint(ckpt_path)
    model = load_classifier(ckpt_path)
    hp = model.hparams
    out = (
        Path(out_dir) if out_dir is not None else default_export_dir(ckpt_path, hp.dataset, hp.net)
    )
    _check_replaceable(out)
    check_writable_folder(out.parent)  # the staged folder goes beside `out`
    _remove_stale_staged(out.parent, log)
    if parity_subset is not None and parity_subset < 1:
        raise ConfigError(f"--parity_subset must be >= 1, got {parity_subset}")
    if int8 and calibration_images < 1:
        raise ConfigError(f"--calibration_images must be >= 1, got {calibration_images}")

    dm = get_datamodule(  # only the test set is read: no validation split to carve out
        hp.dataset, data_dir=str(data_dir) if data_dir is not None else None, val_size=0
    )
    dm.setup("test")
    assert dm.test_set is not None
    images, labels = dm.test_set.images.cpu(), dm.test_set.labels.cpu()
    shape = (int(hp.in_channels), int(hp.image_size), int(hp.image_size))
    if tuple(images.shape[1:]) != shape:
        raise ExportError(
            f"{ckpt_path}: the model takes {shape} images but the {hp.dataset} test set has "
            f"{tuple(images.shape[1:])}"
        )
    if parity_subset is not None:
        images, labels = images[:parity_subset], labels[:parity_subset]
    n = len(labels)
    y = labels.numpy()

    log(f"exporting {hp.net} ({ckpt_path}) to ONNX opset {opset}")
    proto = to_onnx(model.net, hp.mean, hp.std, shape, opset)
    metadata = schema.model_metadata(
        dataset=hp.dataset,
        class_names=list(model.class_names),
        input_shape=shape,
        mean=hp.mean,
        std=hp.std,
        net=hp.net,
        net_args=dict(hp.net_args or {}),
        checkpoint={
            "path": str(ckpt_path),
            "sha256": sha256_file(ckpt_path),
            "epoch": ckpt.get("epoch"),
            "global_step": ckpt.get("global_step"),
            **_val_scores(ckpt, ckpt_path),
        },
        test_images=n,
        opset=opset,
        versions={
            "imgcls": imgcls.__version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": _ort_version(),
        },
    )
    set_metadata(proto, metadata)

    # Gate 1: the checker.
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        _gate("onnx.checker", [str(e).splitlines()[0][:300]], out)

    # Gate 2: parity with PyTorch, through the serving runtime (uint8 -> [0, 1] done there).
    log(f"parity on {n} test images (PyTorch vs onnxruntime CPU)")
    ref = reference_logits(model, images, hp.mean, hp.std, batch_size)
    session = OnnxClassifier(proto.SerializeToString(), device="cpu", batch_size=batch_size)
    got = session.logits(images.numpy())
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))  # (N, K)
    max_diff, agree = float(diff.max()), float((got.argmax(1) == ref.argmax(1)).mean())
    fp32 = {
        "max_abs_logit_diff": max_diff,
        "mean_abs_logit_diff": float(diff.mean()),
        "top1_agreement": agree,
        "disagreements": int((got.argmax(1) != ref.argmax(1)).sum()),
        "torch_accuracy": float((ref.argmax(1) == y).mean()),
        "onnx_accuracy": float((got.argmax(1) == y).mean()),
        "thresholds": {
            "max_abs_logit_diff": MAX_ABS_LOGIT_DIFF,
            "min_top1_agreement": MIN_FP32_AGREEMENT,
        },
    }
    failures = []
    if not max_diff <= MAX_ABS_LOGIT_DIFF:  # written so that NaN fails too
        failures.append(f"max |Δlogit| {max_diff:.3g} > {MAX_ABS_LOGIT_DIFF}")
    if agree < MIN_FP32_AGREEMENT:
        failures.append(
            f"top-1 agreement {agree:.4%} < {MIN_FP32_AGREEMENT:.0%} "
            f"({fp32['disagreements']} images differ)"
        )
    _gate("fp32 parity", failures, out)
    metadata["test_accuracy"] = fp32["onnx_accuracy"]
    set_metadata(proto, metadata)
    blobs = {"model.onnx": proto.SerializeToString()}

    parity: dict[str, Any] = {
        "n_images": n,
        "full_test_set": parity_subset is None or n == len(dm.test_set.labels),
        "dataset": hp.dataset,
        "provider": "CPUExecutionProvider",
        "fp32": fp32,
        "test_set_images": len(dm.test_set.labels),
        # for the model card: model.onnx's own predictions, per class and on shifted images
        "per_class": per_class_accuracy(got.argmax(1), y, list(model.class_names)),
    }
    log(f"accuracy on the first {min(n, SHIFT_IMAGES)} test images shifted by 1-3 px")
    parity["shift"] = shift_accuracy(
        lambda x: session.logits(x).argmax(1), images[:SHIFT_IMAGES].numpy(), y[:SHIFT_IMAGES]
    )

    if fp16:
        log("converting to fp16 (fp32 inputs and outputs kept)")
        half = to_fp16(proto)
        try:
            onnx.checker.check_model(half, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
            _gate("onnx.checker (fp16)", [str(e).splitlines()[0][:300]], out)
        got16 = OnnxClassifier(
            half.SerializeToString(), device="cpu", batch_size=batch_size
        ).logits(images.numpy())
        agree16 = float((got16.argmax(1) == got.argmax(1)).mean())
        parity["fp16"] = {
            "top1_agreement_with_fp32": agree16,
            "disagreements": int((got16.argmax(1) != got.argmax(1)).sum()),
            "max_abs_logit_diff_vs_fp32": float(np.abs(got16 - got).max()),
            "onnx_accuracy": float((got16.argmax(1) == y).mean()),
            "thresholds": {"min_top1_agreement_with_fp32": MIN_FP16_AGREEMENT},
        }
        _gate(
            "fp16 parity",
            [f"top-1 agreement with fp32 {agree16:.4%} < {MIN_FP16_AGREEMENT:.1%}"]
            if agree16 < MIN_FP16_AGREEMENT
            else [],
            out,
        )
        set_metadata(
            half,
            {**metadata, "precision": "fp16", "test_accuracy": parity["fp16"]["onnx_accuracy"]},
        )
        blobs["model.fp16.onnx"] = half.SerializeToString()

    if int8:
        int8_blob, parity["int8"] = _int8_model(
            ckpt,
            hp.dataset,
            blobs["model.onnx"],
            metadata,
            images,
            got,
            y,
            calibration_images,
            str(data_dir) if data_dir is not None else None,
            batch_size,
            out,
            log,
        )
        blobs[INT8_FILE] = int8_blob

    if features:
        features_blob, parity_features = _features_model(
            model.net,
            float(hp.mean),
            float(hp.std),
            shape,
            opset,
            metadata,
            blobs["model.onnx"],
            images,
            got,
            batch_size,
            out,
            log,
        )
        if features_blob is not None:
            blobs[FEATURES_FILE] = features_blob
            parity["features"] = parity_features

    parity["model_sha256"] = {name: hashlib.sha256(b).hexdigest() for name, b in blobs.items()}
    parity["passed"] = True
    blobs["metadata.json"] = (json.dumps(metadata, indent=2) + "\n").encode()
    blobs["parity.json"] = (json.dumps(parity, indent=2) + "\n").encode()
    n_params = sum(p.numel() for p in model.net.parameters())
    card = model_card(metadata, parity, ckpt, out=out, n_params=n_params)
    blobs["README.md"] = card.encode()

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(
            tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.parent)
        )
    except OSError as e:
        raise _placement_error(e, out) from e
    try:
        try:
            for name, data in blobs.items():
                _write_durable(staged / name, data)
        except OSError as e:
            raise _placement_error(e, out) from e
        for name in blobs:  # the files as written
            if name.endswith(".onnx") and name != "model.fp16.onnx":
                onnx.checker.check_model(str(staged / name), full_check=True)
        os.chmod(staged, 0o777 & ~_umask())
        _swap_into_place(staged, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staged)
    log(f"wrote {out}: " + ", ".join(blobs))
    return ExportResult(out, [out / name for name in blobs], metadata, parity)


def _int8_model(
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
    from ``imgcls.export.int8.calibration_set`` (the validation split), never from ``images``.
    """
    import imgcls.export.int8 as quantize_mod

    calib, info = quantize_mod.calibration_set(ckpt, dataset, n_calibration, data_dir)
    log(
        f"quantizing to int8 (static QDQ, per-channel; {quantize_mod.CALIBRATION_METHOD} "
        f"calibration on {info['images']} {info['split']} images)"
    )
    proto = quantize_mod.quantize_static_qdq(
        model_bytes, calib.astype(np.float32) / np.float32(255.0), per_channel=True
    )
    calibration = {"method": quantize_mod.CALIBRATION_METHOD, **info}
    quantization = {
        "format": "QDQ",
        "per_channel": True,
        "weights": "int8 (symmetric)",
        "activations": "uint8",
        "calibration": calibration,
    }
    set_metadata(proto, {**metadata, "precision": "int8", "quantization": quantization})
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        _gate("onnx.checker (int8)", [str(e).splitlines()[0][:300]], out)

    got = OnnxClassifier(proto.SerializeToString(), device="cpu", batch_size=batch_size).logits(
        images.numpy()
    )
    agree = float((got.argmax(1) == logits.argmax(1)).mean())
    correct, correct32 = (
        int((got.argmax(1) == labels).sum()),
        int((logits.argmax(1) == labels).sum()),
    )
    acc, acc32 = correct / len(labels), correct32 / len(labels)
    figures = {
        "n_images": len(labels),
        "top1_agreement_with_fp32": agree,
        "disagreements": int((got.argmax(1) != logits.argmax(1)).sum()),
        "onnx_accuracy": acc,
        "fp32_onnx_accuracy": acc32,
        "accuracy_diff_vs_fp32": acc - acc32,
        "max_abs_logit_diff_vs_fp32": float(np.abs(got - logits).max()),
        "thresholds": {
            "min_top1_agreement_with_fp32": MIN_INT8_AGREEMENT,
            "max_abs_accuracy_diff_vs_fp32": MAX_INT8_ACCURACY_DIFF,
        },
        "quantization": quantization,
    }
    failures = []
    if not agree >= MIN_INT8_AGREEMENT:
        failures.append(
            f"top-1 agreement with fp32 {agree:.4%} < {MIN_INT8_AGREEMENT:.1%} "
            f"({figures['disagreements']} images differ)"
        )
    if not accuracy_gap_allowed(correct, correct32, len(labels)):
        failures.append(
            f"test accuracy {acc:.2%} vs fp32 {acc32:.2%}: differs by more than "
            f"{100 * MAX_INT8_ACCURACY_DIFF:.1f} points"
        )
    _gate("int8 parity", failures, out)
    set_metadata(
        proto,
        {**metadata, "precision": "int8", "quantization": quantization, "test_accuracy": acc},
    )
    return proto.SerializeToString(), figures


def _features_model(
    net: nn.Module,
    mean: float,
    std: float,
    shape: tuple[int, int, int],
    opset: int,
    metadata: dict[str, Any],
    model_bytes: bytes,
    images: torch.Tensor,
    logits: np.ndarray,
    batch_size: int,
    out: Path,
    log: Callable[[str], None],
) -> tuple[bytes | None, dict[str, Any]]:
    """``model.features.onnx`` through its gate, and its parity figures; (None, {}) for a net
    without conv layers.

    ``logits`` are model.onnx's on ``images``: the features graph must give the same, so the
    gate needs no second PyTorch pass over the test set; the maps themselves are compared
    with the PyTorch hooks on the first ``FMAP_CHECK_IMAGES`` images.
    """
    outs = feature_outputs(net, shape)
    if not outs:
        log(
            f"no {FEATURES_FILE}: this {type(net).__name__} has no convolutional layers, "
            "so it has no feature maps"
        )
        return None, {}
    log(f"exporting {FEATURES_FILE} ({len(outs)} feature maps as extra outputs)")
    taps = [m for _, _, m, _ in outs]
    proto = to_features_onnx(net, mean, std, shape, taps, opset)
    feature_maps = [
        {"output": f"{FMAP_PREFIX}{k}", "label": label, "kind": kind, "shape": list(s)}
        for k, (label, kind, _, s) in enumerate(outs)
    ]
    set_metadata(
        proto,
        {
            **metadata,
            "feature_maps": feature_maps,
            "features_of": hashlib.sha256(model_bytes).hexdigest(),
        },
    )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        _gate("onnx.checker (features)", [str(e).splitlines()[0][:300]], out)

    failures = []
    for fm, value in zip(feature_maps, proto.graph.output[len(OUTPUT_NAMES) :], strict=True):
        t = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
        if t.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4 or dims[1:] != fm["shape"]:
            failures.append(f"graph output {fm['output']} is {dims}, metadata says {fm['shape']}")
    blob = proto.SerializeToString()
    session = OnnxClassifier(blob, device="cpu", batch_size=batch_size)
    got = session.logits(images.numpy())
    diff = np.abs(got.astype(np.float64) - logits.astype(np.float64))
    max_diff, agree = float(diff.max()), float((got.argmax(1) == logits.argmax(1)).mean())

    pixels = session.to_pixels(images[:FMAP_CHECK_IMAGES].numpy())
    onnx_maps = session.session.run(None, {INPUT_NAME: pixels})[len(OUTPUT_NAMES) :]
    with FeatureMapClassifier(net, mean, std, taps) as wrapper, torch.inference_mode():
        torch_maps = [t.float().numpy() for t in wrapper.eval()(torch.from_numpy(pixels))[2:]]
    fmap_diff = 0.0
    for fm, got_map, ref_map in zip(feature_maps, onnx_maps, torch_maps, strict=True):
        expected = (len(pixels), *fm["shape"])
        if got_map.shape != expected or ref_map.shape != expected:
            failures.append(
                f"{fm['output']} has shape {got_map.shape} (PyTorch {ref_map.shape}), "
                f"metadata says {expected}"
            )
            continue
        fmap_diff = max(fmap_diff, float(np.abs(got_map.astype(np.float64) - ref_map).max()))
    figures = {
        "n_images": len(logits),
        "outputs": [fm["output"] for fm in feature_maps],
        "max_abs_logit_diff_vs_fp32": max_diff,
        "top1_agreement_with_fp32": agree,
        "disagreements": int((got.argmax(1) != logits.argmax(1)).sum()),
        "fmap_images": len(pixels),
        "max_abs_fmap_diff_vs_torch": fmap_diff,
        "thresholds": {
            "max_abs_logit_diff_vs_fp32": MAX_ABS_LOGIT_DIFF,
            "min_top1_agreement_with_fp32": MIN_FP32_AGREEMENT,
            "max_abs_fmap_diff_vs_torch": MAX_ABS_FMAP_DIFF,
        },
    }
    if not max_diff <= MAX_ABS_LOGIT_DIFF:  # written so that NaN fails too
        failures.append(f"max |Δlogit| vs model.onnx {max_diff:.3g} > {MAX_ABS_LOGIT_DIFF}")
    if agree < MIN_FP32_AGREEMENT:
        failures.append(
            f"top-1 agreement with model.onnx {agree:.4%} < {MIN_FP32_AGREEMENT:.0%} "
            f"({figures['disagreements']} images differ)"
        )
    if not fmap_diff <= MAX_ABS_FMAP_DIFF:
        failures.append(f"max |Δfeature map| vs PyTorch {fmap_diff:.3g} > {MAX_ABS_FMAP_DIFF}")
    _gate("features parity", failures, out)
    return blob, figures


def _placement_error(e: OSError, out: Path) -> ExportError:
    """What a failed write of the staged folder means to the user; the caller removes the
    staged folder before the error leaves ``export_checkpoint``."""
    kept = (
        f"the previous export in {out} is untouched" if out.exists() else f"{out} was not created"
    )
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ExportError(
            f"the disk holding {out.parent} is full (no space left, or over quota): the export "
            f"could not be written; nothing was lost: {kept}. Free some space, or pass --out "
            "on another disk, and export again"
        )
    return ExportError(
        f"cannot write the export beside {out}: {e.strerror or e} "
        f"({e.filename or out.parent}); nothing was lost: {kept}. Pass --out with a writable "
        "folder"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)
