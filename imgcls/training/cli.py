"""``imgcls fit | validate | test | predict``: a LightningCLI over ``ImageClassifier`` and the
data modules.

``imgcls/defaults.yaml`` is the default run (LeNet-5 on MNIST); the YAML files in
``configs/`` stack on it (data, model, trainer and logger pieces, or a recipe). Where runs
go and what ``--ckpt_path best | last | <folder>`` means is ``imgcls.runs``' business: a new
run gets a new ``<root>/<dataset>-<net>/version_N``; ``fit --ckpt_path last`` (or a run
folder) resumes that run in its own folder; validate / test / predict of a run log inside it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace, lazy_instance
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import (
    BasePredictionWriter,
    Callback,
    LearningRateMonitor,
    ProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from imgcls import runs
from imgcls.data.datamodule import ImageDataModule
from imgcls.errors import ConfigError, DiskFullError, ImgclsError
from imgcls.training.callbacks import (
    CSVPredictionWriter,
    DataCheck,
    EpochTimer,
    RngState,
    RunCheckpoint,
    RunCurves,
    RunDirectory,
    Snapshots,
    TestReport,
    report_checkpoints,
)
from imgcls.training.checkpoint_io import AtomicCheckpointIO, load_checkpoint, trained_precision
from imgcls.training.lightning_module import ImageClassifier, mismatch
from imgcls.training.loggers import (
    RunCSVLogger,
    check_tracking_server,
    drop_rows_after,
    share_run_folder,
)
from imgcls.utils import check_writable_folder

__all__ = [
    "DEFAULTS",
    "ImgclsCLI",
    "checkpoint_plugins",
    "cli_main",
    "dataset_of",
    "experiment_of",
    "progress_bar",
    "quiet_lightning",
]

DEFAULTS = Path(__file__).parent.parent / "defaults.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")
UNTRAINED = "untrained"  # --ckpt_path for evaluating the initial weights on purpose
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
TOP_LEVEL_KEYS = (
    "seed_everything",
    "model",
    "data",
    "trainer",
    "checkpoint",
    "snapshots",
    "optimizer",
    "lr_scheduler",
    "ckpt_path",
    "weights_only",
)


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
        try:
            super().setup(trainer, pl_module, stage)
        except OSError as e:
            if isinstance(e, ImgclsError) or e.errno not in DISK_FULL or not log_dir:
                raise
            # The file is new (the name above was free): a half-written config goes, so that
            # a resumed run's folder holds only what it held before.
            path = os.path.join(log_dir, self.config_filename)
            with contextlib.suppress(OSError):
                os.remove(path)
            raise DiskFullError(
                e.errno,
                f"the disk holding {log_dir} is full (no space left, or over quota): {path} "
                "could not be written and training did not start; nothing was lost. Free some "
                "space, or pass --trainer.default_root_dir with a folder on another disk",
            ) from e

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = self.parser.dump(self.config, skip_none=False, format="yaml")
        for logger in trainer.loggers:
            # CSV and TensorBoard share the run folder, which gets config.yaml already
            if not isinstance(logger, CSVLogger | TensorBoardLogger):
                logger.log_hyperparams({"config": config})


def dataset_of(cfg: Namespace) -> str:
    """The data set a parsed config trains on (its data module's ``dataset_name``)."""
    from imgcls.data.registry import DATAMODULES

    data_cls = str(cfg.data.class_path if "class_path" in cfg.data else "").rsplit(".", 1)[-1]
    return next((n for n, c in DATAMODULES.items() if c.__name__ == data_cls), "data")


def experiment_of(cfg: Namespace) -> str:
    """``<dataset>-<net>`` of a parsed config (``runs.experiment_name``)."""
    return runs.experiment_name(dataset_of(cfg), cfg.model.net, cfg.model.net_args)


def _config_files(args: list[str]) -> list[str]:
    """The files given with ``-c`` / ``--config`` in a command line."""
    found = []
    for i, a in enumerate(args):
        if a in ("-c", "--config") and i + 1 < len(args):
            found.append(args[i + 1])
        elif a.startswith("--config="):
            found.append(a.split("=", 1)[1])
    return found


def _check_config_file(path: str) -> Any:
    """A config file that is not YAML, or has a key no command knows, fails naming the file;
    else its content (None for a file that is not there or empty).

    (jsonargparse reports YAML errors without the file's name, and ignores an unknown key
    whose value is an empty mapping.)
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        return None  # jsonargparse says that the file does not exist
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(
            f"{path}: not valid YAML{line}: {getattr(e, 'problem', None) or e}"
        ) from e
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys (model:, data:, trainer:, …)")
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}; a config may hold "
            f"{', '.join(TOP_LEVEL_KEYS)}"
        )
    return data


def _empty_mappings(data: Any, prefix: str = "") -> list[str]:
    """Dotted keys of ``data`` whose value is an empty mapping."""
    found = []
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{prefix}{k}"
            found += [key] if v == {} else _empty_mappings(v, key + ".")
    return found


def _without_validation(cfg: Namespace) -> None:
    """With ``val_size: 0`` (the lectures' protocol trains on all 60,000 images) nothing can
    pick a best epoch: best.ckpt is then simply the latest epoch, so every command that takes a
    run folder still finds a checkpoint, instead of a warning every epoch and no best.ckpt."""
    data, checkpoint = cfg.get("data"), cfg.get("checkpoint")
    args = data.get("init_args") if data is not None else None
    if args is None or checkpoint is None or args.get("val_size", 1) not in (0, 0.0):
        return
    checkpoint.monitor = None


def _check_empty_keys(path: str, data: Any, cfg: Namespace) -> None:
    """jsonargparse drops a key whose value is ``{}`` without checking it; any such key that
    the parsed config does not hold is unknown."""
    unknown = [k for k in _empty_mappings(data) if k not in cfg]
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}")


def _check_classes(ckpt: dict[str, Any], path: Path, cfg: Namespace, subcommand: str) -> None:
    """Refuse a checkpoint whose class names are not the config's data set's, in order, before
    anything is read or written. The model's ``class_names`` are linked from the data module,
    so after a class folder is renamed the model would take the new names and every label
    would silently mean another class."""
    from imgcls.data.registry import DATAMODULES

    hp = ckpt.get("hyper_parameters") or {}
    trained, dataset = hp.get("class_names"), dataset_of(cfg)
    data_cls = DATAMODULES.get(dataset)
    if not trained or data_cls is None or hp.get("dataset") not in (None, dataset):
        return  # another data set altogether: the data check names that
    init_args = cfg.data.get("init_args")
    args = init_args.as_dict() if isinstance(init_args, Namespace) else dict(init_args or {})
    found = data_cls.classes_of(args)
    if found is not None and list(found) != list(trained):
        where = f" in {args['root']}" if args.get("root") else ""
        raise ConfigError(
            f"{path} was trained on the classes {list(trained)!r}, and the data set{where} now "
            f"has {list(found)!r} (a class folder renamed, added or removed): its labels would "
            "silently mean other classes. Name the folders as they were, or "
            + (
                "train a new run (without --ckpt_path)"
                if subcommand == "fit"
                else "use a checkpoint trained on these classes"
            )
        )


def _check_resumable(ckpt: dict[str, Any], path: Path, cfg: Namespace) -> None:
    """Refuse, before anything is written, a resume that cannot go as the user expects."""
    if "optimizer_states" not in ckpt:  # a snapshot (--snapshots.epochs) keeps weights only
        raise ConfigError(
            f"{path} holds weights only (no optimiser or schedule state), so a fit cannot "
            "resume from it; resume from its run's last.ckpt (--ckpt_path <run>), or use it "
            "where weights are enough (test, validate, predict, export)"
        )
    hp = ckpt.get("hyper_parameters", {})
    mine = {"net": cfg.model.net, "dataset": dataset_of(cfg)}
    detail = mismatch(hp, mine, "checkpoint", "config")
    if not detail and (hp.get("net_args") or {}) != (cfg.model.net_args or {}):
        detail = f"net_args: checkpoint {hp.get('net_args')!r} vs config {cfg.model.net_args!r}"
    if detail:
        raise ConfigError(
            f"{path} does not fit this config ({detail}); resume with the config it was trained "
            "with (its run's config.yaml: -c <run>/config.yaml)"
        )
    epochs_done = int(ckpt.get("epoch", -1)) + 1
    max_epochs = cfg.trainer.max_epochs
    if max_epochs is not None and max_epochs > 0 and epochs_done >= max_epochs:
        raise ConfigError(
            f"{path} has finished {epochs_done} epoch(s) and max_epochs is {max_epochs}: nothing "
            f"to train. Pass --trainer.max_epochs N with N > {epochs_done} to train longer"
        )
    steps_done = int(ckpt.get("global_step", 0))
    for state in ckpt.get("lr_schedulers") or []:
        total = state.get("total_steps") if isinstance(state, dict) else None
        if not total or not steps_done or max_epochs is None or max_epochs < 0:
            continue
        wanted = round(steps_done / epochs_done * max_epochs)
        if wanted > total:
            raise ConfigError(
                f"{path}: its one-cycle learning-rate schedule ends after {total} steps, and "
                f"max_epochs {max_epochs} needs about {wanted}; a resumed schedule cannot be "
                "stretched. Resume with the run's own max_epochs, or train a new run with "
                f"--trainer.max_epochs {max_epochs}"
            )


def _logger_args(cfg: Namespace) -> list[Any]:
    """The ``init_args`` of every logger in a parsed config (dicts or Namespaces)."""
    loggers = cfg.trainer.logger
    items = (
        loggers
        if isinstance(loggers, list)
        else [loggers]
        if isinstance(loggers, Namespace | dict)
        else []
    )
    found = []
    for lg in items:
        args = lg.get("init_args") if isinstance(lg, dict) else getattr(lg, "init_args", None)
        if args is not None:
            found.append(args)
    return found


def with_defaults(args: list[str], run: bool = True) -> list[str]:
    """``args`` with ``--config imgcls/defaults.yaml`` first, so that every config stacks on it.

    (A plain ``--config`` rather than the parser's ``default_config_files``, which jsonargparse
    does not merge correctly into the optimizer and scheduler callables.)
    """
    if run and args and args[0] in SUBCOMMANDS:
        return [args[0], "--config", str(DEFAULTS), *args[1:]]
    return args if run else ["--config", str(DEFAULTS), *args]


def _user_error_in_chain(e: BaseException) -> ImgclsError | None:
    seen: set[int] = set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        if isinstance(x, ImgclsError):
            return x
        seen.add(id(x))
        x = x.__cause__ or x.__context__
    return None


def checkpoint_plugins(plugins: Any = None) -> list[Any]:
    """A trainer's ``plugins`` (none, one or a list) as a list that saves checkpoints
    atomically: ``AtomicCheckpointIO`` (temp file, then rename) unless a ``CheckpointIO`` is
    given. Every trainer of imgcls, ``imgcls fit``'s and insight's, is built with it."""
    plugins = plugins or []
    plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


def progress_bar() -> TQDMProgressBar:
    """The progress bar of every trainer of imgcls. Redrawing it every step costs time on
    small nets and floods logs: every 10 steps on a terminal, every 100 when the output goes
    to a file."""
    return TQDMProgressBar(refresh_rate=10 if sys.stdout.isatty() else 100)


class ImgclsCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        # Loggers write to the trainer's default_root_dir (filled in below), so that
        # --trainer.default_root_dir moves the whole run: logs, config and checkpoints.
        trainer_defaults = {
            "default_root_dir": runs.RUNS_DIR,
            "logger": lazy_instance(RunCSVLogger, name="auto"),
        }
        super().__init__(
            ImageClassifier,
            ImageDataModule,
            subclass_mode_data=True,
            save_config_callback=RunConfigCallback,
            trainer_defaults=trainer_defaults,
            parser_kwargs={"parser_mode": "yaml"},
            args=with_defaults(sys.argv[1:] if args is None else args, run),
            run=run,
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
        # Off unless epochs are given: --snapshots.epochs "[0, 1, 2, 5, -1]" keeps the weights
        # at those epochs in <run>/snapshots/ (configs/callbacks/snapshots.yaml).
        parser.add_lightning_class_args(Snapshots, "snapshots")
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

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        files = _config_files(args) if isinstance(args, list) else []
        contents = {path: _check_config_file(path) for path in files}
        super().parse_arguments(parser, args)
        cfg = self.config[self.config.subcommand] if self.config.get("subcommand") else self.config
        for path, data in contents.items():
            _check_empty_keys(path, data, cfg)
        # Before LightningCLI reads the checkpoint's hyper-parameters: resolve the spellings
        # and open the file safely, so a damaged one fails naming itself.
        if self.config.get("subcommand"):
            self._resolve_ckpt_path(self.config[self.config.subcommand], self.config.subcommand)
        _without_validation(cfg)

    def _resolve_ckpt_path(self, cfg: Namespace, subcommand: str) -> None:
        spec = cfg.get("ckpt_path")
        if spec == UNTRAINED and subcommand != "fit":
            cfg.ckpt_path = None  # asked for explicitly: evaluate the initial weights
            return
        if spec is None:
            if subcommand != "fit":
                raise ConfigError(
                    f"`imgcls {subcommand}` needs trained weights: pass --ckpt_path best, last, a "
                    f"run folder or a .ckpt file (or --ckpt_path {UNTRAINED} to evaluate a "
                    "randomly initialised model on purpose)"
                )
            return
        root = Path(cfg.trainer.default_root_dir or runs.RUNS_DIR)
        which = "last" if subcommand == "fit" else "best"
        path = runs.resolve_checkpoint(spec, which, experiment_dir=root / experiment_of(cfg))
        ckpt = load_checkpoint(path, resume=subcommand == "fit")
        cfg.ckpt_path = str(path)
        if subcommand != "fit" and cfg.trainer.get("precision") is None:
            # Evaluate in the precision the run trained in, as every other evaluation does.
            cfg.trainer.precision = trained_precision(path)
        if subcommand == "fit":
            _check_resumable(ckpt, path, cfg)
        _check_classes(ckpt, path, cfg, subcommand)
        run = runs.run_of(path)
        if subcommand != "fit":
            # An evaluation neither saves checkpoints nor needs the checkpoint callback's state;
            # Lightning's warning that the state is not reloaded says nothing a user can act on.
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
        if run is None:
            return
        if subcommand == "fit":  # the rows of an interrupted epoch are logged again on resume
            epoch, step = int(ckpt.get("epoch", -1)), ckpt.get("global_step")
            drop_rows_after(run / "metrics.csv", epoch, None if step is None else int(step))
        for args in _logger_args(cfg):
            if "version" not in args:
                continue
            if subcommand == "fit":  # resume in the same run directory
                args["save_dir"], args["name"] = str(run.parent.parent), run.parent.name
                args["version"] = int(run.name.removeprefix("version_"))
            elif "save_dir" in args:  # evaluations of a run are logged inside it
                args["save_dir"], args["name"], args["version"] = str(run), subcommand, None

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        from imgcls.models import model_entrypoint

        model_entrypoint(cfg.model.net)  # an unknown net fails here, listing the valid names
        name = experiment_of(cfg)
        for args in _logger_args(cfg):
            if args.get("name") in (None, "", "auto"):
                args["name"] = name
            if "save_dir" in args and args["save_dir"] is None:
                args["save_dir"] = cfg.trainer.default_root_dir
            if "tracking_uri" in args:  # MLflow: a server that is not there fails before training
                check_tracking_server(
                    args.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or ""
                )

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as e:
            # jsonargparse re-raises an error of a class's __init__ as its own ValueError; a
            # user error (a bad val_size in a YAML, say) keeps its own class and message.
            cause = _user_error_in_chain(e)
            if cause is None:
                raise
            raise cause from e

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        cfg = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_cfg = cfg["trainer"]
        if trainer_cfg.get("enable_checkpointing") is False:
            # The always-on checkpoint callback stands down when checkpointing is switched off.
            cfg["checkpoint"] = Callback()
        plugins = checkpoint_plugins(trainer_cfg.get("plugins"))
        given = trainer_cfg.get("callbacks") or []
        given = list(given) if isinstance(given, list | tuple) else [given]
        callbacks = [*given, RunDirectory(), EpochTimer(), RngState(), DataCheck(), RunCurves()]
        logger = trainer_cfg.get("logger")
        if logger not in (False, None, []) and not any(
            isinstance(c, LearningRateMonitor) for c in given
        ):
            # the learning rate in metrics.csv (lr-<optimizer>), for curves.png and the loggers
            callbacks.append(LearningRateMonitor())
        bar_wanted = trainer_cfg.get("enable_progress_bar", True) is not False
        if bar_wanted and not any(isinstance(c, ProgressBar) for c in given):
            callbacks.append(progress_bar())
        try:
            trainer = super().instantiate_trainer(
                **{"plugins": plugins, "callbacks": callbacks, **kwargs}
            )
        except MisconfigurationException as e:  # e.g. accelerator gpu on a machine without one
            raise ConfigError(f"the trainer cannot start as configured: {e}") from e
        share_run_folder(trainer.loggers)
        return trainer

    def before_fit(self) -> None:
        self._check_writable()

    def before_validate(self) -> None:
        self._check_writable()

    def _check_writable(self) -> None:
        """A run folder we cannot write fails now, not after an epoch or a whole evaluation."""
        # where the loggers write (an evaluation of a run: inside it), else the runs' root
        folders = [lg.save_dir for lg in self.trainer.loggers if lg.save_dir is not None]
        for folder in folders or [self.trainer.default_root_dir]:
            check_writable_folder(folder, "--trainer.default_root_dir")

    def after_fit(self) -> None:
        report_checkpoints(self.trainer)

    def before_test(self) -> None:
        # A folder without test/ is refused before anything is written: it has no held-out
        # images, and testing on the training images would report a score that is not one.
        self.datamodule.check_held_out("test")
        self._check_writable()
        self._add_callback(TestReport, TestReport)

    def before_predict(self) -> None:
        if self.datamodule.predict_dir is None:  # else it predicts on the files given
            self.datamodule.check_held_out("predict")
        self._check_writable()
        self._add_callback(BasePredictionWriter, CSVPredictionWriter)

    def _add_callback(self, kind: type[Callback], make: type[Callback]) -> None:
        callbacks: list[Callback] = self.trainer.callbacks  # type: ignore[attr-defined]
        if not any(isinstance(cb, kind) for cb in callbacks):
            callbacks.append(make())


class _DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage()


def quiet_lightning() -> None:
    """Silence what a user cannot act on: Lightning's adverts for its cloud services, a deprecation
    inside Lightning's own pytree code, and LightningCLI's warning that ``args`` and
    ``sys.argv`` are both given (``imgcls`` builds ``args`` from ``sys.argv`` on purpose)."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropLightningTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")


def cli_main(args: list[str] | None = None) -> ImgclsCLI:
    torch.set_float32_matmul_precision("high")
    quiet_lightning()
    try:
        cli = ImgclsCLI(args=args)
    except OSError as e:
        if isinstance(e, ImgclsError) or e.errno not in DISK_FULL:
            raise
        # Any other write of the run (its logs, a logger's files) on a full disk; checkpoints
        # are written to a temporary file and renamed, so the ones saved before are whole.
        raise DiskFullError(
            e.errno,
            "the disk is full (no space left, or over quota)"
            + (f" writing {e.filename}" if e.filename else "")
            + ": the run stopped; checkpoints saved before are intact. Free some space, or pass "
            "--trainer.default_root_dir with a folder on another disk, and train again "
            "(--ckpt_path last resumes from the last checkpoint, if one was saved)",
        ) from e
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Lightning leaves the process group to its launcher; left to interpreter exit, gloo's
        # threads can abort a rank ("terminate called without an active exception").
        torch.distributed.destroy_process_group()
    return cli
