"""Train one ImageClassifier in-process with the Lightning Trainer, for the sweep and the report.

The same ``ImageClassifier`` and data modules as ``imgcls fit``; what differs is only what a
sweep needs: no validation split unless asked (the lectures train on all 60,000 images and
report test accuracy), no logger, and the wall time of ``fit`` measured.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imgcls.insight import InsightError

__all__ = ["TrainResult", "TrainSpec", "parse_net", "train"]


@dataclass(frozen=True)
class TrainSpec:
    net: str  # a registered net name
    net_args: dict[str, Any] = field(default_factory=dict)  # e.g. {"hidden": [32]} for mlp
    dataset: str = "mnist"
    train_subset: int | None = None  # None: every training image (60,000)
    epochs: int = 1
    seed: int = 0  # seeds both the subset draw and the weights
    batch_size: int = 128
    lr: float = 1e-3  # Adam, the ImageClassifier default

    def key(self) -> str:
        """A stable id of this configuration (for reusing finished runs)."""
        import hashlib
        import json

        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class TrainResult:
    spec: TrainSpec
    model: Any  # the trained ImageClassifier, in eval mode on the CPU
    fit_seconds: float
    n_train: int

    def facts(self) -> dict[str, Any]:
        return {"spec": asdict(self.spec), "fit_seconds": self.fit_seconds, "n_train": self.n_train}


def parse_net(name: str) -> tuple[str, dict[str, Any]]:
    """'mlp-32' -> ('mlp', {'hidden': [32]}), 'mlp-32-16' -> two hidden layers, else (name, {})."""
    from imgcls.models import list_models

    m = re.fullmatch(r"mlp((?:-\d+)+)", name)
    if m:
        return "mlp", {"hidden": [int(v) for v in m.group(1).strip("-").split("-")]}
    if name not in list_models():
        raise InsightError(
            f"unknown net {name!r}; valid: {', '.join(list_models())}, "
            "or mlp-W[-W…] (hidden widths)"
        )
    return name, {}


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's per-run banners (GPU available, model summary tips).

    Printed once per run, they are noise in a sweep.
    """
    names = [
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric",
    ]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def train(
    spec: TrainSpec,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    accelerator: str = "cpu",
    checkpoint: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train ``spec`` with ``lightning.Trainer`` and return the model and the wall time of ``fit``.

    ``train_subset`` at or above the training-set size uses every image (val_size 0). With
    ``checkpoint`` the trained model is saved there (atomically) for later reuse.

    Raises:
        InsightError: an unknown net or a subset larger than the data set.
    """
    import lightning as L
    import torch

    from imgcls.checkpoint import AtomicCheckpointIO
    from imgcls.data import get_datamodule
    from imgcls.data.provision import get_spec
    from imgcls.module import ImageClassifier

    if data_dir is not None and not Path(data_dir).is_dir():
        raise InsightError(f"{data_dir}: data directory not found")
    if spec.train_subset is not None and spec.train_subset < 1:
        raise InsightError(f"training-set size must be >= 1, got {spec.train_subset}")
    try:
        total = get_spec(spec.dataset).files[0].count  # 60,000 training images
    except ValueError as e:
        raise InsightError(str(e)) from e
    subset = (
        spec.train_subset if spec.train_subset is not None and spec.train_subset < total else None
    )
    dm = get_datamodule(
        spec.dataset,
        data_dir=str(data_dir) if data_dir else None,
        batch_size=spec.batch_size,
        val_size=0,
        train_subset=subset,
        seed=spec.seed,
    )
    L.seed_everything(spec.seed, workers=True, verbose=False)
    model = ImageClassifier(
        net=spec.net,
        net_args=dict(spec.net_args),
        dataset=dm.dataset_name,
        class_names=list(dm.class_names),
        num_classes=dm.num_classes,
        in_channels=dm.in_channels,
        image_size=dm.image_size,
        mean=dm.mean,
        std=dm.std,
        optimizer=lambda params: torch.optim.Adam(params, lr=spec.lr),
    )
    with _quiet_lightning():
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=1,
            max_epochs=spec.epochs,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            log_every_n_steps=10,
            plugins=[AtomicCheckpointIO()],
            default_root_dir=str(Path(checkpoint).parent) if checkpoint else None,
        )
        with warnings.catch_warnings():
            # Lightning 2.6 on torch 2.14 warns about its own pytree use on every fit;
            # not ours to fix.
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            start = time.perf_counter()
            trainer.fit(model, datamodule=dm)
            seconds = time.perf_counter() - start
        if checkpoint is not None:
            trainer.save_checkpoint(
                Path(checkpoint), weights_only=True
            )  # the model and its hparams, no optimizer state
    assert dm.train_set is not None
    model = model.cpu().eval()
    return TrainResult(spec, model, seconds, len(dm.train_set))
