"""Checkpoint IO: atomic writes with a digest of everything a resume reads, safe
(``weights_only``) loading with clear errors, the model rebuilt from a checkpoint alone, and
its run's config.yaml. What a checkpoint says about how it was trained, for the model card
and the methods table, is ``imgcls.export.training_facts``. Which file ``best`` / ``last`` /
a run folder means is ``imgcls.runs``' business."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from imgcls.errors import CheckpointError
from imgcls.utils import atomic_path

__all__ = [
    "DIGEST_KEY",
    "FULL_DIGEST_KEY",
    "AtomicCheckpointIO",
    "CheckpointError",
    "load_checkpoint",
    "autocast_dtype",
    "load_classifier",
    "run_config",
    "checkpoint_digest",
    "state_digest",
    "trained_precision",
]

DIGEST_KEY = "imgcls_digest"  # the weights only: what every checkpoint since it carries
# the whole checkpoint (weights, optimiser and scheduler states, loops, callbacks); checkpoints
# written before it carry DIGEST_KEY only, and are still read (their weights verified)
FULL_DIGEST_KEY = "imgcls_full_digest"
_DIGEST_KEYS = (DIGEST_KEY, FULL_DIGEST_KEY)


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the names and bytes of every tensor of a state_dict (order-independent)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _feed(h: Any, value: Any) -> None:
    """Feed ``value`` to ``h`` canonically: a type tag, then tensors and arrays by dtype, shape
    and bytes, mappings in sorted key order, sequences in order, anything else by ``repr``
    (which is exact for the ints, floats, strings and bools a checkpoint holds)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        h.update(f"A{a.dtype.str}{a.shape}:".encode())
        h.update(a.tobytes())
    elif isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0])))
        h.update(f"D{len(items)}:".encode())
        for k, v in items:
            _feed(h, k)
            _feed(h, v)
    elif isinstance(value, list | tuple):
        h.update(f"L{len(value)}:".encode())
        for v in value:
            _feed(h, v)
    else:
        text = repr(value)
        h.update(f"R{type(value).__name__}{len(text)}:{text}".encode())


def checkpoint_digest(checkpoint: Mapping[str, Any]) -> str:
    """sha256 over everything in a checkpoint but its digests: the weights, the optimiser
    states (moments and step counts), the schedulers, the loops, the callbacks' states and the
    rest. Tensors count by name, dtype, shape and bytes, other values by a canonical ``repr``,
    keys in sorted order, so ``torch.save`` then ``torch.load`` gives the same digest."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in checkpoint.items() if k not in _DIGEST_KEYS})
    return h.hexdigest()


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temp file beside the target, then ``os.replace``.

    A crash, a full disk or a kill mid-write leaves the previous checkpoint intact. The
    checkpoint also gets the sha256 of its weights (``imgcls_digest``) and of all of it
    (``imgcls_full_digest``: optimiser moments, schedulers, loops, callbacks too): this runs
    after every hook (EMA has swapped its weights in by then), so the digests cover exactly
    what is saved, and a flipped bit anywhere a resume reads is caught on load.
    """

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        path: str | os.PathLike[str],
        storage_options: Any | None = None,
    ) -> None:
        if "state_dict" in checkpoint:
            checkpoint = {
                **checkpoint,
                DIGEST_KEY: state_digest(checkpoint["state_dict"]),
                FULL_DIGEST_KEY: checkpoint_digest(checkpoint),
            }
        try:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)
        except (OSError, RuntimeError) as e:
            # atomic_path turns ENOSPC into an OSError of that errno; torch.save reports a write
            # that failed in its C++ writer as a RuntimeError ("unexpected pos ...").
            full = getattr(e, "errno", None) == errno.ENOSPC or (
                isinstance(e, RuntimeError)
                and ("No space left" in str(e) or "unexpected pos" in str(e))
            )
            if not full:
                raise
            raise CheckpointError(
                f"{path}: the disk is full; the checkpoint was not written and the previous one "
                "there is intact. Free some space and resume with --ckpt_path last"
            ) from e


def load_checkpoint(path: str | os.PathLike[str], *, resume: bool = False) -> dict[str, Any]:
    """Load a Lightning checkpoint with ``weights_only=True`` (no arbitrary code runs).

    The weights are always checked against their digest. With ``resume`` (``imgcls fit
    --ckpt_path``) the whole checkpoint is checked too: optimiser moments, schedulers, loops
    and callbacks are read only by a resume, so an evaluation or an export of a checkpoint
    whose epoch or hyper-parameters were edited on purpose still reads it.

    Raises:
        CheckpointError: missing, truncated, bit-flipped or not a Lightning/imgcls checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load fails in many ways on junk: each means "not readable"
        text = str(e)
        if text.startswith("Weights only load failed"):
            # torch's own explanation is the line after its preamble (which global was refused)
            why = [ln.strip() for ln in text.splitlines()[1:] if ln.strip()]
            raise CheckpointError(
                f"{path}: refused: the file holds Python objects besides weights, which could run "
                f"code when loaded ({why[0] if why else 'no detail'}); use a checkpoint written by "
                "imgcls"
            ) from e
        reason = text.splitlines()[0][:200] if text else type(e).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated, corrupted, or not a torch file): "
            f"{reason}"
        ) from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint of an imgcls model "
            "(no state_dict / hyper_parameters)"
        )
    if "net" not in ckpt["hyper_parameters"]:
        raise CheckpointError(
            f"{path}: a Lightning checkpoint, but not of an imgcls ImageClassifier"
        )
    bad = [
        name
        for name, t in ckpt["state_dict"].items()
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all()
    ]
    if bad:
        raise CheckpointError(
            f"{path}: the checkpoint holds NaN or inf weights ({', '.join(bad[:3])}"
            f"{', …' if len(bad) > 3 else ''}); it cannot be used: take another checkpoint "
            "(e.g. best.ckpt of the run) or train again with a lower learning rate"
        )
    if DIGEST_KEY in ckpt and state_digest(ckpt["state_dict"]) != ckpt[DIGEST_KEY]:
        raise CheckpointError(
            f"{path}: the weights do not match their recorded sha256: the file is corrupted "
            "(a flipped bit?); use another checkpoint, e.g. last.ckpt or a re-trained run"
        )
    if resume and FULL_DIGEST_KEY in ckpt and checkpoint_digest(ckpt) != ckpt[FULL_DIGEST_KEY]:
        raise CheckpointError(
            f"{path}: the checkpoint does not match its recorded sha256 (its optimiser, "
            "scheduler, loop or callback state differs from what was saved): the file is "
            "corrupted (a flipped bit?), and resuming from it would continue from wrong state; "
            "use another checkpoint, e.g. best.ckpt or last.ckpt of the run, or train again"
        )
    return ckpt


def load_classifier(path: str | os.PathLike[str]) -> Any:
    """Rebuild the ``ImageClassifier`` of a checkpoint from the checkpoint alone, in eval mode,
    on the CPU. (Typed ``Any``: callers read its hparams as attributes, which mypy cannot see.)"""
    from imgcls.training.lightning_module import ImageClassifier

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
    model.eval()
    return model


def run_config(ckpt_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.yaml`` of the run that ``ckpt_path`` belongs to ({} if none or unreadable)."""
    from imgcls.runs import run_of

    run = run_of(Path(ckpt_path).resolve())
    if run is None or not (run / "config.yaml").is_file():
        return {}
    try:
        import yaml

        loaded = yaml.safe_load((run / "config.yaml").read_text())
    except Exception:  # a damaged config costs only what it would have told, never the caller
        return {}
    return loaded if isinstance(loaded, dict) else {}


def trained_precision(ckpt_path: str | os.PathLike[str]) -> str | None:
    """``trainer.precision`` of the run a checkpoint belongs to (None: not recorded)."""
    trainer = run_config(ckpt_path).get("trainer")
    precision = trainer.get("precision") if isinstance(trainer, dict) else None
    return None if precision is None else str(precision)


def autocast_dtype(precision: str | int | None, device_type: str) -> torch.dtype | None:
    """The autocast dtype that evaluates a model trained at Lightning ``precision`` on
    ``device_type`` as it was trained (None: float32, no autocast).

    Lightning itself trains "16-mixed" on the CPU as bf16 (CPU autocast has no fast fp16), so
    evaluation on the CPU does the same.
    """
    p = str(precision or "32")
    if p.startswith("bf16"):
        return torch.bfloat16
    if p.startswith("16") or p == "half":
        return torch.bfloat16 if device_type == "cpu" else torch.float16
    return None
