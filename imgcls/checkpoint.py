"""Checkpoints: atomic writes, safe (``weights_only``) loading with clear errors, and the
``best`` / ``last`` shorthands of a run directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from imgcls.utils import atomic_path

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "load_checkpoint",
    "load_classifier",
    "resolve_checkpoint",
]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged or not an imgcls checkpoint. The message names the file."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temp file beside the target, then ``os.replace``.

    A crash, a full disk or a kill mid-write leaves the previous checkpoint intact.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def resolve_checkpoint(
    ckpt: str | os.PathLike[str], run_dir: str | os.PathLike[str] | None = None
) -> Path:
    """A .ckpt path, a run directory (its best checkpoint), or ``best`` / ``last`` of ``run_dir``.

    Raises:
        CheckpointError: when nothing matches, naming where it looked.
    """
    s = str(ckpt)
    if s in ("best", "last"):
        if run_dir is None:
            raise CheckpointError(f"`{s}` needs a run directory (--run_dir runs/<name>/version_N)")
        path = Path(run_dir) / "checkpoints" / f"{s}.ckpt"
    else:
        path = Path(s)
        if path.is_dir():
            path = (
                path / "checkpoints" / "best.ckpt"
                if (path / "checkpoints").is_dir()
                else path / "best.ckpt"
            )
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a Lightning checkpoint with ``weights_only=True`` (no arbitrary code runs).

    Raises:
        CheckpointError: missing, truncated, bit-flipped or not a Lightning/imgcls checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (
        Exception
    ) as e:  # torch.load fails in many ways on junk: each means "not a readable checkpoint"
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated, corrupted, or not a torch file): {str(e).splitlines()[0][:200]}"
        ) from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint of an imgcls model (no state_dict / hyper_parameters)"
        )
    if "net" not in ckpt["hyper_parameters"]:
        raise CheckpointError(
            f"{path}: a Lightning checkpoint, but not of an imgcls ImageClassifier"
        )
    from imgcls.module import state_digest

    if "imgcls_digest" in ckpt and state_digest(ckpt["state_dict"]) != ckpt["imgcls_digest"]:
        raise CheckpointError(
            f"{path}: the weights do not match their recorded sha256: the file is corrupted "
            "(a flipped bit?); use another checkpoint, e.g. last.ckpt or a re-trained run"
        )
    return ckpt


def load_classifier(
    path: str | os.PathLike[str],
):  # -> ImageClassifier (import kept local: cheap module)
    """Rebuild the ImageClassifier of a checkpoint from the checkpoint alone, in eval mode on the CPU."""
    from imgcls.module import ImageClassifier

    ckpt = load_checkpoint(path)
    hp = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    hp["compile"] = False  # export and evaluation want the plain module
    try:
        model = ImageClassifier(**hp)
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: cannot rebuild the model from its hyper-parameters: {e}"
        ) from e
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise CheckpointError(f"{path}: the checkpoint holds NaN or inf weights; it cannot be used")
    model.eval()
    return model
