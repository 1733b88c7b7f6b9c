"""``ImageClassifier``: the one LightningModule that trains any registered net.

It records everything a checkpoint alone needs to rebuild the net and use it (net name and
arguments, data set, class names, normalisation, input shape) via ``save_hyperparameters``;
``imgcls.training.checkpoint_io.load_classifier`` reads them back for export and evaluation.
It trains and evaluates: the loss (cross-entropy, label smoothing or ``cosine_loss``), the
optimiser and schedule it is handed, torchmetrics accuracy, F1 and confusion, and a stop on a
non-finite loss. ``mismatch`` states how two model / data descriptions differ; the check that
uses it on every run is ``imgcls.training.callbacks.DataCheck``. Checkpoint digests and the
RNG state live in ``checkpoint_io`` and ``callbacks``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
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

from imgcls.errors import CheckpointError, ConfigError, NonFiniteLossError
from imgcls.models import create_model

__all__ = [
    "FACTS",
    "LOSSES",
    "ImageClassifier",
    "NonFiniteLossError",
    "cosine_loss",
    "mismatch",
]


class ImageClassifier(L.LightningModule):
    _train_sums: torch.Tensor  # (3,) buffer: sum of loss x images, correct, images this epoch
    _nonfinite: torch.Tensor  # () bool buffer: a training loss since the last check was NaN/inf

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
        loss: Literal["cross_entropy", "cosine"] = "cross_entropy",
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        channels_last: bool = True,
        compile: bool = False,
    ) -> None:
        """
        Args:
            net: a registered net name (``imgcls.models.list_models()``).
            net_args: keyword arguments of that net (e.g. ``{hidden: [32]}`` for ``mlp``).
            num_classes, in_channels, image_size, dataset, class_names, mean, std: facts of the
                data set; the CLI links them from the DataModule, so a YAML never sets them.
            label_smoothing: cross-entropy label smoothing in [0, 1).
            loss: the training loss, also reported as val/test loss so the curves compare.
                "cross_entropy" is the negative log-likelihood of the soft-max (lecture 002,
                eq. 7). "cosine" is the lecture's alternative −mean_i f(x_i)ᵀ y_i / ‖f(x_i)‖
                on the logits (y one-hot): it only rewards the logits' direction, so their
                scale, and with it the soft-max confidence of predictions, is left untrained.
            optimizer: optimizer factory taking the parameters (default Adam, lr 1e-3).
            scheduler: LR scheduler factory; a scheduler that takes ``total_steps`` (OneCycleLR)
                gets the run's number of optimizer steps.
            scheduler_interval: step the scheduler every "epoch" or every "step".
            channels_last: NHWC memory format for the net and its inputs. On by default:
                oneDNN's CPU convolutions and max-pools and cuDNN's tensor-core kernels are
                faster in it (a LeNet-5 training step 1.05-1.9x, a ResNet's 1.2-1.4x on a 2-core
                CPU: docs/benchmarks.md); a net without convolutions is unaffected.
            compile: run the net through ``torch.compile``.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if loss == "cosine" and label_smoothing > 0:
            raise ConfigError(
                f"label_smoothing={label_smoothing} needs loss cross_entropy: smoothing mixes "
                "the soft-max's target with the uniform distribution, and the cosine loss has "
                "no soft-max target to smooth"
            )
        self.class_names = (
            list(class_names) if class_names else [str(i) for i in range(num_classes)]
        )
        if len(self.class_names) != num_classes:
            raise ConfigError(f"{len(self.class_names)} class names for num_classes={num_classes}")
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
        # once an epoch: a torchmetrics update every step is Python overhead that a small net's
        # step cannot hide (docs/benchmarks.md). float32 counts are exact far beyond an epoch's
        # 60,000 images.
        self.register_buffer("_train_sums", torch.zeros(3), persistent=False)
        # The NaN/inf guard accumulates on the device and is read only on the logger's cadence,
        # at the end of an epoch and before every checkpoint: reading it every step would make
        # the CPU wait for the GPU each step. `_window_start` is the first step not yet checked.
        self.register_buffer("_nonfinite", torch.zeros((), dtype=torch.bool), persistent=False)
        self._window_start = 0
        self._last_step = -1
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
        # float32 even under mixed precision: the soft-max's exp and the norm's squares
        # overflow or lose the loss's small differences in half precision.
        if self.hparams["loss"] == "cosine":
            return cosine_loss(logits.float(), y)
        return F.cross_entropy(logits.float(), y, label_smoothing=smoothing)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self._loss(logits, y, self.hparams["label_smoothing"])
        self._last_step = self.global_step
        every = getattr(self.trainer, "log_every_n_steps", 50)  # set by the Trainer
        with torch.no_grad():
            self._nonfinite |= ~torch.isfinite(loss.detach())
            if (self.global_step + 1) % every == 0:
                # Before the optimizer step: a NaN seen here never reaches the weights.
                self.check_finite()
            correct = (logits.argmax(1) == y).sum()
            self._train_sums += torch.stack(
                [loss.float() * len(y), correct.float(), correct.new_tensor(len(y)).float()]
            )
        # `self.log` is costly Python (it moves its result state to the value's device on every
        # call), comparable to a whole LeNet-5 step on a GPU. So the step loss is logged
        # only on the steps the logger writes (every `log_every_n_steps`; the progress bar shows
        # the latest), and train/acc once an epoch from the counters.
        if (self.global_step + 1) % every == 0:
            self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        return loss

    def check_finite(self) -> None:
        """Raise ``NonFiniteLossError`` if a training loss since the last check was NaN or inf.

        This is the guard's only host read. Under DDP every process must call it at the same
        points (it agrees on the answer), as the cadence, epoch ends and checkpoints ensure.
        """
        first, last = self._window_start, self._last_step
        self._window_start = last + 1
        if last < first:  # no training step since the last check
            return
        seen = bool(self._nonfinite)
        trainer = self._attached_trainer()
        if trainer is not None:
            seen = trainer.strategy.reduce_boolean_decision(seen, all=False)
        if not seen:
            return
        window = f"global step {last}" if first == last else f"global steps {first}..{last}"
        raise NonFiniteLossError(
            f"training loss became NaN or inf in {window} (epoch {self.current_epoch}; the loss "
            "is checked every log_every_n_steps steps, at the end of an epoch and before every "
            "checkpoint). Lower the learning rate or try precision 32; nothing from these steps "
            "was saved."
        )

    def _attached_trainer(self) -> L.Trainer | None:
        """The Trainer running this module, or None (a module used on its own, as in export)."""
        try:
            return self.trainer
        except RuntimeError:  # Lightning's way of saying "not attached to a Trainer"
            return None

    def on_train_start(self) -> None:
        # A resumed run starts its first window at the step it resumes from.
        self._window_start, self._last_step = self.global_step, self.global_step - 1
        self._nonfinite.zero_()

    def on_validation_start(self) -> None:
        # Validation in fit scores the weights these steps made: check them first.
        trainer = self._attached_trainer()
        if trainer is not None and trainer.state.fn == "fit":
            self.check_finite()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite()

    def on_train_epoch_start(self) -> None:
        self._train_sums.zero_()

    def on_train_epoch_end(self) -> None:
        self.check_finite()
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
        try:
            opt = self.optimizer_factory(self.parameters())
        except ValueError as e:  # torch checks the optimizer's arguments (a negative lr, ...)
            raise ConfigError(f"the optimizer refuses its arguments: {e}") from e
        if self.scheduler_factory is None:
            return opt
        if _takes_total_steps(self.scheduler_factory):
            # OneCycleLR and friends need the run's length, which only the trainer knows. At
            # least 100 steps: OneCycleLR divides by zero when pct_start * total_steps == 1 (a
            # 4-step smoke run); a shorter run simply does not reach the end of its schedule.
            total_steps = max(int(self.trainer.estimated_stepping_batches), 100)
            sched = self.scheduler_factory(opt, total_steps=total_steps)  # type: ignore[call-arg]
        else:
            sched = self.scheduler_factory(opt)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "interval": self.hparams["scheduler_interval"]},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse weights of a model built for another data set or net (same shapes can hide it)."""
        detail = mismatch(
            checkpoint.get("hyper_parameters", {}), self.hparams, "checkpoint", "this run"
        )
        if detail:
            raise CheckpointError(
                f"the checkpoint does not fit this model/data ({detail}); "
                "use the config it was trained with"
            )


LOSSES = ("cross_entropy", "cosine")
COSINE_EPS = 1e-8  # floor of ‖f(x)‖: an all-zero logit vector gives loss 0, not NaN


def cosine_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Lecture 002's alternative loss, −mean_i f(x_i)ᵀ y_i / ‖f(x_i)‖, with y_i one-hot.

    f(x_i)ᵀ y_i is the true class's logit, so this is minus the cosine between the logit
    vector and its one-hot target, in [−1, 1]. It is invariant to the logits' scale: its
    gradient is orthogonal to the logits. The mean (not the lecture's sum) keeps the loss
    independent of the batch size, like ``F.cross_entropy``.
    """
    true_logit = logits.gather(1, y.reshape(-1, 1)).squeeze(1)
    return -(true_logit / logits.norm(dim=1).clamp_min(COSINE_EPS)).mean()


# What a model and the data (or a checkpoint and the model) must agree on.
FACTS = ("net", "dataset", "num_classes", "in_channels", "image_size")


def mismatch(a: Mapping[str, Any], b: Mapping[str, Any], a_name: str, b_name: str) -> str:
    """``"key: <a_name> x vs <b_name> y, …"`` for each of ``FACTS`` that both give and that
    differ; empty when they fit."""
    return ", ".join(
        f"{k}: {a_name} {a[k]!r} vs {b_name} {b[k]!r}"
        for k in FACTS
        if k in a and k in b and a[k] != b[k]
    )


def _takes_total_steps(factory: Any) -> bool:
    """Whether a scheduler factory has a ``total_steps`` argument left to fill (OneCycleLR).

    The CLI's factories are ``functools.partial`` objects whose keywords hold every argument
    of the class (``total_steps=None`` when the config left it out); other callables are
    asked for their signature.
    """
    keywords = getattr(factory, "keywords", None) or {}
    if "total_steps" in keywords:
        return keywords["total_steps"] is None
    try:
        return "total_steps" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False
