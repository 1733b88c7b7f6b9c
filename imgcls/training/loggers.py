"""The loggers of a run, each writing inside the run folder.

- ``RunCSVLogger``: Lightning's CSV logger whose ``metrics.csv`` survives a resume (rows are
  appended, and ``drop_rows_after`` removes those of an epoch the resume trains again); imgcls
  reads that file back (``imgcls report``, the methods table).
- ``WandbLogger``: W&B that never gets in the way of training. It runs offline by itself when
  no API key is configured (sync later with ``wandb sync runs/wandb/offline-run-*``), and if
  W&B itself fails to start, the run goes on with W&B disabled and a warning, since a run that
  does not need W&B must not die of it. Under DDP, Lightning's logger creates one W&B run, on
  rank 0.
- ``RunMLFlowLogger``: MLflow, tracking URI from ``MLFLOW_TRACKING_URI`` or the option; the
  experiment is the run's (``<dataset>-<net>``), the MLflow run is named after the run folder,
  holds the config as params, the metrics, and the best checkpoint and ``config.yaml`` as
  artifacts. A tracking server that cannot be reached fails before training starts.
- ``RunTensorBoardLogger``: TensorBoard event files in the run folder itself (it takes the CSV
  logger's folder rather than counting versions of its own), and at the end of each stage
  the hyper-parameters with the final metrics for the HParams tab.
"""

from __future__ import annotations

import csv
import io
import netrc
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from imgcls.errors import ConfigError
from imgcls.runs import RUNS_DIR
from imgcls.utils import atomic_write_text

__all__ = [
    "RUN_DIR_TAG",
    "RunCSVLogger",
    "RunMLFlowLogger",
    "RunTensorBoardLogger",
    "WandbLogger",
    "check_tracking_server",
    "drop_rows_after",
    "share_run_folder",
    "wandb_api_key_available",
]


def wandb_api_key_available() -> bool:
    """True when ``WANDB_API_KEY`` is set or ``~/.netrc`` holds a key for api.wandb.ai."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators(
            os.environ.get("WANDB_BASE_URL", "api.wandb.ai").split("//")[-1]
        )
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


class WandbLogger(_LightningWandbLogger):
    def __init__(
        self,
        name: str | None = None,
        save_dir: str | None = None,
        project: str = "imgcls",
        offline: bool | None = None,
        log_model: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            name: W&B run name (``auto``: ``<dataset>-<net>``, set by the CLI).
            save_dir: where W&B keeps its files (``<save_dir>/wandb/``); default: the
                trainer's ``default_root_dir`` (set by the CLI), else ``runs``.
            project: W&B project.
            offline: None = offline unless an API key is configured.
            log_model: upload checkpoints as artifacts (online only).
        """
        if offline is None:
            offline = (
                os.environ.get("WANDB_MODE") in ("offline", "dryrun")
                or not wandb_api_key_available()
            )
        super().__init__(
            name=name,
            save_dir=save_dir or RUNS_DIR,
            project=project,
            offline=offline,
            log_model=False if offline else log_model,
            **kwargs,
        )
        self.disabled_run: Any = None  # the stand-in run once W&B failed to start

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self.disabled_run is not None:
            return self.disabled_run
        try:
            return _LightningWandbLogger.experiment.fget(self)  # type: ignore[attr-defined]
        except Exception as e:  # W&B failing to start must not kill the training run
            import wandb

            warnings.warn(
                f"W&B failed to start ({type(e).__name__}: {e}); continuing with W&B disabled",
                stacklevel=2,
            )
            self.disabled_run = wandb.init(mode="disabled")
            return self.disabled_run


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer removes an existing metrics.csv when it starts (and warns that the
    folder is not empty); a resumed run must append to it.

    The file is moved aside while Lightning's writer starts and moved back after, so the writer
    sees an empty slot and then appends to the old rows under their header. A crash between the
    two renames leaves the rows in ``metrics.csv.resuming``, which the next start puts back.
    """

    def __init__(self, log_dir: str) -> None:
        metrics = os.path.join(log_dir, self.NAME_METRICS_FILE)
        aside = metrics + ".resuming"
        if os.path.isfile(metrics):
            os.replace(metrics, aside)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Experiment logs directory .* exists")
            super().__init__(log_dir)
        if os.path.isfile(aside):
            os.replace(aside, metrics)
            with open(metrics, newline="") as fh:
                header = next(csv.reader(fh), [])
            self.metrics_keys = sorted(set(header))


def drop_rows_after(
    metrics_csv: str | os.PathLike[str], epoch: int, step: int | None = None
) -> int:
    """Remove the rows of epochs after ``epoch`` from a run's ``metrics.csv``; return how many.

    A run interrupted mid-epoch has logged part of an epoch that its resume (from the last
    finished epoch's checkpoint) trains again: without this its rows would appear twice. Rows
    without an epoch (the learning rate, logged per step) go when their step is ``step`` (the
    checkpoint's global step) or later.
    """
    path = Path(metrics_csv)
    if not path.is_file():
        return 0
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames or [], list(reader)

    def kept(r: dict[str, str]) -> bool:
        if r.get("epoch"):
            return int(float(r["epoch"])) <= epoch
        return step is None or not r.get("step") or int(float(r["step"])) < step

    keep = [r for r in rows if kept(r)]
    if len(keep) < len(rows):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(keep)
        atomic_write_text(path, buf.getvalue())
    return len(rows) - len(keep)


class RunCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume (``--ckpt_path last``): rows are
    appended."""

    def __init__(
        self, save_dir: str | None = None, name: str | None = "auto", **kwargs: Any
    ) -> None:
        """
        Args:
            save_dir: the runs' root; default: the trainer's ``default_root_dir`` (set by the
                CLI), else ``runs``.
            name: the experiment (``auto``: ``<dataset>-<net>``, set by the CLI).
            kwargs: the other arguments of Lightning's ``CSVLogger`` (version, prefix, ...).
        """
        super().__init__(save_dir=save_dir or RUNS_DIR, name=name, **kwargs)
        self.appending_writer: _AppendingWriter | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        # Lightning's property would start its own writer, which deletes metrics.csv.
        if self.appending_writer is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self.appending_writer = _AppendingWriter(log_dir=self.log_dir)
        return self.appending_writer

    def finalize(self, status: str) -> None:
        if self.appending_writer is not None:  # nothing was logged: no file to flush
            self.save()


class RunTensorBoardLogger(TensorBoardLogger):
    """TensorBoard in the run folder: ``tensorboard --logdir runs`` shows every run.

    Once the CLI hands it the run's CSV logger (:func:`share_run_folder`), its name, version
    and folder are that logger's, so both write into the same ``version_N``; a second version
    counter could pick another N when the two start at different moments. At the end of a
    stage it records the hyper-parameters with the final metrics (best and last validation
    accuracy, last validation loss, test accuracy) for the HParams tab.
    """

    def __init__(
        self,
        save_dir: str | None = None,
        name: str | None = "auto",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            save_dir: the runs' root; default: the trainer's ``default_root_dir`` (set by the
                CLI), else ``runs``.
            name: the experiment (``auto``: ``<dataset>-<net>``, set by the CLI).
            version: the run's version (set by the CLI on a resume).
            log_graph: also record the model graph (the Graphs tab).
            default_hp_metric: Lightning's placeholder ``hp_metric``; off, since the final
                metrics are logged with the hyper-parameters at the end.
            kwargs: the other arguments of Lightning's ``TensorBoardLogger``.
        """
        super().__init__(
            save_dir=save_dir or RUNS_DIR,
            name=name,
            version=version,
            log_graph=log_graph,
            default_hp_metric=default_hp_metric,
            **kwargs,
        )
        self.run_logger: Logger | None = None
        self.last_metrics: dict[str, float] = {}
        self.best_val_acc: float | None = None

    @property
    def name(self) -> str:
        if self.run_logger is not None:
            return str(self.run_logger.name)
        return str(super().name)

    @property
    def version(self) -> int | str:
        if self.run_logger is not None and self.run_logger.version is not None:
            return self.run_logger.version
        return super().version

    @property
    def root_dir(self) -> str:
        if self.run_logger is not None and self.run_logger.root_dir is not None:
            return self.run_logger.root_dir
        return super().root_dir

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        self.last_metrics.update({k: float(v) for k, v in metrics.items()})
        if "val/acc" in metrics:
            acc = float(metrics["val/acc"])
            self.best_val_acc = acc if self.best_val_acc is None else max(acc, self.best_val_acc)

    def final_metrics(self) -> dict[str, float]:
        """The metrics shown beside the hyper-parameters (HParams tab)."""
        out = {f"final/{k.replace('/', '_')}": self.last_metrics[k]
               for k in ("val/acc", "val/loss", "test/acc", "test/loss", "train/acc")
               if k in self.last_metrics}  # fmt: skip
        if self.best_val_acc is not None:
            out["final/best_val_acc"] = self.best_val_acc
        return out

    def finalize(self, status: str) -> None:
        final = self.final_metrics()
        if status == "success" and final:
            super().log_hyperparams(self.hparams, metrics=final)
        super().finalize(status)


RUN_DIR_TAG = "imgcls.run_dir"


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Fail with one line when an HTTP tracking URI answers nothing (any HTTP answer, an
    error status included, means that a server is there)."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri, timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(
            f"the MLflow tracking server {uri} cannot be reached ({reason}); training did not "
            "start. Start it (mlflow server --backend-store-uri sqlite:///mlflow.db --port 5000), "
            "or point MLFLOW_TRACKING_URI (or tracking_uri in configs/logger/mlflow.yaml) at one"
        ) from None


class RunMLFlowLogger(MLFlowLogger):
    """MLflow beside the CSV log: one MLflow run per imgcls run (a resume and a test are runs
    of their own), in the experiment ``<dataset>-<net>``."""

    def __init__(
        self,
        name: str | None = "auto",
        tracking_uri: str | None = None,
        save_dir: str | None = None,
        log_checkpoint: bool = True,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            name: the MLflow experiment (``auto``: ``<dataset>-<net>``, set by the CLI).
            tracking_uri: the tracking server; default ``$MLFLOW_TRACKING_URI``, else a SQLite
                store ``<save_dir>/mlflow.db`` with artifacts in ``<save_dir>/mlartifacts``.
            save_dir: the runs' root (for the local store); set by the CLI.
            log_checkpoint: upload the best checkpoint at the end of fit.
            kwargs: the other arguments of Lightning's ``MLFlowLogger`` (tags, run_name, ...).
        """
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        root = os.path.abspath(save_dir or RUNS_DIR)
        if uri:
            check_tracking_server(uri)
        else:  # MLflow 3 refuses its plain-file store: a SQLite one beside the runs
            uri = f"sqlite:///{os.path.join(root, 'mlflow.db')}"
            if not kwargs.get("artifact_location"):  # the CLI passes None for it
                kwargs["artifact_location"] = Path(root, "mlartifacts").as_uri()
        super().__init__(experiment_name=name or "imgcls", tracking_uri=uri, **kwargs)
        self.log_checkpoint = log_checkpoint
        self.run_logger: Logger | None = None
        self.checkpoint_callback: ModelCheckpoint | None = None
        self.logged = False  # an MLflow run is created by the first log call only

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.logged = True
        super().log_metrics(metrics, step)

    def log_hyperparams(self, params: Any) -> None:
        self.logged = True
        params = dict(params) if isinstance(params, Mapping) else vars(params)
        config = params.pop("config", None)
        if isinstance(config, str):  # the resolved config (RunConfigCallback): params config/...
            import yaml

            params["config"] = yaml.safe_load(config)
        super().log_hyperparams(params)

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        self.checkpoint_callback = checkpoint_callback

    def finalize(self, status: str = "success") -> None:
        folder = self.run_logger.log_dir if self.run_logger is not None else None
        if status == "success" and folder and self.logged and self.run_id is not None:
            client, run_id = self.experiment, self.run_id
            # absolute: `imgcls export --mlflow` finds the MLflow run of a run folder by it
            client.set_tag(run_id, RUN_DIR_TAG, os.path.abspath(folder))
            client.set_tag(run_id, "mlflow.runName", _run_label(folder))
            config = os.path.join(folder, "config.yaml")
            if os.path.isfile(config):
                client.log_artifact(run_id, config)
            best = self.checkpoint_callback.best_model_path if self.checkpoint_callback else ""
            if self.log_checkpoint and best and os.path.isfile(best):
                client.log_artifact(run_id, best, "checkpoints")
        super().finalize(status)


def _run_label(folder: str) -> str:
    """``<experiment>/version_N`` of a run folder (``.../version_N/test/version_K`` too)."""
    parts = Path(folder).parts
    return (
        "/".join(parts[-2:])
        if len(parts) < 4 or parts[-2] not in ("test", "validate", "predict")
        else "/".join(parts[-4:])
    )


def share_run_folder(loggers: Iterable[Logger]) -> None:
    """Point every ``RunTensorBoardLogger`` and ``RunMLFlowLogger`` at the run's CSV logger,
    so that all of a run's loggers write into, or name, one folder (called by the CLI before
    anything is logged)."""
    loggers = list(loggers)
    run_logger = next((lg for lg in loggers if isinstance(lg, CSVLogger)), None)
    if run_logger is None:
        return
    for lg in loggers:
        if isinstance(lg, RunTensorBoardLogger | RunMLFlowLogger):
            lg.run_logger = run_logger
