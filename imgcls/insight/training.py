"""Train one ImageClassifier in-process with the Lightning Trainer, for the sweep and the report.

The same ``ImageClassifier``, data modules and trainer pieces as ``imgcls fit`` (its
checkpoint IO and progress bar from ``imgcls.training.cli``, its epoch timer and data check); what
differs is only what a sweep needs: no validation split unless asked (the lectures train on
all 60,000 images and report test accuracy), no logger, no run folder (a sweep keeps none),
and the wall time of ``fit`` measured. A ``TrainSpec`` is a complete training protocol
(optimiser, schedule, batch, split, loss); ``config_of`` writes it in ``imgcls fit``'s own
config.yaml shape, so a report states what ran from the same file that the model card and
``imgcls fit --config`` read.
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

__all__ = ["TrainResult", "TrainSpec", "config_of", "parse_net", "train"]


@dataclass(frozen=True)
class TrainSpec:
    net: str  # a registered net name
    net_args: dict[str, Any] = field(default_factory=dict)  # e.g. {"hidden": [32]} for mlp
    dataset: str = "mnist"
    train_subset: int | None = None  # None: every training image (60,000)
    epochs: int = 1
    seed: int = 0  # seeds both the subset draw and the weights
    batch_size: int = 128
    optimizer: str = "torch.optim.Adam"  # a class path, as in a config's model.optimizer
    optimizer_args: dict[str, Any] = field(default_factory=lambda: {"lr": 1e-3})
    scheduler: str | None = None  # a class path, stepped every epoch
    scheduler_args: dict[str, Any] = field(default_factory=dict)
    val_size: int = 0  # > 0: validate every epoch on this many held-out training images
    loss: str = "cross_entropy"
    steps: int | None = None  # train for this many optimizer steps instead of ``epochs``

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
    epochs: int = 0  # epochs run (``spec.steps`` decides it when set)
    epoch_seconds: list[float] = field(default_factory=list)  # training only, per epoch
    val_acc: list[float] = field(default_factory=list)  # per epoch, when spec.val_size > 0
    train_acc: float | None = None  # the final model on its own training images, eval mode

    def facts(self) -> dict[str, Any]:
        return {
            "spec": asdict(self.spec),
            "fit_seconds": self.fit_seconds,
            "n_train": self.n_train,
            "epochs": self.epochs,
            "epoch_seconds": self.epoch_seconds,
            "val_acc": self.val_acc,
            "train_acc": self.train_acc,
        }


def _datamodule_class(dataset: str) -> str:
    from imgcls.data import get_datamodule

    cls = type(get_datamodule(dataset, val_size=0))
    return f"{cls.__module__.rsplit('.', 1)[0]}.{cls.__name__}"


def config_of(spec: TrainSpec) -> dict[str, Any]:
    """``spec`` as the config.yaml that ``imgcls fit`` writes for a run (and can read back)."""
    model: dict[str, Any] = {
        "net": spec.net,
        "net_args": dict(spec.net_args),
        "optimizer": {"class_path": spec.optimizer, "init_args": dict(spec.optimizer_args)},
        "scheduler": (
            {"class_path": spec.scheduler, "init_args": dict(spec.scheduler_args)}
            if spec.scheduler
            else None
        ),
        "scheduler_interval": "epoch",
    }
    if spec.loss != "cross_entropy":
        model["loss"] = spec.loss
    data: dict[str, Any] = {
        "batch_size": spec.batch_size,
        "val_size": spec.val_size,
        "seed": spec.seed,
    }
    if spec.train_subset is not None:
        data["train_subset"] = spec.train_subset
    trainer: dict[str, Any] = {"max_epochs": spec.epochs if spec.steps is None else -1}
    if spec.steps is not None:
        trainer["max_steps"] = spec.steps
    return {
        "seed_everything": spec.seed,
        "model": model,
        "data": {"class_path": _datamodule_class(spec.dataset), "init_args": data},
        "trainer": trainer,
    }


def _import(path: str) -> Any:
    import importlib

    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise InsightError(f"cannot import {path!r}: {e}") from e


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
    train_accuracy: bool = False,
) -> TrainResult:
    """Train ``spec`` with ``lightning.Trainer`` and return the model and the wall time of ``fit``.

    ``train_subset`` at or above the images left after the validation split uses all of them.
    With ``checkpoint`` the trained model is saved there (atomically) for later reuse. With
    ``train_accuracy`` the final model is also evaluated on its own training images (in eval
    mode, not the running average of training), for the train/test gap.

    Raises:
        InsightError: an unknown net or a subset larger than the data set.
    """
    import lightning as L

    from imgcls.data import get_datamodule
    from imgcls.data.provision import get_spec

    # imgcls fit's own trainer pieces (cli imports jsonargparse and LightningCLI, which
    # `imgcls summary` does without: imported here, as Lightning is)
    from imgcls.training.callbacks import DataCheck, EpochTimer
    from imgcls.training.cli import checkpoint_plugins, progress_bar
    from imgcls.training.lightning_module import ImageClassifier

    if data_dir is not None and not Path(data_dir).is_dir():
        raise InsightError(f"{data_dir}: data directory not found")
    if spec.train_subset is not None and spec.train_subset < 1:
        raise InsightError(f"training-set size must be >= 1, got {spec.train_subset}")
    try:
        total = get_spec(spec.dataset).files[0].count  # 60,000 training images
    except ValueError as e:
        raise InsightError(str(e)) from e
    subset = (
        spec.train_subset
        if spec.train_subset is not None and spec.train_subset < total - spec.val_size
        else None
    )
    dm = get_datamodule(
        spec.dataset,
        data_dir=str(data_dir) if data_dir else None,
        batch_size=spec.batch_size,
        val_size=spec.val_size,
        train_subset=subset,
        seed=spec.seed,
    )
    optimizer_cls = _import(spec.optimizer)
    scheduler_cls = _import(spec.scheduler) if spec.scheduler else None
    extra: dict[str, Any] = {} if spec.loss == "cross_entropy" else {"loss": spec.loss}
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
        optimizer=lambda params: optimizer_cls(params, **spec.optimizer_args),
        scheduler=(
            (lambda opt: scheduler_cls(opt, **spec.scheduler_args)) if scheduler_cls else None
        ),
        scheduler_interval="epoch",
        **extra,
    )
    timer, curve = EpochTimer(), _val_curve()
    callbacks = [timer, curve, DataCheck(), *([progress_bar()] if progress else [])]
    with _quiet_lightning():
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=1,
            max_epochs=spec.epochs if spec.steps is None else -1,
            max_steps=spec.steps if spec.steps is not None else -1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
            limit_val_batches=1.0 if spec.val_size else 0,
            num_sanity_val_steps=0,
            log_every_n_steps=10,
            callbacks=callbacks,
            plugins=checkpoint_plugins(),
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
            _as_last_epoch(Path(checkpoint))
    assert dm.train_set is not None
    model = model.cpu().eval()
    train_acc = None
    if train_accuracy:
        from imgcls.insight.shift import TorchPredictor

        images, labels = dm.train_set.images.cpu(), dm.train_set.labels.cpu()
        predictor = TorchPredictor(model)
        correct = sum(
            int((predictor.predict(images[i : i + 1024]) == labels[i : i + 1024]).sum())
            for i in range(0, len(labels), 1024)
        )
        train_acc = correct / len(labels)
    return TrainResult(
        spec,
        model,
        seconds,
        len(dm.train_set),
        epochs=len(timer.epoch_seconds),
        epoch_seconds=[float(v) for v in timer.epoch_seconds],
        val_acc=curve.values,
        train_acc=train_acc,
    )


def _as_last_epoch(path: Path) -> None:
    """Give a checkpoint saved after ``fit`` the epoch numbering of ``imgcls fit``'s own.

    A checkpoint written during epoch e (0-based) records ``epoch: e``; one saved after
    ``fit`` records the loop's counter, one higher, and would read as an epoch never run.
    """
    import torch

    from imgcls.training.checkpoint_io import DIGEST_KEY, FULL_DIGEST_KEY, AtomicCheckpointIO

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if int(ckpt.get("epoch", 0)) > 0:
        ckpt["epoch"] = int(ckpt["epoch"]) - 1
        # saved again through the checkpoint IO, so its digests describe the changed epoch
        for key in (DIGEST_KEY, FULL_DIGEST_KEY):
            ckpt.pop(key, None)
        AtomicCheckpointIO().save_checkpoint(ckpt, path)


def _val_curve() -> Any:
    """A callback that keeps the validation accuracy after every epoch in ``.values``."""
    import lightning as L

    class ValCurve(L.Callback):
        def __init__(self) -> None:
            self.values: list[float] = []

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking and "val/acc" in trainer.callback_metrics:
                self.values.append(float(trainer.callback_metrics["val/acc"]))

    return ValCurve()
