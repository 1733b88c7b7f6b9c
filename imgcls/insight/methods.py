"""What produced a checkpoint, read from the checkpoint and its run's config.yaml.

The report's methods table is generated from here for every row (a run the report trained, a
checkpoint of ``imgcls fit`` given with ``--ckpt``, a recipe given with ``--extra``), never
written by hand, so it cannot drift from what ran. The same reader (``training_facts``) writes
the model card of every export.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["METHOD_COLUMNS", "epoch_seconds_of_run", "methods_of"]

# Column -> key of the dict ``methods_of`` returns.
METHOD_COLUMNS = (
    ("data", "data"),
    ("train images", "train_images"),
    ("validation", "validation"),
    ("net", "net"),
    ("loss", "loss"),
    ("optimiser", "optimizer"),
    ("schedule", "schedule"),
    ("batch", "batch"),
    ("epochs run", "epochs"),
    ("augmentation", "augmentation"),
    ("weights used", "checkpoint"),
)


def _short_call(spec: Any) -> str:
    """A config's ``{class_path: torch.optim.Adadelta, init_args: {lr: 1.0, rho: 0.9, …}}`` as
    ``Adadelta(lr=1.0)``: the arguments that differ from the class's own defaults (LightningCLI
    writes every one of them into config.yaml)."""
    import importlib
    import inspect

    if not isinstance(spec, Mapping) or not spec.get("class_path"):
        return "none"
    path = str(spec["class_path"])
    module, _, name = path.rpartition(".")
    try:
        params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        params = {}  # type: ignore[assignment]
    shown = []
    for key, value in (spec.get("init_args") or {}).items():
        default = params[key].default if key in params else inspect.Parameter.empty
        if isinstance(value, list):
            value = tuple(value)  # YAML has no tuples: (0.9, 0.999) comes back as a list
        same = default is not inspect.Parameter.empty and value == default
        if value is None or (same and key != "lr"):  # the rate is always worth stating
            continue
        shown.append(f"{key}={value!r}")
    return f"{name}({', '.join(shown)})"


def _args(net_args: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in net_args.items())


def epoch_seconds_of_run(ckpt_path: str | os.PathLike[str]) -> list[float]:
    """Training seconds of each epoch, from the ``time/train_epoch_s`` column of the run's
    metrics.csv (the CSV logger of ``imgcls fit``); [] when the run kept none."""
    from imgcls.runs import run_of

    run = run_of(Path(ckpt_path).resolve())
    path = run / "metrics.csv" if run is not None else None
    if path is None or not path.is_file():
        return []
    by_epoch: dict[int, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            value = row.get("time/train_epoch_s")
            if value:
                by_epoch[int(row["epoch"])] = float(value)  # a resumed epoch: the last wins
    return [by_epoch[e] for e in sorted(by_epoch)]


def methods_of(ckpt_path: str | os.PathLike[str]) -> dict[str, Any]:
    """How the checkpoint at ``ckpt_path`` was trained, as short strings for a table.

    Keys: those of ``METHOD_COLUMNS``, plus ``facts`` (the raw ``training_facts``).
    """
    import torch

    from imgcls.export.training_facts import split_sizes, training_facts
    from imgcls.training.checkpoint_io import run_config

    path = Path(ckpt_path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    facts = training_facts(ckpt, path)
    hp = dict(ckpt.get("hyper_parameters") or {})
    dm = facts["datamodule"]
    dataset = str(hp.get("dataset", "?"))
    n_train, n_val, n_total = split_sizes(dataset, dm)
    net_args = dict(hp.get("net_args") or {})
    net = str(hp.get("net", "?")) + (f"({_args(net_args)})" if net_args else "")
    loss = str(hp.get("loss") or "cross_entropy")
    if hp.get("label_smoothing"):
        loss += f", label smoothing {hp['label_smoothing']}"
    model_cfg = run_config(path).get("model") or {}
    schedule = _short_call(model_cfg.get("scheduler"))
    if facts["scheduler"]:
        schedule += f" per {facts['scheduler_interval'] or 'epoch'}"
    aug = [
        f"shift ±{dm['shift_augment']} px" if dm.get("shift_augment") else None,
        f"rotate ±{dm['rotate_augment']:g}°" if dm.get("rotate_augment") else None,
        f"scale ±{dm['scale_augment']:.0%}" if dm.get("scale_augment") else None,
        "h-flip" if dm.get("hflip") else None,
        f"erase p={dm['random_erase']}" if dm.get("random_erase") else None,
    ]
    if any("WeightAveraging" in c for c in _callbacks(path)):
        aug.append("EMA of weights")
    done, max_epochs = facts["epochs_done"], facts["max_epochs"]
    epochs = "?" if done is None else str(done)
    if max_epochs not in (None, -1) and done is not None and max_epochs != done:
        epochs += f" of {max_epochs}"
    steps = facts.get("global_step")
    if steps:
        epochs += f" ({steps:,} steps)"
    if path.stem == "best" and n_val:
        which = f"best.ckpt: best val/acc, epoch {done}"
    elif path.stem == "best":
        which = f"best.ckpt = last epoch ({done}); no validation to select on"
    elif path.stem == "last":
        which = f"last.ckpt (epoch {done})"
    else:
        which = f"{path.name} (epoch {done})"
    optimizer = _short_call(model_cfg.get("optimizer"))
    if not facts["optimizer"]:
        optimizer = "not recorded"
    return {
        "data": {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}.get(dataset, dataset),
        "train_images": f"{n_train:,}" if n_train is not None else "?",
        "validation": (
            f"{n_val:,} of the {n_total or 0:,}, seed {dm.get('seed', '?')}" if n_val else "none"
        ),
        "net": net,
        "loss": loss,
        "optimizer": optimizer,
        "schedule": schedule,
        "batch": str(dm.get("batch_size", "?")),
        "epochs": epochs,
        "augmentation": ", ".join(a for a in aug if a) or "none",
        "checkpoint": which,
        "seed": facts["seed_everything"],
        "precision": facts["precision"] or "32-true",
        "n_train": n_train,
        "n_val": n_val or 0,
        "epochs_done": done,
        "global_step": steps,
    }


def _callbacks(ckpt_path: Path) -> list[str]:
    """Class paths of the callbacks in the run's config.yaml (EMA is one)."""
    from imgcls.training.checkpoint_io import run_config

    trainer = run_config(ckpt_path).get("trainer") or {}
    found = trainer.get("callbacks") if isinstance(trainer, dict) else None
    return [str(c.get("class_path", c)) if isinstance(c, dict) else str(c) for c in found or []]
