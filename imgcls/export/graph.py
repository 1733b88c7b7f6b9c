"""The ONNX graph of an export: what it computes (``PixelClassifier``, and
``FeatureMapClassifier`` with the feature maps as extra outputs), the dynamo-based
``torch.onnx.export`` of it (opset pinned, batch axis dynamic), its fp16 variant, and the
metadata written into it (``imgcls.deploy.metadata``).

Decision: normalisation is baked into the graph. The ONNX input ``pixels`` is float32 in
[0, 1], shape (N, C, H, W); the graph computes ``(pixels - mean) / std`` then the net, and
returns ``logits`` and ``probabilities``. The metadata says ``"normalization": "in_graph"``
and the runtime converts uint8 images to [0, 1] itself and refuses anything outside [0, 1],
so nobody can feed the model un-normalised, or twice-normalised, pixels by mistake.

References: timm ``utils/onnx.py`` (dynamic batch); https://pytorch.org/docs/stable/onnx_dynamo.html.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import onnx
import torch
from torch import nn

from imgcls.deploy import metadata as schema
from imgcls.errors import ConfigError, ExportError

__all__ = [
    "FMAP_PREFIX",
    "INPUT_NAME",
    "OPSET",
    "OPSET_MIN",
    "OUTPUT_NAMES",
    "FeatureMapClassifier",
    "PixelClassifier",
    "check_opset",
    "max_opset",
    "set_metadata",
    "to_features_onnx",
    "to_fp16",
    "to_onnx",
]

OPSET = 18  # pinned: the dynamo exporter's native opset, run by onnxruntime >= 1.14 and TensorRT 10
# The lowest opset offered: the exporter implements nothing older, and converting its graph
# down fails for ops as common as Shape (no adapter below opset 15).
OPSET_MIN = 18
INPUT_NAME = schema.INPUT_NAME
OUTPUT_NAMES = schema.OUTPUT_NAMES
EXAMPLE_BATCH = 4  # > 1, so that torch.export does not specialise the batch axis to 1
FMAP_PREFIX = "fmap_"


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


@functools.cache
def max_opset() -> int:
    """The newest opset that both the installed onnx (its version converter) and onnxruntime
    (which runs the parity gates, and serves the model) support."""
    from imgcls.deploy.classifier import loads

    def runs(version: int) -> bool:
        opsets = [onnx.helper.make_opsetid("", version)]
        node = onnx.helper.make_node("Identity", ["x"], ["y"])
        io = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in "xy"]
        graph = onnx.helper.make_graph([node], "probe", io[:1], io[1:])
        model = onnx.helper.make_model(
            graph,
            opset_imports=opsets,
            ir_version=onnx.helper.find_min_ir_version_for(opsets),
        )
        return loads(model.SerializeToString())

    newest = onnx.defs.onnx_opset_version()
    return next((v for v in range(newest, OPSET_MIN, -1) if runs(v)), OPSET_MIN)


def check_opset(opset: int) -> None:
    """Refuse an opset outside ``OPSET_MIN`` .. ``max_opset()`` before any work is done.

    Raises:
        ConfigError: the opset is out of that range.
    """
    if not OPSET_MIN <= opset <= max_opset():
        raise ConfigError(
            f"--opset {opset} is not supported: pass an opset from {OPSET_MIN} to "
            f"{max_opset()} (default {OPSET}; {OPSET_MIN} is the oldest the exporter makes, "
            f"{max_opset()} the newest that the installed onnx and onnxruntime run)"
        )


@contextlib.contextmanager
def _quiet_version_converter() -> Iterator[None]:
    """onnxscript logs a failed opset conversion with its traceback, then keeps the graph's
    own opset; the opset check after the export reports that in one line instead."""
    log = logging.getLogger("onnxscript.version_converter")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


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
        with _quiet_version_converter():
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
