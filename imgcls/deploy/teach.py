"""What the page's teaching panels read beside a model, for ``imgcls serve`` and ``imgcls page``
alike: the export's own shift accuracy, the check that a model put beside another
(``--compare``) reads the same inputs and answers in the same classes, and for ``imgcls page
--epochs`` a run's snapshots and curves. No torch."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.deploy.classifier import read_metadata
from imgcls.deploy.metadata import without_local_paths
from imgcls.deploy.onnx_weights import float_initializers
from imgcls.errors import ConfigError, ModelLoadError
from imgcls.runs import epoch_curves, read_metrics
from imgcls.utils import sha256_file

__all__ = [
    "WEIGHTS_FILE",
    "compare_metadata",
    "epoch_snapshots",
    "run_curves",
    "shift_figures",
    "weights_blob",
]

PARITY_FILE = "parity.json"
WEIGHTS_FILE = "weights.bin"
FEATURES_FILE = "model.features.onnx"
EPOCHS_DIR = "epochs"


def shift_figures(model: Path) -> dict[str, Any] | None:
    """The accuracy on shifted test images that ``imgcls export`` measured for ``model``
    (``parity.json`` beside it, ``"shift"``), or None for a model without one."""
    parity = Path(model).with_name(PARITY_FILE)
    try:
        shift = json.loads(parity.read_text(encoding="utf-8")).get("shift")
    except (OSError, ValueError, AttributeError):
        return None
    return shift if isinstance(shift, dict) and isinstance(shift.get("distances"), list) else None


def compare_metadata(model_meta: dict[str, Any], compare: Path) -> dict[str, Any]:
    """The public metadata of ``compare``, the model shown beside the one of ``model_meta``.

    Raises:
        ModelLoadError: ``compare`` is not an imgcls export.
        ConfigError: it takes another input or answers in other classes.
    """
    try:
        meta = without_local_paths(read_metadata(compare))
    except ModelLoadError as e:
        raise ModelLoadError(f"--compare {e}") from e
    mine, theirs = model_meta.get("input", {}), meta.get("input", {})
    if mine.get("shape") != theirs.get("shape"):
        raise ConfigError(
            f"--compare {compare}: it takes input {theirs.get('shape')}, the model "
            f"{mine.get('shape')}; compare two models of the same data set"
        )
    if list(model_meta.get("class_names", [])) != list(meta.get("class_names", [])):
        raise ConfigError(
            f"--compare {compare}: its classes differ from the model's; compare two models of "
            "the same data set"
        )
    return {**meta, "model_id": sha256_file(compare)[:12], "shift": shift_figures(compare)}


def weights_blob(model: Path) -> tuple[bytes, dict[str, Any]]:
    """``model``'s float32 initializers (its learned weights) as one little-endian float32
    file for the page, and its index: ``{"file", "tensors": {name: {"offset", "shape"}}}``,
    offsets counted in floats. The page computes dense units and a unit's sum from them."""
    parts, tensors, offset = [], {}, 0
    for name, a in float_initializers(model).items():
        if a.size == 0:
            continue
        parts.append(np.ascontiguousarray(a, "<f4").tobytes())
        tensors[name] = {"offset": offset, "shape": list(a.shape)}
        offset += int(a.size)
    return b"".join(parts), {"file": WEIGHTS_FILE, "tensors": tensors}


def run_curves(metrics_csv: str | os.PathLike[str]) -> dict[str, dict[str, list[float]]]:
    """A run's loss and accuracy per epoch from its ``metrics.csv``: ``{name: {"epochs",
    "values"}}`` for ``train/loss``, ``val/loss``, ``train/acc``, ``val/acc``; an epoch's value
    at its end, so epoch index 0 is at 1 (the weights "after 1 epoch", as the snapshots count).
    A resumed epoch's row replaces the interrupted one's; a curve with no value is left out.
    A missing or unreadable file gives no curves (the page then shows none)."""
    try:
        rows = read_metrics(metrics_csv)
    except (OSError, csv.Error, UnicodeDecodeError):
        return {}
    return {
        name: {"epochs": epochs, "values": values}
        for name, (epochs, values) in epoch_curves(rows).items()
    }


def epoch_snapshots(
    exports: Mapping[int, Path],
) -> tuple[dict[str, Path | bytes], list[dict[str, Any]]]:
    """What the site carries for each exported snapshot (epoch -> its export folder): the files
    (site path -> source file or bytes): ``epochs/N/model.features.onnx`` (``model.onnx`` for
    a net without conv layers) and ``epochs/N/weights.bin``; and each snapshot's entry for the
    metadata: ``epoch``, ``model`` (its site path), ``features``, ``feature_maps``,
    ``weights`` (the index of ``weights_blob``) and ``model_id``."""
    files: dict[str, Path | bytes] = {}
    entries = []
    for epoch, folder in sorted(exports.items()):
        model = folder / "model.onnx"
        features = folder / FEATURES_FILE
        has_features = features.is_file()
        runs = features if has_features else model
        where = f"{EPOCHS_DIR}/{epoch}"
        files[f"{where}/{runs.name}"] = runs
        blob, index = weights_blob(model)
        files[f"{where}/{WEIGHTS_FILE}"] = blob
        index["file"] = f"{where}/{WEIGHTS_FILE}"
        entries.append(
            {
                "epoch": epoch,
                "model": f"{where}/{runs.name}",
                "features": has_features,
                "feature_maps": read_metadata(features).get("feature_maps")
                if has_features
                else None,
                "weights": index,
                "model_id": sha256_file(model)[:12],
            }
        )
    return files, entries
