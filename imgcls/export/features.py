"""``model.features.onnx``: the exported graph with the feature maps of each conv and
pooling layer as extra outputs ``fmap_0``, ``fmap_1``, ... (``FeatureMapClassifier``), for a
net with conv layers. Which modules are tapped is ``imgcls.models.taps.feature_taps``'
business, in the order the forward pass reaches them.

Its gate: the checker, the output shapes the metadata names, model.onnx's logits on the parity
images (model.onnx's thresholds), and the PyTorch feature maps on the first
``FMAP_CHECK_IMAGES`` of them. ``model.onnx`` itself is exported without the maps, so it stays
what the runtime serves.

An ensemble's features graph is its first member alone (``ANSWER_OF: MEMBER_ANSWER`` in its
metadata), not the whole ensemble with one member's maps: the page draws one member's layers
anyway, and carrying every member again would double the files and the page's work for each
map. Its logits are that member's, gated against the member's PyTorch log-probabilities; a
client takes the answer from model.onnx and only the maps from this graph.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from imgcls.deploy.classifier import OnnxClassifier
from imgcls.deploy.metadata import ANSWER_OF, MEMBER_ANSWER
from imgcls.errors import ExportError
from imgcls.export import gates
from imgcls.export.graph import (
    FMAP_PREFIX,
    OUTPUT_NAMES,
    FeatureMapClassifier,
    set_metadata,
    to_features_onnx,
)
from imgcls.models.taps import Hook, conv_layers, feature_taps, probe

__all__ = ["FEATURES_FILE", "FMAP_CHECK_IMAGES", "feature_outputs", "features_model"]

FEATURES_FILE = "model.features.onnx"
FMAP_CHECK_IMAGES = 16  # the maps are compared with PyTorch's on this many parity images


def feature_outputs(
    net: nn.Module, input_shape: tuple[int, int, int]
) -> list[tuple[str, str, nn.Module, tuple[int, int, int]]]:
    """The feature-map taps of ``net`` (``imgcls.models.taps.feature_taps``, pools
    included) in the order
    the forward pass reaches them, each with its map's shape (C, H, W):
    [(label, kind, module, shape)]. Empty for a net without conv layers.

    Raises:
        ExportError: a tap does not output a 4-D map.
    """
    if not conv_layers(net):
        return []
    taps = feature_taps(net, pools=True)
    first: dict[int, tuple[int, tuple[int, ...]]] = {}  # tap index -> (firing rank, shape)

    def record(i: int, out: object) -> None:
        if i not in first:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
            first[i] = (len(first), shape)

    def recorder(i: int) -> Hook:
        return lambda mod, args, out: record(i, out)

    probe(net, input_shape, [(m, recorder(i)) for i, (_, _, m) in enumerate(taps)])
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


def features_model(
    *,
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
    label_prefix: str = "",
    member_log_probs: np.ndarray | None = None,
) -> tuple[bytes | None, dict[str, Any]]:
    """``model.features.onnx`` through its gate, and its parity figures; (None, {}) for a net
    without conv layers.

    ``logits`` are model.onnx's on ``images``: the features graph must give the same, so the
    gate needs no second PyTorch pass over the test set; the maps themselves are compared
    with the PyTorch hooks on the first ``FMAP_CHECK_IMAGES`` images.

    ``label_prefix``: put before each map's label, where ``net`` sits inside the exported
    model under that name (an ensemble's first member: ``members.0.``), so that the labels
    name the layers of model.onnx.

    ``member_log_probs``: ``net`` is an ensemble's first member, exported alone; its
    log-probabilities in PyTorch on ``images`` (N, K) are what the graph's logits are gated
    against (after a log-softmax), and the metadata says the answer is the member's
    (``ANSWER_OF``). ``logits`` (the ensemble's) are then not used.
    """
    outs = [(label_prefix + label, kind, m, s) for label, kind, m, s in feature_outputs(net, shape)]
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
            **({ANSWER_OF: MEMBER_ANSWER} if member_log_probs is not None else {}),
        },
    )
    gates.check_graph(proto, out, "features")

    failures = []
    for fm, value in zip(feature_maps, proto.graph.output[len(OUTPUT_NAMES) :], strict=True):
        t = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
        if t.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4 or dims[1:] != fm["shape"]:
            failures.append(f"graph output {fm['output']} is {dims}, metadata says {fm['shape']}")
    blob = proto.SerializeToString()
    session = OnnxClassifier(blob, device="cpu", batch_size=batch_size)
    got = session.logits(images.numpy())
    if member_log_probs is None:
        reference, against = logits, "model.onnx"
    else:  # log-probabilities on both sides: logits are defined up to a constant per image
        got = torch.log_softmax(torch.from_numpy(got).double(), dim=1).numpy()
        reference, against = member_log_probs, "member 0 in PyTorch (log-probabilities)"
    parity = gates.compare_logits(
        got,
        reference,
        max_abs_diff=gates.MAX_ABS_LOGIT_DIFF,
        min_agreement=gates.MIN_FP32_AGREEMENT,
        against=against,
    )

    pixels = session.to_pixels(images[:FMAP_CHECK_IMAGES].numpy())
    _, onnx_maps = session.feature_maps(pixels)
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
        "n_images": len(reference),
        "answer_of": "model.onnx" if member_log_probs is None else MEMBER_ANSWER,
        "outputs": [fm["output"] for fm in feature_maps],
        "max_abs_logit_diff_vs_fp32": parity.max_abs_diff,
        "top1_agreement_with_fp32": parity.top1_agreement,
        "disagreements": parity.disagreements,
        "fmap_images": len(pixels),
        "max_abs_fmap_diff_vs_torch": fmap_diff,
        "thresholds": {
            "max_abs_logit_diff_vs_fp32": gates.MAX_ABS_LOGIT_DIFF,
            "min_top1_agreement_with_fp32": gates.MIN_FP32_AGREEMENT,
            "max_abs_fmap_diff_vs_torch": gates.MAX_ABS_FMAP_DIFF,
        },
    }
    failures += parity.failures
    if not fmap_diff <= gates.MAX_ABS_FMAP_DIFF:
        failures.append(
            f"max |Δfeature map| vs PyTorch {fmap_diff:.3g} > {gates.MAX_ABS_FMAP_DIFF}"
        )
    gates.gate("features parity", failures, out)
    return blob, figures
