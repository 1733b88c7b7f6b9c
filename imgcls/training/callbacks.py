"""Callbacks that every ``imgcls`` run uses: training throughput (``EpochTimer``, also the
benchmarks' clock), best and last checkpoints (``RunCheckpoint``), the weights at chosen epochs
(``Snapshots``), a resumable RNG state, the model-vs-data check, and the files a test or
predict run writes into its run directory."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from imgcls.errors import ConfigError, RunInUseError
from imgcls.runs import snapshot_of
from imgcls.training.curves import confusion_matrix_figure, save_png, write_curves
from imgcls.training.lightning_module import mismatch
from imgcls.utils import atomic_write_text

__all__ = [
    "CSVPredictionWriter",
    "DataCheck",
    "EpochTimer",
    "RngState",
    "RunCheckpoint",
    "RunCurves",
    "RunDirectory",
    "Snapshots",
    "TestReport",
    "report_checkpoints",
]


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
    after an epoch without a new best, ``last.ckpt`` would be stale and a resume would repeat
    finished epochs. With ``save_last=True`` this class writes ``last.ckpt`` itself at the end of
    every training epoch (after that epoch's validation), and at the end of training when that
    stopped mid-epoch, through the public ``Trainer.save_checkpoint``; Lightning keeps the best
    (top-k) checkpoints. ``save_last="link"`` is left to Lightning.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # save_last is not part of the callback's state key or state, so taking it over here
        # changes nothing a checkpoint records.
        self.last_every_epoch = self.save_last is True
        if self.last_every_epoch:
            self.save_last = None
        self.last_written_step: int | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._write_last(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if getattr(self, "last_written_step", None) != trainer.global_step:
            self._write_last(trainer)

    def _write_last(self, trainer: L.Trainer) -> None:
        # fast_dev_run is a Trainer argument it keeps as an attribute (not in its type stubs)
        if not getattr(self, "last_every_epoch", False) or getattr(trainer, "fast_dev_run", False):
            return
        if self.dirpath is None:  # no run folder was resolved (nothing to resume into)
            return
        path = os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
        # set before saving: the path is part of this callback's state in the checkpoint
        self.last_model_path = path
        trainer.save_checkpoint(path, self.save_weights_only)
        self.last_written_step = trainer.global_step
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


class Snapshots(L.Callback):
    """Keeps the weights at chosen epochs, for ``imgcls page --epochs`` (watching a net learn).

    ``epochs``: after how many training epochs to keep the weights; 0 is the weights before any
    training, -1 the final ones (however many epochs the run ends after). Each is written to
    ``<run>/snapshots/epoch=N.ckpt``: the weights and hyper-parameters only (no optimiser
    state, a fraction of ``last.ckpt``), atomically and with its digest, through the trainer's
    own ``save_checkpoint``, so every command that reads a checkpoint reads it. A file already
    there is kept: a resumed run does not rewrite the snapshots it saved before (the weights
    "after N epochs" of a resume are the same ones). Off (no epochs) by default.

    Args:
        epochs: keep the weights after these many epochs (0: before training, -1: the last),
            in <run>/snapshots/epoch=N.ckpt, e.g. [0, 1, 2, 5, -1]; none by default.
    """

    def __init__(self, epochs: list[int] | None = None) -> None:
        wanted = list(epochs or [])
        bad = [e for e in wanted if not isinstance(e, int) or isinstance(e, bool) or e < -1]
        if bad:
            raise ConfigError(
                f"--snapshots.epochs {wanted}: {bad} not an epoch; give epochs as whole numbers "
                "(0: before training, N: after N epochs, -1: the last), e.g. [0, 1, 2, 5, -1]"
            )
        self.epochs = sorted(set(wanted))
        self._dir: Path | None = None
        self._final = False  # the last epoch's snapshot is written

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.epochs or stage != "fit":
            return
        log_dir = trainer.log_dir  # a collective under DDP: every rank must ask
        self._dir = Path(log_dir) if log_dir else None

    def _keep(self, trainer: L.Trainer, epoch: int) -> None:
        # fast_dev_run is a Trainer argument it keeps as an attribute (not in its type stubs)
        if self._dir is None or getattr(trainer, "fast_dev_run", False):
            return
        path = snapshot_of(self._dir, epoch)
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
        # every rank must call save_checkpoint (a barrier inside) or none: rank 0's view of
        # the file decides, since a slower rank could see the file rank 0 has just written
        if not trainer.strategy.broadcast(path.is_file()):
            trainer.save_checkpoint(path, weights_only=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if 0 in self.epochs and trainer.global_step == 0:  # a resume is past epoch 0
            self._keep(trainer, 0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.current_epoch + 1
        # the last epoch is known here when max_epochs or a stopping callback ends the run; the
        # snapshot then records the same epoch as last.ckpt does
        max_epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
        last = trainer.should_stop or (max_epochs is not None and done >= max_epochs)
        if done in self.epochs or (last and -1 in self.epochs):
            self._keep(trainer, done)
            self._final = self._final or last

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run that stopped otherwise (max_steps, mid-epoch): the weights it ended with, named
        # by the epochs it began
        if -1 in self.epochs and not self._final and trainer.global_step > 0:
            self._keep(trainer, trainer.current_epoch)


class RngState(L.Callback):
    """Saves the RNG state in every checkpoint and restores it on resume, so that a resumed run
    is bit-identical to an uninterrupted one on the CPU (shuffling, dropout and augmentation
    draw from it)."""

    KEY = "imgcls_rng"

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint[self.KEY] = state

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = checkpoint.get(self.KEY)
        if not state:
            return
        torch.set_rng_state(state["torch"])
        cuda = state.get("cuda")
        if (
            cuda is not None
            and torch.cuda.is_available()
            and len(cuda) == torch.cuda.device_count()
        ):
            torch.cuda.set_rng_state_all(cuda)


class DataCheck(L.Callback):
    """A net built for another data set fails before any step runs, in every stage."""

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = getattr(trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "info"):
            return
        info = dm.info()
        data = {
            "dataset": info["dataset"],
            "num_classes": len(info["class_names"]),
            "in_channels": info["image_shape"][0],
            "image_size": info["image_shape"][1],
        }
        detail = mismatch(pl_module.hparams, data, "model", "data")
        names = pl_module.hparams.get("class_names")
        if not detail and names and list(names) != list(info["class_names"]):
            # Two folders with as many classes: the same net, but class k means another thing.
            detail = f"class_names: model {list(names)!r} vs data {list(info['class_names'])!r}"
        if detail:
            raise ConfigError(
                f"the model does not match the data set ({detail}). Use a checkpoint trained on "
                f"{info['dataset']}, or the data module the model was trained with."
            )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != "fit":  # checked once at the start of fit already
            self._check(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, pl_module)


class RunDirectory(L.Callback):
    """The run folder of a fit: one process trains in it at a time, and a run that fails
    before its first step leaves no folder behind (it would hold nothing but a config)."""

    LOCK = ".lock"

    def __init__(self) -> None:
        self._lock: Any = None
        self._dir: str | None = None
        self._fresh = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: every rank must ask
        if stage != "fit" or not trainer.is_global_zero or not log_dir:
            return
        # The logger may have made the folder already; a new run's folder is still empty.
        self._fresh = not os.path.isdir(log_dir) or _empty(log_dir)
        os.makedirs(log_dir, exist_ok=True)
        fh = open(os.path.join(log_dir, self.LOCK), "a+")  # noqa: SIM115 - held until teardown
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise RunInUseError(
                f"{log_dir} is in use: another imgcls fit is training in it. Wait for it to "
                "finish, or start a new run"
            ) from None
        self._lock, self._dir = fh, log_dir

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # The lock is dropped on every failure, not only a fresh run's: a resumed run that
        # fails before teardown would otherwise hold its file open.
        self._release()
        if self._dir and self._fresh and trainer.global_step == 0:
            shutil.rmtree(self._dir, ignore_errors=True)
            with contextlib.suppress(OSError):  # the experiment folder too, if that left it empty
                os.rmdir(os.path.dirname(self._dir))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the lock
            self._lock = None


def _empty(folder: str) -> bool:
    with os.scandir(folder) as entries:  # closed here, not whenever the iterator is collected
        return not any(entries)


def report_checkpoints(trainer: L.Trainer) -> None:
    """After fit: tell the loggers (W&B summary) and the user where the best and last
    checkpoints are."""
    log_dir = trainer.log_dir  # a collective under DDP: every rank must ask
    ckpt = trainer.checkpoint_callback
    if not isinstance(ckpt, ModelCheckpoint) or not trainer.is_global_zero:
        return
    if getattr(trainer, "fast_dev_run", False):  # Lightning's dummy loggers, no checkpoints
        print("[imgcls] fast_dev_run: a trial run; nothing was logged or saved", flush=True)
        return
    score = ckpt.best_model_score
    summary = {
        "best_model_path": ckpt.best_model_path,
        "last_model_path": ckpt.last_model_path,
        "best_val_acc": float(score) if score is not None else None,
    }
    for logger in trainer.loggers:
        exp: Any = getattr(logger, "experiment", None)
        if exp is not None and hasattr(exp, "summary"):  # W&B
            exp.summary.update(summary)
    lines = [f"[imgcls] run directory: {log_dir}"]
    if ckpt.best_model_path and os.path.isfile(ckpt.best_model_path):
        why = (
            f"val/acc {summary['best_val_acc']}"
            if ckpt.monitor
            else "no validation split: the latest epoch"
        )
        lines.append(f"[imgcls] best checkpoint: {ckpt.best_model_path} ({why})")
    if ckpt.last_model_path and os.path.isfile(ckpt.last_model_path):
        lines.append(f"[imgcls] last checkpoint: {ckpt.last_model_path}")
    if len(lines) == 1:
        lines.append("[imgcls] no checkpoint was written: no epoch finished")
    print("\n".join(lines), flush=True)


class TestReport(Callback):
    """After test: writes the confusion matrix and the per-class accuracy into the run directory."""

    def on_test_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: every rank must ask
        cm = getattr(pl_module, "test_confusion", None)
        if cm is None or not trainer.is_global_zero or not log_dir:
            return
        names = pl_module.class_names
        rows = [",".join(["true\\pred", *names])]
        rows += [
            ",".join([n, *(str(int(v)) for v in row)])
            for n, row in zip(names, cm.tolist(), strict=True)
        ]
        atomic_write_text(Path(log_dir) / "confusion_matrix.csv", "\n".join(rows) + "\n")
        try:
            fig = confusion_matrix_figure(cm.tolist(), list(names), title="test")
            save_png(fig, Path(log_dir) / "confusion_matrix.png")
        except Exception as e:  # the CSV holds the numbers; the picture is a convenience
            _plot_failed("confusion_matrix.png", e)


def _plot_failed(what: str, e: Exception) -> None:
    warnings.warn(f"{what} was not written ({type(e).__name__}: {e})", stacklevel=3)


def run_folder(trainer: L.Trainer) -> str | None:
    """The run folder: where the CSV logger writes metrics.csv (the first logger's folder when
    there is no CSV logger). Not a collective: ask on rank 0 only."""
    csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    logger = csv_logger or (trainer.loggers[0] if trainer.loggers else None)
    return logger.log_dir if logger is not None else None


class RunCurves(Callback):
    """After fit (a resumed one too): ``curves.png`` in the run folder from its metrics.csv.

    Lightning has flushed and closed the loggers by ``on_fit_end``. A failure to draw is a
    warning: the run, its checkpoints and its metrics are whole without the picture.
    """

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or getattr(trainer, "fast_dev_run", False):
            return
        folder = run_folder(trainer)
        if not folder:
            return
        try:
            written = write_curves(folder)
        except Exception as e:
            _plot_failed(os.path.join(folder, "curves.png"), e)
            return
        if written is not None:
            print(f"[imgcls] curves: {written}", flush=True)


class CSVPredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` (index, file, pred, class_name, confidence, target) into the
    run dir."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: Any, predictions: Any, batch_indices: Any
    ) -> None:
        preds = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        idxs = (
            batch_indices[0]
            if batch_indices and isinstance(batch_indices[0], list)
            else batch_indices
        )
        dm = getattr(trainer, "datamodule", None)
        files = getattr(dm, "predict_files", []) if getattr(dm, "predict_dir", None) else []
        rank = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        out = Path(trainer.log_dir or ".") / f"predictions{rank}.csv"
        lines = []
        for batch, ix in zip(preds, idxs, strict=True):
            for i, p, c, t in zip(
                ix,
                batch["pred"].tolist(),
                batch["confidence"].tolist(),
                batch["target"].tolist(),
                strict=True,
            ):
                lines.append(
                    [
                        i,
                        str(files[i]) if files else "",
                        p,
                        pl_module.class_names[p],
                        f"{c:.6f}",
                        "" if t < 0 else t,
                    ]
                )
        lines.sort(key=lambda r: r[0])
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["index", "file", "pred", "class_name", "confidence", "target"])
        w.writerows(lines)
        atomic_write_text(out, buf.getvalue())
        print(f"[imgcls] predictions: {out}", flush=True)
