"""The trained models that ship inside the package, by name: ``--model mnist``.

Each shipped model is a complete ``imgcls export`` folder under ``imgcls/zoo/<name>/``
(model.onnx, model.features.onnx where the net has feature maps, metadata.json, the parity
record parity.json with the test accuracy and the files' sha256, the model card README.md)
with ``provenance.json``: the recipe, command, seed, commit and wall time that made it, which
the export writes when given them. ``nox -s zoo`` trains and exports them (scripts/zoo.py).

``resolve_model`` is the one place a ``--model`` value becomes a file: an existing path wins
(a local folder named like a shipped model included), then a shipped name. No torch here: the
deployment install resolves names too.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imgcls.errors import ConfigError

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_FILE",
    "PROVENANCE_FILE",
    "ZOO_DIR",
    "recipes_and_seeds",
    "resolve_model",
    "shipped_info",
    "shipped_models",
    "short_commit",
]

# The package's data folder of trained models (not a Python package: no code in it).
ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
MODEL_FILE = "model.onnx"
PROVENANCE_FILE = "provenance.json"
# What `imgcls serve` and `imgcls page` show when no --model is given.
DEFAULT_MODEL = "mnist"


def shipped_models() -> list[str]:
    """The names of the shipped models, sorted."""
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / MODEL_FILE).is_file())


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def short_commit(commit: object) -> str:
    """A commit as the card and ``imgcls models`` show it: 12 hex digits, and whatever the
    record adds after them (``+uncommitted changes``: a file beside the commit trained it)."""
    sha, plus, rest = str(commit).partition("+")
    return sha[:12] + plus + rest


def recipes_and_seeds(provenance: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
    """The recipes (each once, in order) and the seeds (one per training) a provenance record
    names: an ensemble's are its members', a single training's its own."""
    members = provenance.get("members") or [provenance]
    recipes = list(dict.fromkeys(str(m.get("recipe", "?")) for m in members))
    return recipes, [m.get("seed", "?") for m in members]


def shipped_info(name: str) -> dict[str, Any]:
    """What ``imgcls models`` shows of a shipped model, from its export's records: data set,
    net, parameters, test accuracy (and on shifted images), size, sha256, provenance.

    Raises:
        ConfigError: no shipped model of that name.
    """
    folder = ZOO_DIR / name
    model = folder / MODEL_FILE
    if not model.is_file():
        raise ConfigError(_unknown(name))
    metadata = _json(folder / "metadata.json")
    parity = _json(folder / "parity.json")
    provenance = _json(folder / PROVENANCE_FILE)
    fp32 = parity.get("fp32") or {}
    shift = {
        int(r["distance_px"]): {"mean": r["mean"], "worst": r["worst"]}
        for r in (parity.get("shift") or {}).get("distances", [])
    }
    return {
        "name": name,
        "path": str(model),
        "dataset": metadata.get("dataset"),
        "net": metadata.get("net"),
        "net_args": metadata.get("net_args") or {},
        "members": [  # an ensemble's (metadata's ``ensemble``); none for a single net
            {"net": m.get("net"), "net_args": m.get("net_args") or {}}
            for m in (metadata.get("ensemble") or {}).get("members", [])
        ],
        "parameters": provenance.get("parameters"),
        "test_accuracy": fp32.get("onnx_accuracy"),
        "test_images": parity.get("n_images"),
        "shift_accuracy": shift,
        "size_bytes": model.stat().st_size,
        "sha256": (parity.get("model_sha256") or {}).get(MODEL_FILE),
        "files": sorted(p.name for p in folder.iterdir() if p.is_file()),
        "provenance": provenance,
    }


def _looks_like_name(value: str) -> bool:
    """A bare word (``mnist``), not something meant as a path (``x/model.onnx``, ``m.onnx``)."""
    return bool(value) and "/" not in value and "\\" not in value and not value.endswith(".onnx")


def _unknown(value: str) -> str:
    names = shipped_models()
    close = difflib.get_close_matches(value, names, n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    listed = ", ".join(names) or "none in this install"
    return (
        f"--model {value}: no such file or folder, and no shipped model of that name; "
        f"{hint}shipped models: {listed} (imgcls models lists them)"
    )


def resolve_model(name_or_path: str | Path) -> Path:
    """The ``model.onnx`` that ``--model name_or_path`` means.

    An existing path comes first and is returned as it is, except that a folder holding a
    model.onnx (an export folder, e.g. a local ``mnist/``) means that file. Otherwise a bare
    name of a shipped model means its model.onnx in the package. Anything else is returned
    unchanged when it looks like a path, so that the loader's own "no such ONNX file" error
    names it.

    Raises:
        ConfigError: a bare name that is neither an existing path nor a shipped model; the
            message names the closest shipped ones.
    """
    path = Path(name_or_path)
    if path.exists():
        if path.is_dir() and (path / MODEL_FILE).is_file():
            return path / MODEL_FILE
        return path
    value = str(name_or_path)
    if not _looks_like_name(value):
        return path
    shipped = ZOO_DIR / value / MODEL_FILE
    if shipped.is_file():
        return shipped
    raise ConfigError(_unknown(value))
