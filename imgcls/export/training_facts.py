"""What a checkpoint says about how it was trained: its optimiser, schedule, epochs, precision,
seed and data split, read from the checkpoint and its run's config.yaml. The model card
(``imgcls.export.model_card``) and the lectures' methods table (``imgcls.insight.methods``)
both state these facts, from this one reader, so they cannot disagree."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imgcls.training.checkpoint_io import run_config

__all__ = ["split_sizes", "training_facts"]


def _call(spec: Any) -> str | None:
    """``torch.optim.Adam(lr=0.001, ...)`` from a jsonargparse ``class_path`` / ``init_args``
    entry, the arguments that differ from None only."""
    if not isinstance(spec, Mapping) or not spec.get("class_path"):
        return None
    args = ", ".join(
        f"{k}={v!r}" for k, v in (spec.get("init_args") or {}).items() if v is not None
    )
    return f"{spec['class_path']}({args})"


def training_facts(ckpt: Mapping[str, Any], ckpt_path: str | os.PathLike[str]) -> dict[str, Any]:
    """How the checkpoint was trained, from the checkpoint and its run's config.yaml: what the
    model card and the methods table say about training."""
    config = run_config(Path(ckpt_path))
    model_cfg = config.get("model") or {}
    trainer_cfg = config.get("trainer") or {}
    dm = dict(ckpt.get("datamodule_hyper_parameters") or {})
    if not dm and isinstance(config.get("data"), Mapping):
        dm = dict(config["data"].get("init_args") or {})
    optimizer = model_cfg.get("optimizer")
    groups = [g for s in ckpt.get("optimizer_states") or [] for g in s.get("param_groups", [])]
    group = {
        k: v for k, v in (groups[0] if groups else {}).items() if k != "params" and v is not None
    }
    return {
        "config_yaml": bool(config),
        "optimizer": _call(optimizer),
        "optimizer_class": (optimizer or {}).get("class_path")
        if isinstance(optimizer, Mapping)
        else None,
        "param_group": group,  # the optimiser's state at the checkpoint, when no config says it
        "scheduler": _call(model_cfg.get("scheduler")),
        "scheduler_interval": (ckpt.get("hyper_parameters") or {}).get("scheduler_interval"),
        "label_smoothing": (ckpt.get("hyper_parameters") or {}).get("label_smoothing"),
        "loss": (ckpt.get("hyper_parameters") or {}).get("loss") or "cross_entropy",
        "max_epochs": trainer_cfg.get("max_epochs"),
        "precision": trainer_cfg.get("precision"),
        "seed_everything": config.get("seed_everything"),
        "epochs_done": int(ckpt["epoch"]) + 1 if ckpt.get("epoch") is not None else None,
        "global_step": ckpt.get("global_step"),
        "datamodule": dm,
    }


def split_sizes(dataset: str, dm: Mapping[str, Any]) -> tuple[int | None, int | None, int | None]:
    """(training images, validation images, images in the official training set) of the run:
    counts, from the data module's saved arguments ``dm``; (None, None, None) when unknown."""
    from imgcls.data.provision import get_spec

    if dataset == "folder":
        return _folder_images(dm)
    try:
        total = get_spec(dataset).files[0].count
    except Exception:  # an unknown data set name: the card says "unknown"
        return None, None, None
    val = dm.get("val_size", 0) or 0
    val = round(val * total) if isinstance(val, float) and val < 1 else int(val)
    return int(dm.get("train_subset") or total - val), val, total


def _folder_images(dm: Mapping[str, Any]) -> tuple[int | None, int | None, int | None]:
    """``split_sizes`` of a folder data set, counted in its folder (``val/`` when present,
    else the split of ``train/``); unknown when the folder is gone."""
    from imgcls.data.folder import scan_folder
    from imgcls.errors import DataError

    try:
        layout = scan_folder(str(dm.get("root") or ""))
    except DataError:
        return None, None, None
    total = layout.count("train") + layout.count("val")
    val = dm.get("val_size", 0) or 0
    val = round(val * total) if isinstance(val, float) and val < 1 else int(val)
    if layout.has("val"):
        val = layout.count("val")
    return int(dm.get("train_subset") or total - val), val, total
