"""Callbacks: training throughput and the time-to-accuracy clock used by the benchmarks."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["EpochTimer", "RunCheckpoint"]


class EpochTimer(L.Callback):
    """Wall time of each training epoch (validation and checkpointing excluded), logged as
    ``time/train_epoch_s`` and ``time/train_images_per_s``; ``epoch_seconds`` keeps them."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self.epoch_images: list[int] = []
        self._t0 = 0.0
        self._n = 0

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(pl_module)
        self._t0, self._n = time.perf_counter(), 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._n += len(batch[1])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(pl_module)
        dt = time.perf_counter() - self._t0
        self.epoch_seconds.append(dt)
        self.epoch_images.append(self._n * trainer.world_size)
        pl_module.log_dict(
            {
                "time/train_epoch_s": dt,
                "time/train_images_per_s": self._n * trainer.world_size / dt,
            },
            rank_zero_only=True,
        )


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` really is the last epoch.

    Lightning 2.6 writes ``last.ckpt`` only in an epoch that also saved a top-k checkpoint, so
    after an epoch without a new best, ``last.ckpt`` is stale and a resume would repeat
    finished epochs. This writes it at the end of every validation.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._ensure_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._ensure_last(trainer)

    def _ensure_last(self, trainer: L.Trainer) -> None:
        # Skipped when this step already wrote a checkpoint (then last.ckpt was written too).
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
