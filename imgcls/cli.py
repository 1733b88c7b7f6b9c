"""``imgcls fit | validate | test | predict``: a LightningCLI over ``ImageClassifier`` and the
data modules, driven by the YAML files in ``configs/``.

Runs live in ``runs/<dataset>-<net>/version_N/`` (config.yaml, checkpoints/best.ckpt and
last.ckpt, metrics.csv, predictions.csv); a new run never reuses an old directory, and
``--ckpt_path last`` resumes the newest run of the same experiment in its own directory.
"""

from __future__ import annotations

import csv
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace, lazy_instance
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import (
    BasePredictionWriter,
    Callback,
    ModelCheckpoint,
    ProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger

from imgcls.callbacks import RunCheckpoint
from imgcls.checkpoint import AtomicCheckpointIO
from imgcls.data.datamodule import ImageDataModule
from imgcls.loggers import RunCSVLogger
from imgcls.module import ImageClassifier
from imgcls.utils import atomic_write_text

__all__ = ["ImgclsCLI", "cli_main"]

RUNS_DIR = "runs"


class RunConfigCallback(SaveConfigCallback):
    """Saves the resolved config into the run directory without ever overwriting one.

    A resumed run keeps its ``config.yaml`` and gets ``config.resume-N.yaml`` beside it. The
    config is also handed to the loggers (W&B shows it as the run's config).
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        log_dir = trainer.log_dir
        if log_dir and not self.already_saved:
            n = 0
            while os.path.exists(os.path.join(log_dir, self.config_filename)):
                n += 1
                self.config_filename = f"config.resume-{n}.yaml"
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = self.parser.dump(self.config, skip_none=False, format="yaml")
        for logger in trainer.loggers:
            if not isinstance(logger, CSVLogger):  # CSV gets config.yaml already
                logger.log_hyperparams({"config": config})


def report_checkpoints(trainer: Trainer) -> None:
    """After fit: tell the loggers (W&B summary) and the user where the best and last checkpoints are."""
    log_dir = trainer.log_dir  # a collective under DDP: every rank must ask
    ckpt = trainer.checkpoint_callback
    if not isinstance(ckpt, ModelCheckpoint) or not trainer.is_global_zero:
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
    print(
        f"[imgcls] run directory: {log_dir}\n[imgcls] best checkpoint: {ckpt.best_model_path} "
        f"(val/acc {summary['best_val_acc']})\n[imgcls] last checkpoint: {ckpt.last_model_path}",
        flush=True,
    )


class TestReport(Callback):
    """After test: writes the confusion matrix and the per-class accuracy into the run directory."""

    def on_test_end(self, trainer: Trainer, pl_module: Any) -> None:
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


class CSVPredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` (index, file, pred, class_name, confidence, target) into the run dir."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: Any, predictions: Any, batch_indices: Any
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
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["index", "file", "pred", "class_name", "confidence", "target"])
        w.writerows(lines)
        atomic_write_text(out, buf.getvalue())
        print(f"[imgcls] predictions: {out}", flush=True)


def _experiment_name(cfg: Namespace) -> str:
    data_cls = str(cfg.data.class_path if "class_path" in cfg.data else "")
    dataset = {"MNISTDataModule": "mnist", "FashionMNISTDataModule": "fashion_mnist"}.get(
        data_cls.rsplit(".", 1)[-1], "data"
    )
    net = cfg.model.net
    hidden = (cfg.model.net_args or {}).get("hidden") if net == "mlp" else None
    if hidden:
        net += "-" + "-".join(str(h) for h in hidden)
    return f"{dataset}-{net}"


def _latest_version(exp_dir: Path, need: str) -> Path | None:
    """The newest ``version_N`` of an experiment that holds ``checkpoints/<need>.ckpt``."""
    versions = []
    for d in exp_dir.glob("version_*"):
        m = re.fullmatch(r"version_(\d+)", d.name)
        if m and (d / "checkpoints" / f"{need}.ckpt").is_file():
            versions.append((int(m.group(1)), d))
    return max(versions)[1] if versions else None


def _logger_items(cfg: Namespace) -> list[Any]:
    loggers = cfg.trainer.logger
    return (
        loggers
        if isinstance(loggers, list)
        else [loggers]
        if isinstance(loggers, Namespace | dict)
        else []
    )


class ImgclsCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, **kwargs: Any) -> None:
        trainer_defaults = {
            "max_epochs": 3,
            "default_root_dir": RUNS_DIR,
            "logger": lazy_instance(RunCSVLogger, save_dir=RUNS_DIR, name="auto"),
        }
        super().__init__(
            ImageClassifier,
            ImageDataModule,
            subclass_mode_data=True,
            save_config_callback=RunConfigCallback,
            trainer_defaults=trainer_defaults,
            parser_kwargs={"parser_mode": "yaml"},
            args=args,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Always on: best by val/acc plus last, in <run>/checkpoints/{best,last}.ckpt.
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 1,
                # each run has its own directory, so a resume replaces best/last in place
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.set_defaults({"data": {"class_path": "imgcls.data.MNISTDataModule"}})
        for src, dst in [
            ("num_classes", "num_classes"),
            ("in_channels", "in_channels"),
            ("image_size", "image_size"),
            ("dataset_name", "dataset"),
            ("mean", "mean"),
            ("std", "std"),
            ("class_names", "class_names"),
        ]:
            parser.link_arguments(
                f"data.{src}",
                f"model.{dst}",
                apply_on="instantiate",
                compute_fn=list if src == "class_names" else None,
            )

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        from imgcls.models import model_entrypoint

        model_entrypoint(cfg.model.net)  # an unknown net fails here, listing the valid names
        name = _experiment_name(cfg)
        for lg in _logger_items(cfg):
            args = lg.get("init_args") if isinstance(lg, dict) else getattr(lg, "init_args", None)
            if args is None:
                continue
            if "name" in args and args["name"] in (None, "", "auto"):
                args["name"] = name

    def _parse_ckpt_path(self) -> None:
        # Runs before LightningCLI reads the checkpoint's hyper-parameters: resolve the
        # shorthands and open the file safely first, so a damaged one fails naming itself.
        if self.config.get("subcommand"):
            cfg = self.config[self.config.subcommand]
            self._resolve_resume(cfg, _experiment_name(cfg), _logger_items(cfg))
        super()._parse_ckpt_path()

    def _resolve_resume(self, cfg: Namespace, name: str, loggers: list[Any]) -> None:
        """Resolve ``--ckpt_path``: ``last`` / ``best`` mean the newest run of this experiment.

        ``fit --ckpt_path last`` (or a run directory, or a checkpoint inside one) resumes that
        run in its own directory; validate / test / predict only read the checkpoint. Any
        checkpoint is opened (weights_only) first, so a damaged file fails here, naming itself.
        """
        ckpt = cfg.get("ckpt_path")
        subcommand = self.config.subcommand
        if ckpt is None:
            return
        from imgcls.checkpoint import CheckpointError, load_checkpoint

        run: Path | None = None
        if ckpt in ("last", "best"):
            run = _latest_version(Path(RUNS_DIR) / name, ckpt)
            path = run / "checkpoints" / f"{ckpt}.ckpt" if run is not None else None
            if path is None or not path.is_file():
                raise CheckpointError(
                    f"--ckpt_path {ckpt}: no {RUNS_DIR}/{name}/version_*/checkpoints/{ckpt}.ckpt; "
                    "train a run first or give a checkpoint path"
                )
        elif Path(ckpt).is_dir():
            run = Path(ckpt)
            path = run / "checkpoints" / ("last.ckpt" if subcommand == "fit" else "best.ckpt")
        else:
            path = Path(ckpt)
            if path.parent.name == "checkpoints" and path.parent.parent.name.startswith("version_"):
                run = path.parent.parent
        load_checkpoint(path)
        cfg.ckpt_path = str(path)
        m = re.fullmatch(r"version_(\d+)", run.name) if run is not None else None
        if m is None or run is None:
            return
        if subcommand != "fit":  # evaluations of a run are logged inside it: <run>/test/version_K
            for lg in loggers:
                args = (
                    lg.get("init_args") if isinstance(lg, dict) else getattr(lg, "init_args", None)
                )
                if args is not None and "save_dir" in args and "version" in args:
                    args["save_dir"], args["name"], args["version"] = str(run), subcommand, None
            return
        for lg in loggers:  # resume in the same run directory
            args = lg.get("init_args") if isinstance(lg, dict) else getattr(lg, "init_args", None)
            if args is not None and "version" in args:
                args["version"] = int(m.group(1))
                args["save_dir"] = str(run.parent.parent)
                args["name"] = run.parent.name

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        from lightning.pytorch.plugins.io import CheckpointIO

        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(
                AtomicCheckpointIO()
            )  # checkpoints are written to a temp file, then renamed
        config["plugins"] = plugins
        from imgcls.callbacks import EpochTimer

        callbacks = [*callbacks, EpochTimer()]  # logs time/train_epoch_s and images/s
        given = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in given
        ):
            # Redrawing the bar every step costs time on small nets and floods logs: every 10
            # steps on a terminal, every 100 when the output goes to a file.
            callbacks.append(TQDMProgressBar(refresh_rate=10 if sys.stdout.isatty() else 100))
        return super()._instantiate_trainer(config, callbacks)

    def before_fit(self) -> None:
        self._check_output_dir()

    def _check_output_dir(self) -> None:
        """A run directory we cannot write fails now, not after an epoch of training."""
        root = Path(self.trainer.default_root_dir)
        probe_dir = root
        while not probe_dir.exists() and probe_dir.parent != probe_dir:
            probe_dir = probe_dir.parent
        if not os.access(probe_dir, os.W_OK):
            raise SystemExit(
                f"imgcls: error: cannot write runs under {root.resolve()} ({probe_dir} is read-only); "
                "run from a writable folder or set trainer.default_root_dir and the logger's save_dir"
            )

    def before_predict(self) -> None:
        callbacks: list[Callback] = self.trainer.callbacks  # type: ignore[attr-defined]
        if not any(isinstance(cb, BasePredictionWriter) for cb in callbacks):
            callbacks.append(CSVPredictionWriter())

    def after_fit(self) -> None:
        # Rank 0 tells W&B and the user where the checkpoints are.
        report_checkpoints(self.trainer)

    def before_test(self) -> None:
        callbacks: list[Callback] = self.trainer.callbacks  # type: ignore[attr-defined]
        if not any(isinstance(cb, TestReport) for cb in callbacks):
            callbacks.append(TestReport())


def cli_main(args: list[str] | None = None) -> ImgclsCLI:
    torch.set_float32_matmul_precision("high")
    from imgcls.checkpoint import CheckpointError
    from imgcls.data.provision import DataError
    from imgcls.module import NonFiniteLossError

    try:
        return ImgclsCLI(args=args)
    except (DataError, CheckpointError, NonFiniteLossError, ValueError, FileNotFoundError) as e:
        if os.environ.get("IMGCLS_DEBUG"):
            raise
        print(f"imgcls: error: {e}\n(set IMGCLS_DEBUG=1 for the traceback)", file=sys.stderr)
        raise SystemExit(2) from None
