"""The ONNX metadata schema: what ``imgcls export`` writes into a model and the runtime reads.

An exported model describes itself in its ONNX ``metadata_props``: one key per entry, each
value JSON-encoded (ONNX stores strings only). ``model_metadata`` builds the entries the
export stage writes, ``encode`` turns them into ``metadata_props`` strings and ``decode``
checks and reads them back, so the writer and every reader (the classifier's
``read_metadata``, the service, the page's ``metadata.json``) share one definition. Pure
Python: no onnx, no onnxruntime.

The model takes float32 pixels in [0, 1], (N, C, H, W); normalisation is part of the graph
(``"normalization": "in_graph"``). Extras written beside the main model carry the same
entries with ``precision`` (``fp16``, ``int8``) and their own additions (``quantization``,
``feature_maps``, ``features_of``, and ``answer_of`` where a feature-map model's own answer is
not the model's: an ensemble's is its first member alone, ``features_answer_is_the_models``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from imgcls.errors import ModelLoadError

__all__ = [
    "ANSWER_OF",
    "FORMAT",
    "INPUT_NAME",
    "MEMBER_ANSWER",
    "NORMALIZATION",
    "OUTPUT_NAMES",
    "decode",
    "encode",
    "features_answer_is_the_models",
    "model_metadata",
]

FORMAT = "imgcls-onnx/1"
INPUT_NAME = "pixels"
OUTPUT_NAMES: tuple[str, ...] = ("logits", "probabilities")
NORMALIZATION = "in_graph"
# A feature-map model whose logits are not model.onnx's says whose they are under this key: an
# ensemble's is its first member alone (``MEMBER_ANSWER``). Absent: the same answer as the model.
ANSWER_OF = "answer_of"
MEMBER_ANSWER = "member 0"
# How training images of another size were framed (imgcls.deploy.framing), when written.
FRAMINGS: tuple[str, ...] = ("mnist", "fashion_mnist", "none")
# The entries no reader can do without: the runtime refuses a model that lacks one.
REQUIRED: tuple[str, ...] = ("format", "input", "class_names", "normalization")


def model_metadata(
    *,
    dataset: str,
    class_names: Sequence[str],
    input_shape: tuple[int, int, int],
    mean: float,
    std: float,
    net: str,
    net_args: Mapping[str, Any],
    checkpoint: Mapping[str, Any],
    test_images: int,
    opset: int,
    versions: Mapping[str, str],
    precision: str = "fp32",
    framing: str | None = None,
) -> dict[str, Any]:
    """The metadata of an exported fp32 model; ``test_accuracy`` is ``None`` until measured.

    ``input_shape`` is (C, H, W); ``checkpoint`` says where the weights came from (path,
    sha256, epoch, step, validation scores); ``versions`` the library versions that exported.
    ``framing``: how the training images of another size were framed (``mnist``,
    ``fashion_mnist``, ``none``), written for data sets whose name does not say it (a folder
    of images); readers take it for ``--preprocess auto``.
    """
    num_classes = len(class_names)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "dataset": dataset,
        "class_names": list(class_names),
        "num_classes": num_classes,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", *input_shape],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "layout": "NCHW",
        },
        "outputs": [
            {"name": name, "shape": ["batch", num_classes], "dtype": "float32"}
            for name in OUTPUT_NAMES
        ],
        "normalization": NORMALIZATION,
        "mean": float(mean),
        "std": float(std),
        "precision": precision,
        "net": net,
        "net_args": dict(net_args),
        "checkpoint": dict(checkpoint),
        "test_accuracy": None,
        "test_images": test_images,
        "opset": opset,
        "versions": dict(versions),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if framing is not None:
        meta["framing"] = framing
    return meta


def encode(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The ``metadata_props`` strings of ``metadata``: one key per entry, JSON values."""
    return {k: json.dumps(v) for k, v in metadata.items()}


def decode(props: Mapping[str, str], source: str) -> dict[str, Any]:
    """Read ``metadata_props`` back and check that they describe a model this runtime runs.

    Raises:
        ModelLoadError: the values are not JSON, the format or a required entry is missing,
            the normalisation is not the in-graph one, or an entry the runtime reads
            (input.name, input.shape, class_names, num_classes, dataset) is not of the
            schema's type.
    """
    try:
        meta = {k: json.loads(v) for k, v in props.items()}
    except ValueError as e:
        raise ModelLoadError(
            f"{source}: its metadata_props are not imgcls metadata (values must be JSON): {e}"
        ) from e
    missing = [k for k in REQUIRED if k not in meta]
    if missing or meta.get("format") != FORMAT:
        raise ModelLoadError(
            f"{source}: not an imgcls export (metadata format {meta.get('format')!r}, missing "
            f"{missing}); export it with `imgcls export`"
        )
    if meta["normalization"] != NORMALIZATION:
        raise ModelLoadError(
            f"{source}: normalization {meta['normalization']!r} is not supported by this runtime "
            f"(expected {NORMALIZATION!r}); re-export with this imgcls version"
        )
    _check_entries(meta, source)
    return meta


def _check_entries(meta: Mapping[str, Any], source: str) -> None:
    """The entries the runtime reads must have the schema's shape: a string where an object
    was meant would otherwise fail deep in the runtime, or be read as something else (a
    string of class names is a list of letters)."""

    def bad(entry: str, value: Any, expected: str) -> ModelLoadError:
        return ModelLoadError(
            f"{source}: its metadata entry {entry} is {json.dumps(value)[:80]}, expected "
            f"{expected}; the file was altered after export: export it again"
        )

    meta_in = meta["input"]
    if not isinstance(meta_in, dict):
        raise bad("input", meta_in, 'an object {"name": ..., "shape": ["batch", C, H, W]}')
    name = meta_in.get("name")
    if not isinstance(name, str) or not name:
        raise bad("input.name", name, "the name of the graph input (a non-empty string)")
    shape = meta_in.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or shape[0] != "batch"
        or not all(_positive_int(d) for d in shape[1:])
    ):
        raise bad("input.shape", shape, '["batch", C, H, W] with C, H, W positive integers')
    names = meta["class_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise bad("class_names", names, "a non-empty list of strings")
    if "num_classes" in meta and not _positive_int(meta["num_classes"]):
        raise bad("num_classes", meta["num_classes"], "a positive integer")
    if meta.get("dataset") is not None and not isinstance(meta["dataset"], str):
        raise bad("dataset", meta["dataset"], "the name of a data set (a string)")
    if "framing" in meta and meta["framing"] not in FRAMINGS:
        raise bad("framing", meta["framing"], f"one of {', '.join(FRAMINGS)}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def without_local_paths(meta: Any) -> Any:
    """The metadata less the local paths an export records (every ``path``, the checkpoint's
    among them): what a client is shown — the service's ``/metadata``, the static
    site's ``metadata.json`` — tells about the model, not about the disk it came from."""
    if isinstance(meta, dict):
        return {k: without_local_paths(v) for k, v in meta.items() if k != "path"}
    if isinstance(meta, list):
        return [without_local_paths(v) for v in meta]
    return meta


def features_answer_is_the_models(features_meta: Mapping[str, Any]) -> bool:
    """Whether a feature-map model's probabilities are its model's answer (a single net's), so
    that one run gives the answer and the maps; False for an ensemble's (its first member's
    maps and that member's own answer): a client asks model.onnx for the answer."""
    return features_meta.get(ANSWER_OF) is None
