"""Run an exported imgcls ONNX model with onnxruntime: ``OnnxClassifier``.

The model file describes itself: ``imgcls export`` writes its metadata (class names, input
name / shape / dtype, normalisation, ...) into the ONNX ``metadata_props``
(``imgcls.deploy.metadata``; ``read_metadata`` reads it without building a classifier).
Normalisation is baked into the graph (``"normalization": "in_graph"``): the model takes
float32 pixels in [0, 1], shape (N, C, H, W). ``to_pixels`` (``imgcls.deploy.pixels``) turns
uint8 images into such pixels and refuses floats outside [0, 1], so an already-normalised batch
cannot be fed by mistake.

``OnnxClassifier`` is the one door to onnxruntime: nothing else in imgcls holds an
``InferenceSession``. It runs outputs by name (``outputs``, ``probabilities``,
``feature_maps``), splits inputs over its batch limit (``MAX_BATCH`` on TensorRT, whose
profile is built for it), and warms itself up (``warm_up``).

Devices: ``cpu``, ``cuda`` (CUDAExecutionProvider), ``tensorrt`` (TensorrtExecutionProvider,
with CUDA then CPU for the nodes TensorRT does not take) and ``auto`` (CUDA when a GPU and
the CUDA provider are there, else CPU, with a warning). Asking for ``cuda`` or ``tensorrt``
when that provider cannot load raises ``ProviderError``; there is no silent fall-back to the
CPU. onnxruntime-gpu 1.2x+ is built against CUDA 13 / cuDNN 9; those libraries come with the
CUDA build of torch as the ``nvidia-*`` pip packages, and ``onnxruntime.preload_dlls()``
(called here before any CUDA / TensorRT session) loads them from there, so neither
``LD_LIBRARY_PATH`` nor ``import torch`` is needed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from imgcls.deploy import metadata
from imgcls.deploy.onnxruntime_compat import ORT_ERRORS
from imgcls.deploy.pixels import to_pixels
from imgcls.errors import ConfigError, ModelLoadError, ProviderError

__all__ = [
    "DEVICES",
    "MAX_BATCH",
    "TRT_PROFILE",
    "OnnxClassifier",
    "cuda_device_count",
    "loads",
    "read_metadata",
    "to_pixels",
]

Device = Literal["auto", "cpu", "cuda", "tensorrt"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "tensorrt")
_EP = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# The largest batch one session call takes: TensorRT's optimisation profile is built for it,
# ``imgcls serve --max_batch_size`` and a JSON request's images are bounded by it, and
# ``OnnxClassifier`` splits larger inputs into calls of at most this many images.
MAX_BATCH = 1024
# TensorRT optimisation profile for the batch axis: (min, opt, max).
TRT_PROFILE: tuple[int, int, int] = (1, 64, MAX_BATCH)


# ----------------------------------------------------------------------------- providers
def cuda_device_count() -> int:
    """Number of CUDA devices the driver reports (0 without a driver), without torch."""
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    return 0


def _preload_cuda_libraries() -> None:
    """Load CUDA 13 / cuDNN 9 from the ``nvidia-*`` wheels (torch's) before a CUDA session.

    ``onnxruntime.preload_dlls`` exists from onnxruntime 1.21; older builds need the
    libraries on ``LD_LIBRARY_PATH`` or ``import torch`` first. It reports on stdout, which
    is kept clean for results, so its messages go to stderr.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        with contextlib.redirect_stdout(sys.stderr):
            preload()


def _provider_list(
    device: str,
    provider_options: Mapping[str, Mapping[str, Any]] | None,
    input_name: str,
    chw: tuple[int, int, int],
) -> list[Any]:
    opts = {k: dict(v) for k, v in (provider_options or {}).items()}
    if device == "cpu":
        return ["CPUExecutionProvider"]
    cuda: list[Any] = [
        ("CUDAExecutionProvider", opts.get("CUDAExecutionProvider", {})),
        "CPUExecutionProvider",
    ]
    if device == "cuda":
        return cuda
    c, h, w = chw
    lo, opt, hi = TRT_PROFILE
    trt = {  # an explicit profile: one engine for batches 1..1024, tuned for 64
        "trt_profile_min_shapes": f"{input_name}:{lo}x{c}x{h}x{w}",
        "trt_profile_opt_shapes": f"{input_name}:{opt}x{c}x{h}x{w}",
        "trt_profile_max_shapes": f"{input_name}:{hi}x{c}x{h}x{w}",
        **opts.get("TensorrtExecutionProvider", {}),
    }
    return [("TensorrtExecutionProvider", trt), *cuda]


# ----------------------------------------------------------------------------- metadata
def read_metadata(model: str | os.PathLike[str]) -> dict[str, Any]:
    """The imgcls metadata of an exported ONNX file, decoded from its ``metadata_props``.

    Raises:
        ModelLoadError: the file is missing, not ONNX, or carries no imgcls metadata.
    """
    path = Path(model)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such ONNX file")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except ORT_ERRORS as e:
        raise ModelLoadError(f"{path}: onnxruntime cannot load it ({str(e).strip()[:300]})") from e
    return metadata.decode(sess.get_modelmeta().custom_metadata_map, str(path))


def loads(model: bytes) -> bool:
    """Whether this onnxruntime loads ``model`` (serialised ONNX) on the CPU: what the export
    side asks to find the newest opset it may write."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    except ORT_ERRORS:
        return False
    return True


# ----------------------------------------------------------------------------- the classifier
class OnnxClassifier:
    """An exported imgcls model in an onnxruntime session.

    Args:
        model: path of ``model.onnx`` / ``model.fp16.onnx``, or the serialised model bytes.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``tensorrt`` (see the module docstring).
        intra_op_threads: onnxruntime's intra-op threads (None: one per core). 1 is fastest
            for batch-1 latency.
        batch_size: largest batch sent to the session in one run; larger inputs are split
            (on TensorRT never more than ``MAX_BATCH``, its profile's largest batch).
        provider_options: per-provider option overrides, e.g.
            ``{"TensorrtExecutionProvider": {"trt_fp16_enable": "1"}}``.
        session_config: onnxruntime session config entries, e.g.
            ``{"session.intra_op.allow_spinning": "0"}`` where other processes share the cores.

    Raises:
        ModelLoadError: missing or damaged file, or no imgcls metadata.
        ProviderError: ``cuda`` / ``tensorrt`` asked for and that provider cannot load.
        ValueError: unknown ``device``.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        device: Device | str = "auto",
        *,
        intra_op_threads: int | None = None,
        batch_size: int = MAX_BATCH,
        provider_options: Mapping[str, Mapping[str, Any]] | None = None,
        session_config: Mapping[str, str] | None = None,
    ) -> None:
        if device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.source = "<bytes>" if isinstance(model, bytes | bytearray) else str(model)
        if not isinstance(model, bytes | bytearray) and not Path(model).is_file():
            raise ModelLoadError(f"{model}: no such ONNX file (export one with `imgcls export`)")
        self._model = bytes(model) if isinstance(model, bytes | bytearray) else str(model)
        self._options = ort.SessionOptions()
        self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._options.log_severity_level = (
            3  # errors only; the provider actually used is reported by us
        )
        if intra_op_threads is not None:
            self._options.intra_op_num_threads = intra_op_threads
            self._options.inter_op_num_threads = 1
        for key, value in (session_config or {}).items():
            self._options.add_session_config_entry(key, value)
        self.batch_size = batch_size

        self.requested_device = device
        self.device = self._pick_device(device)
        if self.device == "cpu":
            self.session = self._session(["CPUExecutionProvider"])
        else:
            # TensorRT's optimisation profile needs the input name and shape: read them first.
            meta = (
                self._metadata_of(self._session(["CPUExecutionProvider"]))
                if self.device == "tensorrt"
                else None
            )
            self.session = self._gpu_session(self.device, provider_options, meta)
        self.metadata: dict[str, Any] = self._metadata_of(self.session)
        self._check_graph()
        # the device is known only now (``auto`` may have fallen back to the CPU)
        self._step = min(batch_size, MAX_BATCH) if self.device == "tensorrt" else batch_size

    # -------------------------------------------------------------- construction helpers
    def _session(self, providers: list[Any]) -> ort.InferenceSession:
        try:
            # The Python wrapper prints provider fall-backs on stdout: keep stdout for results.
            with contextlib.redirect_stdout(sys.stderr):
                return ort.InferenceSession(self._model, self._options, providers=providers)
        except ORT_ERRORS as e:
            raise ModelLoadError(
                f"{self.source}: onnxruntime cannot load it ({str(e).strip()[:300]})"
            ) from e

    def _pick_device(self, device: str) -> str:
        if device != "auto":
            return device
        if "CUDAExecutionProvider" in ort.get_available_providers() and cuda_device_count() > 0:
            return "cuda"
        return "cpu"

    def _metadata_of(self, session: ort.InferenceSession) -> dict[str, Any]:
        return metadata.decode(session.get_modelmeta().custom_metadata_map, self.source)

    def _gpu_session(
        self,
        device: str,
        provider_options: Mapping[str, Mapping[str, Any]] | None,
        meta: dict[str, Any] | None,
    ) -> ort.InferenceSession:
        wanted = _EP[device]
        if wanted not in ort.get_available_providers():
            raise ProviderError(
                f"this onnxruntime build has no {wanted} (it has {ort.get_available_providers()}); "
                "install onnxruntime-gpu (and not the plain onnxruntime package beside it)"
            )
        _preload_cuda_libraries()
        input_name, chw = (
            ("pixels", (1, 28, 28))
            if meta is None
            else (meta["input"]["name"], meta["input"]["shape"][1:])
        )
        try:
            sess = self._session(_provider_list(device, provider_options, input_name, tuple(chw)))
        except ModelLoadError as e:
            if self.requested_device == "auto":
                return self._auto_fallback(f"{wanted} failed: {e}")
            raise ProviderError(
                f"{wanted} could not create a session for {self.source}: {e}"
            ) from e
        if sess.get_providers()[0] != wanted:
            if self.requested_device == "auto":
                return self._auto_fallback(f"{wanted} did not load")
            raise ProviderError(
                f"{wanted} could not be loaded (session providers: {sess.get_providers()}; "
                f"CUDA devices seen by the driver: {cuda_device_count()}). "
                "It needs an NVIDIA GPU and driver, CUDA 13 and cuDNN 9 (the nvidia-* wheels of "
                "torch's CUDA build, loaded by onnxruntime.preload_dlls()), and for TensorRT "
                "the TensorRT libraries on LD_LIBRARY_PATH; see the onnxruntime log above. "
                "Use --device cpu to run on the CPU."
            )
        return sess

    def _auto_fallback(self, why: str) -> ort.InferenceSession:
        warnings.warn(f"device auto: {why}; running on the CPU", RuntimeWarning, stacklevel=3)
        self.device = "cpu"
        return self._session(["CPUExecutionProvider"])

    def _check_graph(self) -> None:
        inputs = self.session.get_inputs()
        meta_in = self.metadata["input"]
        if len(inputs) != 1 or inputs[0].name != meta_in["name"]:
            raise ModelLoadError(
                f"{self.source}: graph inputs {[i.name for i in inputs]} do not match the metadata "
                f"({meta_in['name']!r})"
            )
        self.input_name: str = meta_in["name"]
        self.input_shape: tuple[int, int, int] = tuple(int(d) for d in meta_in["shape"][1:])  # type: ignore[assignment]
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        if self.output_names[:2] != ["logits", "probabilities"]:
            raise ModelLoadError(
                f"{self.source}: graph outputs {self.output_names}, expected logits, probabilities"
            )
        self.class_names: list[str] = list(self.metadata["class_names"])
        # a feature-map model (``model.features.onnx``) names its extra outputs in its metadata
        layers = self.metadata.get("feature_maps") or []
        self.feature_outputs: list[str] = [str(layer["output"]) for layer in layers]
        missing = [n for n in self.feature_outputs if n not in self.output_names]
        if missing:
            raise ModelLoadError(
                f"{self.source}: its metadata names feature-map outputs {missing} that the graph "
                f"does not have (outputs {self.output_names}); export it again"
            )
        self._check_shapes(inputs[0].shape, self.session.get_outputs())

    def _check_shapes(self, graph_in: Sequence[Any], outputs: Sequence[Any]) -> None:
        """The metadata must describe the graph: a mismatch would feed the wrong pixels or
        name the wrong classes without any error at run time."""
        meta_shape = list(self.metadata["input"]["shape"])
        # Symbolic axes (the batch) are strings or None in the graph; only fixed sizes count.
        fixed = [(i, g) for i, g in enumerate(graph_in) if isinstance(g, int)]
        if len(graph_in) != len(meta_shape) or any(
            not isinstance(meta_shape[i], int) or meta_shape[i] != g for i, g in fixed
        ):
            raise ModelLoadError(
                f"{self.source}: its metadata says input shape {meta_shape} but the graph takes "
                f"{list(graph_in)}; the file was altered after export: export it again"
            )
        n = len(self.class_names)
        declared = self.metadata.get("num_classes", n)
        widths = {o.name: o.shape[-1] for o in outputs[:2] if o.shape}
        bad = {k: v for k, v in widths.items() if isinstance(v, int) and v != n}
        if declared != n or bad:
            raise ModelLoadError(
                f"{self.source}: its metadata names {n} classes (num_classes {declared}) but "
                f"the graph outputs {widths}; the file was altered after export: "
                "export it again"
            )

    # -------------------------------------------------------------- properties
    @property
    def providers_in_use(self) -> list[str]:
        """The session's providers, highest priority first (what actually runs the graph)."""
        return list(self.session.get_providers())

    # -------------------------------------------------------------- inputs
    def to_pixels(self, images: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """Check a batch and turn it into the model input (module function ``to_pixels``)."""
        return to_pixels(images, self.input_shape, self.input_name)

    # -------------------------------------------------------------- inference
    def outputs(self, pixels: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
        """The graph outputs ``names`` for ``pixels`` that are already the model input (what
        ``to_pixels`` returns: float32 in [0, 1], (N, C, H, W)); no check is repeated here.
        Inputs over the batch limit are run in several session calls and joined."""
        feeds = {self.input_name: pixels}
        if len(pixels) <= self._step:  # the common case: one call, nothing to join
            return list(self.session.run(list(names), feeds))
        parts = [
            self.session.run(list(names), {self.input_name: pixels[i : i + self._step]})
            for i in range(0, len(pixels), self._step)
        ]
        return [np.concatenate(column) for column in zip(*parts, strict=True)]

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (N, num_classes) float32 of model-input ``pixels`` (see
        ``outputs``)."""
        return self.outputs(pixels, ("probabilities",))[0]

    def feature_maps(self, pixels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Probabilities and the feature maps, one (N, C, H, W) array per layer in the order of
        the metadata's ``feature_maps``, of model-input ``pixels``; for a feature-map model.

        Raises:
            ModelLoadError: this model has no feature-map outputs.
        """
        if not self.feature_outputs:
            raise ModelLoadError(f"{self.source}: not a feature-map model (no feature_maps)")
        probs, *maps = self.outputs(pixels, ("probabilities", *self.feature_outputs))
        return probs, maps

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Run every output once per batch size on zeros, so that the first real call pays for
        no memory allocation (nor, on TensorRT, an engine build)."""
        for n in sorted(set(batch_sizes)):
            self.outputs(np.zeros((n, *self.input_shape), np.float32), self.output_names)

    def run(self, images: np.ndarray | Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(logits, probabilities), each (N, num_classes) float32."""
        logits, probs = self.outputs(self.to_pixels(images), ("logits", "probabilities"))
        return logits, probs

    def logits(self, images: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """Logits (N, num_classes) float32."""
        return self.run(images)[0]

    def predict(
        self, images: np.ndarray | Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predicted labels (N,) int64 and class probabilities (N, num_classes) float32.

        Raises:
            InputError: see ``to_pixels``.
        """
        probs = self.run(images)[1]
        return probs.argmax(axis=1).astype(np.int64), probs

    def __repr__(self) -> str:
        return (
            f"OnnxClassifier({self.source!r}, device={self.device!r}, "
            f"providers={self.providers_in_use}, input={self.input_name}{list(self.input_shape)})"
        )
