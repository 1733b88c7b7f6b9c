"""``ImageClassifier``: the one LightningModule that trains any registered net.

It records everything a checkpoint alone needs to rebuild the net and use it (net name and
arguments, data set, class names, normalisation, input shape) via ``save_hyperparameters``;
export (issue 4) and evaluation read them back with ``load_classifier``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from imgcls.models import create_model

__all__ = ["ImageClassifier", "NonFiniteLossError", "state_digest"]


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the names and bytes of every tensor of a state_dict (order-independent)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the run is stopped before anything is saved from it."""


class ImageClassifier(L.LightningModule):
    _train_sums: torch.Tensor  # (3,) buffer: sum of loss x images, correct, images this epoch

    def __init__(
        self,
        net: str = "lenet5",
        net_args: dict[str, Any] | None = None,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        dataset: str = "mnist",
        class_names: list[str] | None = None,
        mean: float = 0.1307,
        std: float = 0.3081,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        """
        Args:
            net: a registered net name (``imgcls.models.list_models()``).
            net_args: keyword arguments of that net (e.g. ``{hidden: [32]}`` for ``mlp``).
            num_classes, in_channels, image_size, dataset, class_names, mean, std: facts of the
                data set; the CLI links them from the DataModule, so a YAML never sets them.
            label_smoothing: cross-entropy label smoothing in [0, 1).
            optimizer: optimizer factory taking the parameters (default Adam, lr 1e-3).
            scheduler: LR scheduler factory; a scheduler that takes ``total_steps`` (OneCycleLR)
                gets the run's number of optimizer steps.
            scheduler_interval: step the scheduler every "epoch" or every "step".
            channels_last: NHWC memory format (faster convs on GPUs with tensor cores).
            compile: run the net through ``torch.compile``.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.class_names = (
            list(class_names) if class_names else [str(i) for i in range(num_classes)]
        )
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for num_classes={num_classes}")
        self.net = create_model(
            net,
            **(net_args or {}),
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
        )
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.example_input_array = torch.zeros(2, in_channels, image_size, image_size)
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        # Training tracks loss and accuracy as on-device sums (loss x images, correct, images), read
        # once an epoch: a torchmetrics update costs ~0.1 ms of Python a step, 1 % of a LeNet-5 step
        # on a CPU. float32 counts are exact far beyond an epoch's 60,000 images.
        self.register_buffer("_train_sums", torch.zeros(3), persistent=False)
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_class_acc = MulticlassAccuracy(num_classes, average=None)
        self.test_class_acc = MulticlassAccuracy(num_classes, average=None)
        self.test_confmat = MulticlassConfusionMatrix(num_classes)
        self.test_confusion: torch.Tensor | None = (
            None  # (C, C) counts after `test`, rows = true class
        )
        self._compiled: Any = None

    # ------------------------------------------------------------------ forward
    def configure_model(self) -> None:
        if self.hparams["channels_last"]:
            self.net = self.net.to(memory_format=torch.channels_last)
        if self.hparams["compile"] and self._compiled is None:
            # Not registered as a submodule, so state_dict keys stay those of `net`.
            object.__setattr__(self, "_compiled", torch.compile(self.net))

    def forward(
        self, x: torch.Tensor
    ) -> torch.Tensor:  # (B, C, H, W) normalised -> (B, classes) logits
        if self.hparams["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        return (self._compiled or self.net)(x)

    # ------------------------------------------------------------------ steps
    def _loss(self, logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, label_smoothing=smoothing)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self._loss(logits, y, self.hparams["label_smoothing"])
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at global step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}). Lower the learning rate or try precision 32; nothing from this step was saved."
            )
        with torch.no_grad():
            correct = (logits.argmax(1) == y).sum()
            self._train_sums += torch.stack(
                [loss.float() * len(y), correct.float(), correct.new_tensor(len(y)).float()]
            )
        # `self.log` costs ~0.1-1 ms of Python a call (it moves its result state to the value's
        # device every time), as much as a whole LeNet-5 step on a GPU. So the step loss is logged
        # only on the steps the logger writes (every `log_every_n_steps`; the progress bar shows
        # the latest), and train/acc once an epoch from the counters.
        if (self.global_step + 1) % getattr(
            self.trainer, "log_every_n_steps", 50
        ) == 0:  # set by the Trainer
            self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_sums.zero_()

    def on_train_epoch_end(self) -> None:
        loss_sum, correct, seen = self.trainer.strategy.reduce(
            self._train_sums, reduce_op="sum"
        ).tolist()  # all processes
        if seen:
            self.log_dict(
                {"train/loss_epoch": loss_sum / seen, "train/acc": correct / seen},
                rank_zero_only=True,
            )

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        logits = self(x)
        loss = self._loss(logits, y, 0.0)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(logits, y)
        (self.val_class_acc if stage == "val" else self.test_class_acc).update(logits, y)
        if stage == "test":
            self.test_confmat.update(logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(y))
        self.log_dict(metrics, prog_bar=True, batch_size=len(y))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _log_class_acc(self, metric: MulticlassAccuracy, stage: str) -> None:
        per_class = metric.compute()  # synced across processes
        self.log_dict(
            {f"{stage}/acc_class/{n}": v for n, v in zip(self.class_names, per_class, strict=True)}
        )
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_class_acc(self.val_class_acc, "val")

    def on_test_epoch_end(self) -> None:
        self._log_class_acc(self.test_class_acc, "test")
        self.test_confusion = self.test_confmat.compute().cpu()
        # Every test image counted exactly once: the confusion matrix sums to the set's size.
        self.log("test/n_images", self.test_confusion.sum().float(), rank_zero_only=True)
        self.test_confmat.reset()

    def predict_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        x, y = batch
        probs = torch.softmax(self(x).float(), dim=1)
        conf, pred = probs.max(dim=1)
        return {"probs": probs, "pred": pred, "confidence": conf, "target": y}

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        opt = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return opt
        # OneCycleLR and friends need the run's length, which only the trainer knows. At least
        # 100 steps: OneCycleLR divides by zero when pct_start * total_steps == 1 (a 4-step smoke
        # run); a run shorter than that simply does not reach the end of its schedule.
        total_steps = max(int(self.trainer.estimated_stepping_batches), 100)
        try:
            sched = self.scheduler_factory(opt, total_steps=total_steps)  # type: ignore[call-arg]
        except TypeError:
            sched = self.scheduler_factory(opt)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "interval": self.hparams["scheduler_interval"]},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Runs after the callbacks' hooks (EMA swaps its weights in first), so the digest covers
        # exactly the weights that are saved; a flipped bit in them is caught on load.
        checkpoint["imgcls_digest"] = state_digest(checkpoint["state_dict"])
        # The RNG state makes a resumed run bit-identical to an uninterrupted one on the CPU
        # (shuffling, dropout and augmentation draw from it).
        checkpoint["imgcls_rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            checkpoint["imgcls_rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse weights of a model built for another data set or net (same shapes can hide it)."""
        if rng := checkpoint.get("imgcls_rng"):
            torch.set_rng_state(rng["torch"])
            if (
                "cuda" in rng
                and torch.cuda.is_available()
                and len(rng["cuda"]) == torch.cuda.device_count()
            ):
                torch.cuda.set_rng_state_all(rng["cuda"])
        theirs = checkpoint.get("hyper_parameters", {})
        keys = ("net", "dataset", "num_classes", "in_channels", "image_size")
        diff = {
            k: (theirs.get(k), self.hparams.get(k))
            for k in keys
            if k in theirs and theirs.get(k) != self.hparams.get(k)
        }
        if diff:
            detail = ", ".join(
                f"{k}: checkpoint {a!r} vs this run {b!r}" for k, (a, b) in diff.items()
            )
            raise ValueError(
                f"the checkpoint does not fit this model/data ({detail}); use the config it was trained with"
            )

    def on_fit_start(self) -> None:
        self._check_datamodule()

    def on_test_start(self) -> None:
        self._check_datamodule()

    def _check_datamodule(self) -> None:
        """A net built for another data set fails before any step runs."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "info"):
            return
        info = dm.info()
        mine = {
            "dataset": self.hparams["dataset"],
            "num_classes": self.hparams["num_classes"],
            "in_channels": self.hparams["in_channels"],
            "image_size": self.hparams["image_size"],
        }
        theirs = {
            "dataset": info["dataset"],
            "num_classes": len(info["class_names"]),
            "in_channels": info["image_shape"][0],
            "image_size": info["image_shape"][1],
        }
        diff = {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}
        if diff:
            detail = ", ".join(f"{k}: model {a!r} vs data {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"the model does not match the data set ({detail}). Use a checkpoint trained on "
                f"{info['dataset']}, or the data module the model was trained with."
            )
