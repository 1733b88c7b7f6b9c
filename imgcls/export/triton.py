"""A Triton Inference Server model repository from an export (``imgcls export --triton DIR``).

Writes ``DIR/<name>/config.pbtxt``, ``DIR/<name>/labels.txt`` and ``DIR/<name>/1/model.onnx``
(a byte copy of the gated ``model.onnx``), for Triton's ONNX Runtime backend
(``platform: "onnxruntime_onnx"``). The tensor names, data types and shapes in the config are
read from the ONNX graph itself, so the config cannot drift from the model it serves.

The config text is formatted here, so the training install does not need ``tritonclient``;
when ``tritonclient`` is importable the text is also parsed into its ``ModelConfig`` message
before anything is written, which rejects a misspelt field or enum.

References: Triton's docs/user_guide/model_configuration.md (max_batch_size, dims without
the batch axis, dynamic_batching, instance_group, label_filename) and the onnxruntime
backend's README ("ONNX Runtime with TensorRT optimization": the accelerator's parameters).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imgcls import staging
from imgcls.errors import ConfigError, ExportError, ImgclsError

__all__ = [
    "DEFAULT_MAX_BATCH_SIZE",
    "TensorSpec",
    "graph_tensors",
    "model_config_text",
    "check_options",
    "write_triton_repository",
]

DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_QUEUE_DELAY_US = 100  # short: MNIST-sized requests are cheap, latency matters more
VERSION = "1"
LABELS_FILE = "labels.txt"
LABELLED_OUTPUT = "probabilities"  # the output whose k-th value belongs to class k
TRT_WORKSPACE_BYTES = 1 << 30  # the backend's documented default, said out loud
_OURS = {"config.pbtxt", LABELS_FILE, VERSION}

# ONNX TensorProto element types -> Triton data types (model_config.proto DataType)
_TRITON_TYPES = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    8: "TYPE_STRING",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
    16: "TYPE_BF16",
}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as Triton sees it: ``dims`` without the batch axis, -1 for a
    dynamic axis."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    batch: int | None  # the graph's batch size, None when the batch axis is dynamic


def graph_tensors(model_bytes: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs of an ONNX model, read from its graph.

    Raises:
        ExportError: not an ONNX model, a tensor without a batch axis, or a type Triton lacks.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_model_from_string(model_bytes)
    except DecodeError as e:
        raise ExportError(f"not an ONNX model: {e}") from e
    initializers = {t.name for t in proto.graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        t = value.type.tensor_type
        if t.elem_type not in _TRITON_TYPES:
            raise ExportError(
                f"graph tensor {value.name} has ONNX type {t.elem_type}, unknown to Triton"
            )
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if len(dims) < 2:
            raise ExportError(f"graph tensor {value.name} has shape {dims}: no batch axis")
        return TensorSpec(
            value.name,
            _TRITON_TYPES[t.elem_type],
            tuple(dims[1:]),
            None if dims[0] < 0 else dims[0],
        )

    inputs = [spec(v) for v in proto.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in proto.graph.output]


def _preferred_sizes(max_batch_size: int) -> list[int]:
    """A few sizes up to ``max_batch_size`` that the scheduler should try to form."""
    return sorted({s for s in (max_batch_size // 4, max_batch_size // 2, max_batch_size) if s >= 1})


def _shape(name: str, batch: int, dims: Sequence[int]) -> str:
    return f"{name}:" + "x".join(str(d) for d in (batch, *dims))


def model_config_text(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    instances: int = 1,
    tensorrt: bool = False,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    labelled_output: str | None = LABELLED_OUTPUT,
) -> str:
    """``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``).

    Raises:
        ConfigError: ``max_batch_size`` or ``instances`` below 1, or a batch larger than the
            graph takes.
    """
    if max_batch_size < 1:
        raise ConfigError(f"--triton_max_batch_size must be >= 1, got {max_batch_size}")
    if instances < 1:
        raise ConfigError(f"--triton_instances must be >= 1, got {instances}")
    fixed = sorted({t.batch for t in (*inputs, *outputs) if t.batch is not None})
    if fixed and max_batch_size > fixed[0]:
        raise ConfigError(
            f"--triton_max_batch_size {max_batch_size} is larger than the batch of {fixed[0]} "
            "that the ONNX graph is fixed to"
        )

    def tensors(kind: str, specs: Sequence[TensorSpec]) -> list[str]:
        blocks = []
        for t in specs:
            lines = [
                "  {",
                f'    name: "{t.name}"',
                f"    data_type: {t.data_type}",
                f"    dims: [ {', '.join(str(d) for d in t.dims)} ]",
            ]
            if kind == "output" and t.name == labelled_output:
                lines.append(f'    label_filename: "{LABELS_FILE}"')
            blocks.append("\n".join([*lines, "  }"]))
        return [f"{kind} [", ",\n".join(blocks), "]"]

    sizes = ", ".join(str(s) for s in _preferred_sizes(max_batch_size))
    text = [
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        *tensors("input", inputs),
        *tensors("output", outputs),
        "instance_group [",
        "  {",
        f"    count: {instances}",
        "    kind: KIND_GPU",
        "  }",
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {sizes} ]",
        f"  max_queue_delay_microseconds: {queue_delay_us}",
        "}",
    ]
    if tensorrt:
        # One TensorRT engine for every batch from 1 to max_batch_size, built once: without
        # the profile shapes ONNX Runtime rebuilds the engine whenever a larger batch arrives.
        profiles = {
            key: ",".join(_shape(t.name, batch, t.dims) for t in inputs)
            for key, batch in (
                ("trt_profile_min_shapes", 1),
                ("trt_profile_opt_shapes", _preferred_sizes(max_batch_size)[-1]),
                ("trt_profile_max_shapes", max_batch_size),
            )
        }
        params = {
            "precision_mode": "FP16",
            "max_workspace_size_bytes": str(TRT_WORKSPACE_BYTES),
            **profiles,
        }
        text += [
            "optimization {",
            "  execution_accelerators {",
            "    gpu_execution_accelerator: [",
            "      {",
            '        name: "tensorrt"',
            *(f'        parameters {{ key: "{k}" value: "{v}" }}' for k, v in params.items()),
            "      }",
            "    ]",
            "  }",
            "}",
        ]
    return "\n".join(text) + "\n"


def _validate(text: str) -> None:
    """Parse ``text`` into Triton's ``ModelConfig`` when ``tritonclient`` is installed."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:  # the training install need not have it; the tests do
        return
    try:
        text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:  # a bug here, not the user's doing
        raise ExportError(
            f"the generated config.pbtxt is not a valid Triton ModelConfig: {e}"
        ) from e


def check_repository_dir(repo: str | os.PathLike[str]) -> Path:
    """Fail early on a ``--triton`` path that cannot be a model repository.

    Raises:
        ConfigError: the path, or a part of it, is a file, or it is not writable.
    """
    from imgcls.utils import check_writable_folder

    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise ConfigError(
            f"--triton {repo}: a file, not a folder; pass the folder of a Triton model "
            "repository (it is created if missing)"
        )
    return check_writable_folder(repo, "--triton")


def check_options(
    repo: str | os.PathLike[str],
    name: str | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    instances: int = 1,
) -> Path:
    """Check the ``--triton*`` options before any work is done; returns ``repo``.

    Raises:
        ConfigError: ``repo`` is (under) a file or not writable, a name that is not one plain
            folder name, ``max_batch_size`` or ``instances`` below 1.
    """
    repo = check_repository_dir(repo)
    if name is not None and (not name or name.startswith(".") or "/" in name or os.sep in name):
        raise ConfigError(f"--triton_name {name!r}: a model name is one plain folder name")
    if max_batch_size < 1:
        raise ConfigError(f"--triton_max_batch_size must be >= 1, got {max_batch_size}")
    if instances < 1:
        raise ConfigError(f"--triton_instances must be >= 1, got {instances}")
    return repo


def write_triton_repository(
    export_dir: str | os.PathLike[str],
    repo: str | os.PathLike[str],
    *,
    name: str | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    instances: int = 1,
    tensorrt: bool = False,
) -> Path:
    """Put the export in ``export_dir`` into the Triton model repository ``repo`` as model
    ``name`` (default: the export folder's name); returns ``repo/<name>``.

    A previous model of that name is replaced as a whole, and only if it holds nothing but
    what this function writes; other models in ``repo`` are left alone.

    Raises:
        ConfigError: a bad ``repo``, name or option.
        ExportError: ``export_dir`` holds no model.onnx, or ``repo/<name>`` holds other files.
    """
    export_dir = Path(export_dir)
    name = name or export_dir.resolve().name
    repo = check_options(repo, name, max_batch_size, instances)
    model_file = export_dir / "model.onnx"
    if not model_file.is_file():
        raise ExportError(f"{export_dir} holds no model.onnx: export the checkpoint first")
    model_bytes = model_file.read_bytes()
    inputs, outputs = graph_tensors(model_bytes)
    text = model_config_text(
        name,
        inputs,
        outputs,
        max_batch_size=max_batch_size,
        instances=instances,
        tensorrt=tensorrt,
    )
    _validate(text)
    meta_file = export_dir / "metadata.json"
    classes = json.loads(meta_file.read_text()).get("class_names") if meta_file.is_file() else None
    labelled = next((t for t in outputs if t.name == LABELLED_OUTPUT), None)
    if not classes or labelled is None or list(labelled.dims) != [len(classes)]:
        raise ExportError(
            f"{export_dir}: the class names in metadata.json do not match the "
            f"{LABELLED_OUTPUT} output of model.onnx"
        )

    target = repo / name
    if target.exists():
        if not target.is_dir():
            raise ExportError(f"{target} is a file; pass another --triton folder or --triton_name")
        foreign = sorted(p.name for p in target.iterdir() if p.name not in _OURS)
        if foreign:
            raise ExportError(
                f"{target} holds files that this export did not write ({', '.join(foreign[:5])});"
                " pass another --triton folder or --triton_name"
            )
    # Staged beside the target and swapped into place, so that a server polling the
    # repository never sees a model folder without its config or its weights.
    staging.remove_stale(repo)
    try:
        with staging.staged_folder(target) as staged:
            (staged / VERSION).mkdir()
            (staged / VERSION / "model.onnx").write_bytes(model_bytes)
            (staged / LABELS_FILE).write_text("".join(f"{c}\n" for c in classes))
            (staged / "config.pbtxt").write_text(text)
    except OSError as e:
        if isinstance(e, ImgclsError):
            raise
        raise _write_error(e, target, export_dir) from e
    return target


def _write_error(e: OSError, target: Path, export_dir: Path) -> ExportError:
    """What a failed write of the staged model folder means to the user (the staged folder
    is gone by then; the export itself was placed before and is complete)."""
    kept = (
        f"the previous model in {target} is untouched"
        if target.exists()
        else f"{target} was not created"
    )
    kept += f", and the export in {export_dir} is complete"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ExportError(
            f"--triton {target.parent}: the disk is full (no space left, or over quota): the "
            f"Triton model could not be written; nothing was lost: {kept}. Free some space, or "
            "pass --triton with a folder on another disk, and export again"
        )
    return ExportError(
        f"--triton {target.parent}: cannot write the Triton model: {e.strerror or e} "
        f"({e.filename or target.parent}); nothing was lost: {kept}. Pass --triton with a "
        "writable folder"
    )
