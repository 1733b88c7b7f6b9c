"""Run a study: each trial an ``imgcls fit`` run, reported to Optuna every epoch.

Trials run **in this process**: a LightningCLI (``imgcls fit``'s own ``ImgclsCLI``) is built
per trial with one callback added, which reports the monitored metric to the trial after
every validation epoch and stops the fit when the pruner says so. In-process rather than a
subprocess per trial because a trial is then a fit and nothing more: no second start of
Python, torch and Lightning per trial (seconds each, on a small CPU more than a short trial
of a small net), the pruner's answer is a method call, and a trial's failure arrives as the
exception that says why (``NonFiniteLossError`` for a NaN, the net's ``ConfigError`` for a
width it refuses), recorded on the trial as ``fail_reason`` while the study goes on. What a
subprocess would add, surviving a crash of the interpreter itself, the storage gives anyway:
a killed process's running trial is failed and re-queued with its parameters when the study
is started again on the same machine (its host, pid and the process's start time are recorded
on the trial, so a pid reused since is not taken for it), or by Optuna's heartbeat after
:data:`GRACE_S` seconds from any other process sharing the study. A SIGINT or SIGTERM stops
the study at once (:class:`Stopped`): the running trial is failed as stopped and queued again
before the command exits (130 / 143).

What is asked of Optuna is its public API only (``Study.tell``, ``FrozenTrial.number``, the
handlers of its root logger), so that a new Optuna release cannot change it under us.

Storage: a SQLite file in the experiment's folder by default, so rerunning the same command
continues the study; ``--storage`` takes any SQLAlchemy URL, and with a database server
(``postgresql+psycopg://…``) any number of processes and machines run trials of one study.
``--n_trials`` is the study's budget, not this process's: a process starts trials until the
study holds that many (finished, or running in a live process).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import fcntl
import io
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
import torch
from jsonargparse import Namespace
from lightning.pytorch import Callback, LightningModule, Trainer
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from imgcls import runs, staging
from imgcls.errors import ConfigError, ImgclsError, RunInUseError
from imgcls.training import cli as fit_cli
from imgcls.tune.spec import Param, TuneSpec, metric_problem
from imgcls.tune.storage import check_url, scrub, shown_url

__all__ = [
    "GRACE_S",
    "HEARTBEAT_S",
    "SpaceChanged",
    "Stopped",
    "StudyPlan",
    "distribution",
    "open_study",
    "prepare",
    "retried_from",
    "run_trials",
    "shown_url",
    "space_change",
    "stop_on_signals",
]

HEARTBEAT_S = 10
GRACE_S = 60
MAX_RETRY = 2
STUDY_DB = "study.db"


class MetricNeverLogged(ConfigError):
    """The monitored metric is missing after a validation epoch: no trial can be scored."""


class TrialFailed(RuntimeError):
    """A trial's fit failed; its reason is on the trial and the study goes on."""


@dataclass
class StudyPlan:
    """What ``prepare`` checked and settled before any trial runs: the trials' fit options,
    where the study is stored and under what name, its budget, where its outputs go. The
    Optuna study itself (``optuna.Study``, opened by ``open_study``) travels beside it."""

    spec: TuneSpec
    fit_args: list[str]
    base_net_args: dict[str, Any]
    experiment_dir: Path
    folder: Path  # <experiment>/tune/<study name>: best.yaml, trials.csv, plots, summary
    study_name: str
    storage_url: str
    n_trials: int


# ----------------------------------------------------------------------- parsing, checking
class _Parsed(Exception):  # noqa: N818 - a signal, not an error
    def __init__(self, config: Namespace) -> None:
        self.config = config


class _ParseOnly(fit_cli.ImgclsCLI):
    """``imgcls fit``'s parser and its checks, stopping before anything is built."""

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        raise _Parsed(self.config[self.subcommand] if self.subcommand else self.config)


def _parse(args: list[str]) -> Namespace:
    """The fit config of ``imgcls fit <args>``; a parse error becomes one line."""
    err = io.StringIO()
    seed_log = logging.getLogger("lightning.fabric.utilities.seed")
    level = seed_log.level
    seed_log.setLevel(logging.WARNING)  # "Seed set to 42": said by each trial, not by checks
    try:
        with contextlib.redirect_stderr(err):
            _ParseOnly(args=["fit", *args])
    except _Parsed as p:
        return p.config
    except SystemExit:
        lines = [ln.strip() for ln in err.getvalue().splitlines() if ln.strip()]
        said = next((ln for ln in lines if "error:" in ln), lines[-1] if lines else "")
        said = said.split("error:", 1)[-1].strip()
        raise ConfigError(f"imgcls fit refuses the trials' config: {said}") from None
    finally:
        seed_log.setLevel(level)
    raise ConfigError("imgcls fit did not parse the trials' config")  # pragma: no cover


def _config_args(spec: TuneSpec) -> list[str]:
    return [a for c in spec.configs for a in ("--config", c)]


def _given_keys(fit_args: list[str]) -> set[str]:
    return {a[2:].split("=", 1)[0] for a in fit_args if a.startswith("--")}


def _net_params(net: Any) -> set[str] | None:
    import inspect

    from imgcls.models import model_entrypoint

    try:
        return set(inspect.signature(model_entrypoint(str(net))).parameters)
    except ImgclsError:
        return None


def _first(p: Param) -> Any:
    if p.kind == "choice":
        return p.choices[0]
    return int(p.low) if p.kind == "int" else p.low


def overrides(params: dict[str, Any], base_net_args: dict[str, Any]) -> list[str]:
    """``imgcls fit`` options that set a trial's parameters; keys under ``model.net_args``
    are merged into the base config's net arguments (a mapping, passed whole)."""
    args, net_args = [], dict(base_net_args)
    for key, value in params.items():
        if key.startswith("model.net_args."):
            net_args[key.removeprefix("model.net_args.")] = value
        else:
            args.append(f"--{key}={json.dumps(value)}")
    if net_args != base_net_args:
        args.append(f"--model.net_args={json.dumps(net_args)}")
    return args


def prepare(
    spec: TuneSpec,
    fit_args: list[str],
    storage: str | None,
    study_name: str | None,
    n_trials: int | None,
) -> StudyPlan:
    """Check everything a trial will need, before any trial runs.

    Raises:
        ConfigError: an unknown key in the space or the fit options, a value imgcls fit
            refuses, a metric that is never logged, a searched key also given as a fit option,
            a storage URL that is not one (``storage.check_url``).
    """
    if storage is not None:
        check_url(storage)
    bad = [a for a in fit_args if a.startswith("-") and not a.startswith("--")]
    if bad:
        raise ConfigError(f"unknown option {bad[0]}; fit options are --key value")
    searched = {p.key for p in spec.space}
    both = sorted(searched & _given_keys(fit_args))
    if both:
        raise ConfigError(
            f"{both[0]} is searched by the tune file and also given as a fit option; drop one"
        )
    base = _parse([*_config_args(spec), *fit_args])
    base_net_args = dict(base.model.net_args or {})
    nets = next((p.choices for p in spec.space if p.key == "model.net"), [base.model.net])
    for p in spec.space:
        if p.key.startswith("model.net_args."):
            name = p.key.removeprefix("model.net_args.")
            takes = [_net_params(n) or set() for n in nets]
            if "." in name or not any(name in t for t in takes):
                raise ConfigError(
                    f"space: unknown key {p.key}: net {base.model.net!r} takes "
                    f"{', '.join(sorted(set().union(*takes)))} (model.net_args.<name>)"
                )
        elif p.key not in base and p.key != "model.net":
            raise ConfigError(
                f"space: unknown key {p.key}: not an option of imgcls fit for this config "
                "(the dotted keys of `imgcls fit --print_config`)"
            )
    # Every key at a value of its range: a value the parser refuses fails here, not per trial.
    parsed = _parse(
        [
            *_config_args(spec),
            *fit_args,
            *overrides({p.key: _first(p) for p in spec.space}, base_net_args),
        ]
    )
    for p in spec.space:
        if not p.key.startswith("model.net_args.") and p.key not in parsed:
            raise ConfigError(f"space: unknown key {p.key}: imgcls fit has no such option")
    from imgcls.data.registry import DATAMODULES

    dataset = fit_cli.dataset_of(base)
    class_names = list(DATAMODULES[dataset].class_names) if dataset in DATAMODULES else None
    data_args = base.data.get("init_args") if "init_args" in base.data else None
    val_size = data_args.get("val_size", 5000) if data_args is not None else 5000
    problem = metric_problem(spec.metric, class_names, val_size)
    if problem is not None and not (
        class_names is None and spec.metric.startswith("val/acc_class/")
    ):
        raise ConfigError(problem)
    root = Path(base.trainer.default_root_dir or runs.RUNS_DIR)
    experiment_dir = root / fit_cli.experiment_of(base)
    name = study_name or spec.name
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ConfigError(f"--study_name {name!r}: use letters, digits, '.', '_' and '-'")
    folder = experiment_dir / "tune" / name
    url = storage or f"sqlite:///{folder / STUDY_DB}"
    if url.startswith("postgresql://"):  # psycopg 3 is the driver installed with imgcls
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return StudyPlan(
        spec=spec,
        fit_args=fit_args,
        base_net_args=base_net_args,
        experiment_dir=experiment_dir,
        folder=folder,
        study_name=name,
        storage_url=url,
        n_trials=n_trials if n_trials is not None else spec.n_trials,
    )


# ------------------------------------------------------------------------------- storage
def _lost(trial: FrozenTrial) -> bool:
    """A failed trial whose process died (killed, machine lost) or was stopped (SIGINT,
    SIGTERM), not one that failed itself: its retry takes its place."""
    return trial.state == TrialState.FAIL and "fail_reason" not in trial.user_attrs


# What a trial's user attributes say about the run that ended, not about the retry: the
# retry, queued with a copy of them, would otherwise carry the old owner (a rerun could take
# it for a trial of a dead process the moment it starts) and the old cause.
RUN_ATTRS = ("owner", "stopped", "run_dir", "config", "epochs")


def _retry(study: optuna.Study, trial: FrozenTrial, max_retry: int | None = MAX_RETRY) -> None:
    """Queue ``trial`` again with its parameters, unless it has been retried ``max_retry``
    times already (a trial that kills its process each time)."""
    queued = copy.copy(trial)
    queued.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in RUN_ATTRS}
    RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, queued)


SCHEMA_RACE_ATTEMPTS = 5


def _schema_race(e: Exception) -> bool:
    """Whether a storage error is another process creating the same tables at the same time."""
    text = str(e).lower()
    return "already exists" in text or "duplicate key" in text or "unique" in text


def _storage_error(url: str, e: Exception) -> ConfigError:
    first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    first = scrub(first, url)  # a driver may echo what it was given
    return ConfigError(
        f"cannot open the study storage {shown_url(url)}: {first.strip()}; "
        "check the URL, that the database server runs and accepts this user"
    )


def _sqlite_folder(url: str) -> Path | None:
    """The folder of a SQLite study's file; None for any other storage."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url.removeprefix("sqlite:///").split("?", 1)[0]).parent


@contextlib.contextmanager
def _sqlite_lock(url: str) -> Iterator[None]:
    """For a SQLite study: one process of this machine at a time opens it. Optuna creates its
    tables when they are missing, checking each before creating it; two processes that start
    together on a new file both find a table missing and the second to create it fails
    (``table study_directions already exists``). Optuna's maintainers advise creating the
    schema in one process first; an exclusive ``flock`` on the study's folder makes every
    process that one in turn, for the fraction of a second an open takes."""
    folder = _sqlite_folder(url)
    if folder is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing it releases the lock


def open_study(plan: StudyPlan) -> optuna.Study:
    """Create or load the study; an unreachable or unusable storage is one ConfigError."""
    from imgcls.utils import check_writable_folder

    folder = _sqlite_folder(plan.storage_url)
    if folder is not None:
        check_writable_folder(folder, "--trainer.default_root_dir (or --storage)")
        folder.mkdir(parents=True, exist_ok=True)
    engine: dict[str, Any] = {}
    if plan.storage_url.startswith("postgresql"):
        engine["connect_args"] = {"connect_timeout": 10}
    wanted = optuna.study.StudyDirection[plan.spec.direction.upper()]

    def attempt_open() -> optuna.Study:
        storage = RDBStorage(
            plan.storage_url,
            engine_kwargs=engine,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=_retry,
        )
        n_before = 0
        with contextlib.suppress(KeyError):
            trials = optuna.load_study(study_name=plan.study_name, storage=storage).trials
            n_before = len(trials)
            # Before create_study, which would say it is "using an existing study" first.
            _check_space(plan, trials)
        return optuna.create_study(
            storage=storage,
            study_name=plan.study_name,
            direction=wanted,
            sampler=_sampler(plan.spec, n_before),
            pruner=_pruner(plan.spec),
            load_if_exists=True,
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(SCHEMA_RACE_ATTEMPTS):
            try:
                with _sqlite_lock(plan.storage_url):
                    study = attempt_open()
                break
            except ImgclsError:
                raise
            except (
                sqlalchemy.exc.IntegrityError,
                sqlalchemy.exc.ProgrammingError,
                sqlalchemy.exc.OperationalError,
            ) as e:
                # Machines started together on an empty database all create Optuna's tables;
                # the losers of that race see a duplicate type or table (SQLite: "table …
                # already exists", an OperationalError): the schema is there now, so open
                # again. (On one machine the lock above keeps a SQLite file out of the race.)
                if attempt + 1 < SCHEMA_RACE_ATTEMPTS and _schema_race(e):
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise _storage_error(plan.storage_url, e) from None
            except Exception as e:  # the driver's and SQLAlchemy's errors: one line of them
                raise _storage_error(plan.storage_url, e) from None
    if study.direction != wanted:
        raise ConfigError(
            f"study {plan.study_name!r} in {shown_url(plan.storage_url)} "
            f"{study.direction.name.lower()}s; "
            f"the tune file says {plan.spec.direction}: pass another --study_name"
        )
    metric = study.user_attrs.get("metric")
    if metric is None:
        study.set_user_attr("metric", plan.spec.metric)
    elif metric != plan.spec.metric:
        raise ConfigError(
            f"study {plan.study_name!r} optimises {metric}, the tune file {plan.spec.metric}: "
            "pass another --study_name"
        )
    _fail_dead_local_trials(study)
    return study


class SpaceChanged(ConfigError):
    """The tune file searches a key differently from the study's earlier trials."""


def distribution(p: Param) -> optuna.distributions.BaseDistribution:
    """The distribution ``suggest`` asks Optuna for, for comparing with earlier trials'."""
    d = optuna.distributions
    if p.kind == "choice":
        return d.CategoricalDistribution(p.encoded_choices())
    if p.kind == "int":
        step = int(p.step) if p.step is not None else 1
        return d.IntDistribution(int(p.low), int(p.high), log=p.log, step=step)
    return d.FloatDistribution(p.low, p.high, log=p.log, step=p.step)


def _described(dist: optuna.distributions.BaseDistribution) -> str:
    d = optuna.distributions
    if isinstance(dist, d.CategoricalDistribution):
        return "choices " + json.dumps(list(dist.choices))
    if isinstance(dist, d.IntDistribution | d.FloatDistribution):
        kind = "integers" if isinstance(dist, d.IntDistribution) else "floats"
        extra = " log" if dist.log else (f" step {dist.step}" if dist.step not in (None, 1) else "")
        return f"{kind} {dist.low}..{dist.high}{extra}"
    return repr(dist)  # pragma: no cover - suggest asks for no other kind


def space_change(plan: StudyPlan, trials: list[FrozenTrial]) -> str | None:
    """Why the tune file's space is not the one the study's earlier trials searched, naming
    the key; None when it is (or no trial has searched anything yet).

    Optuna refuses a categorical key whose choices changed only when a trial asks for it,
    as an exception in the middle of a trial; a range that changed it takes silently, and
    the sampler then models a mix of two spaces. A study keeps one space."""
    wanted = {p.key: distribution(p) for p in plan.spec.space}
    head = f"study {plan.study_name!r} in {shown_url(plan.storage_url)}"
    advice = "a study keeps one search space: pick a new --study_name (or restore the space)"
    searched: set[str] = set()
    for t in trials:
        for key, had in t.distributions.items():
            searched.add(key)
            if key not in wanted:
                return (
                    f"{head} searched {key} (trial {t.number}), which the tune file does not; "
                    f"{advice}"
                )
            if had != wanted[key]:
                return (
                    f"{head} searched {key} over {_described(had)} (trial {t.number}), the "
                    f"tune file over {_described(wanted[key])}; {advice}"
                )
    added = [key for key in wanted if key not in searched]
    if searched and added:
        return f"{head} never searched {added[0]}, which the tune file adds; {advice}"
    return None


def _check_space(plan: StudyPlan, trials: list[FrozenTrial]) -> None:
    problem = space_change(plan, trials)
    if problem is not None:
        raise SpaceChanged(problem)


def _sampler(spec: TuneSpec, n_before: int) -> optuna.samplers.BaseSampler:
    kw = {k: v for k, v in spec.sampler.items() if k != "name"}
    if kw.get("seed") is not None:  # a resumed study must not replay the first trials' draws
        kw["seed"] = int(kw["seed"]) + n_before
    kinds = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    try:
        return kinds[spec.sampler["name"]](**kw)  # type: ignore[operator]
    except TypeError as e:
        raise ConfigError(f"sampler {spec.sampler['name']}: {e}") from None


def _pruner(spec: TuneSpec) -> optuna.pruners.BasePruner:
    kw = {k: v for k, v in spec.pruner.items() if k != "name"}
    name = spec.pruner["name"]
    kinds: dict[str, Any] = {
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "none": optuna.pruners.NopPruner,
    }
    if name == "percentile":
        kw.setdefault("percentile", 25.0)
    try:
        return kinds[name](**kw)  # type: ignore[no-any-return]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"pruner {name}: {e}") from None


def _owner() -> dict[str, Any]:
    """Who runs a trial: this machine and process, and when the process started (a pid alone
    may be reused by another process once this one is gone)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": staging.process_start(pid)}


def _owner_gone(owner: dict[str, Any]) -> bool:
    """Whether the process of this machine that ran a trial (``_owner``) is gone. A trial of
    another machine, or of this process, is never judged here. An owner recorded without its
    start time (an older imgcls) is judged by its pid alone."""
    pid, start = int(owner.get("pid", 0)), owner.get("start")
    if owner.get("host") != socket.gethostname() or pid == os.getpid():
        return False
    return staging.process_gone(pid, start if isinstance(start, str) else None)


def _fail_dead_local_trials(study: optuna.Study) -> None:
    """Trials left RUNNING by a process of this machine that is gone (killed): failed now
    and queued again with their parameters, instead of after the heartbeat's grace period."""
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("owner")
        if not isinstance(owner, dict):
            # Killed between its creation and its first write (milliseconds): whoever ran it
            # is long gone once the heartbeat's grace period has passed.
            started = t.datetime_start
            if started is None or (now - started).total_seconds() < GRACE_S:
                continue
        elif not _owner_gone(owner):
            continue
        # Another process (its heartbeat check, or a rerun beside this one) may finish the
        # trial first: telling a finished trial raises ValueError before anything is written,
        # and losing the race while writing raises RuntimeError (UpdateFinishedTrialError on
        # newer Optuna). Either way that process has re-queued it: it is not queued twice.
        try:
            failed = study.tell(t.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):
            continue
        _retry(study, failed)


def counted(study: optuna.Study) -> int:
    """Trials that count against the budget: finished (complete, pruned, failed by
    themselves) or running; a lost trial's retry takes its place."""
    n = 0
    for t in study.get_trials(deepcopy=False):
        finished = t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        n += finished or (t.state == TrialState.FAIL and not _lost(t))
    return n


# -------------------------------------------------------------------------------- trials
class _Report(Callback):
    """Reports the metric after every validation epoch; stops the fit when pruned."""

    def __init__(self, trial: optuna.Trial, metric: str, direction: str) -> None:
        self.trial, self.metric, self.direction = trial, metric, direction
        self.values: list[float] = []
        self.pruned = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.log_dir:
            self.trial.set_user_attr("run_dir", str(Path(trainer.log_dir).resolve()))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        config = Path(trainer.log_dir or ".") / "config.yaml"
        if config.is_file():  # best.yaml comes from here, on whichever machine ran it
            self.trial.set_user_attr("config", config.read_text())

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            logged = sorted(k for k in trainer.callback_metrics if k.startswith("val/"))
            raise MetricNeverLogged(
                f"metric {self.metric!r} was not logged after the first validation epoch "
                f"(logged: {', '.join(logged)}); set metric: in the tune file to one of these"
            )
        v = float(value)
        self.values.append(v)
        self.trial.report(v, len(self.values) - 1)
        # After the last epoch there is nothing left to save: the trial completes, and its
        # value informs the sampler, rather than counting as pruned after a whole run.
        epochs = trainer.max_epochs or -1
        last = epochs > 0 and trainer.current_epoch + 1 >= epochs
        if not last and self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True

    def best(self) -> float:
        pick = max if self.direction == "maximize" else min
        return pick(self.values)


class _TrialCLI(fit_cli.ImgclsCLI):
    def __init__(self, report: _Report, args: list[str]) -> None:
        self._report = report
        super().__init__(args=args)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(self._report)  # type: ignore[attr-defined]
        return trainer


def suggest(trial: optuna.Trial, p: Param) -> Any:
    if p.kind == "choice":
        return p.decode(trial.suggest_categorical(p.key, p.encoded_choices()))
    if p.kind == "int":
        step = int(p.step) if p.step is not None else 1
        return trial.suggest_int(p.key, int(p.low), int(p.high), step=step, log=p.log)
    return trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip().removesuffix(":")


def _end_trial() -> None:
    """What one fit leaves behind in the process, closed before the next trial: a W&B run
    (else the next trial's ``wandb.init`` would log into it) and a process group."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def make_objective(plan: StudyPlan, running: list[optuna.Trial] | None = None) -> Any:
    """The objective of ``plan``'s trials; each trial it starts is put in ``running`` (the
    one a stop re-queues, ``run_trials``)."""

    def objective(trial: optuna.Trial) -> float:
        if running is not None:
            running[:] = [trial]
        try:
            return run(trial)
        except (TrialFailed, optuna.TrialPruned):
            raise
        except (Exception, KeyboardInterrupt) as e:
            # Optuna fails the trial on any of these; a failed trial without a reason reads
            # as lost (its process died) in trials.csv, which this one was not.
            if "fail_reason" not in trial.user_attrs:
                trial.set_user_attr("fail_reason", _reason(e))
            raise

    def run(trial: optuna.Trial) -> float:
        # Who runs it, in one write, first: a rerun on this machine finds the trials whose
        # process is gone (_fail_dead_local_trials).
        trial.set_user_attr("owner", _owner())
        params = {}
        for p in plan.spec.space:
            try:
                params[p.key] = suggest(trial, p)
            except ValueError as e:
                # Optuna refuses a key whose choices differ from another trial's: a process
                # with another tune file joined the study after this one checked its space.
                reason = (
                    f"{p.key}: {e} (another process searches study {plan.study_name!r} over "
                    "another space); pick a new --study_name"
                )
                trial.set_user_attr("fail_reason", reason)
                raise SpaceChanged(reason) from None
        args = [
            "fit",
            *_config_args(plan.spec),
            *plan.fit_args,
            *overrides(params, plan.base_net_args),
        ]
        report = _Report(trial, plan.spec.metric, plan.spec.direction)
        try:  # a value the parser refuses: its one line as the reason, not an exit status
            _parse(args[1:])
        except ConfigError as e:
            trial.set_user_attr("fail_reason", _reason(e))
            raise TrialFailed(_reason(e)) from e
        for attempt in range(3):
            try:
                _TrialCLI(report, args)
                break
            except MetricNeverLogged as e:
                trial.set_user_attr("fail_reason", str(e))
                raise
            except (Exception, SystemExit) as e:  # noqa: BLE001 - every failure is the trial's
                if isinstance(e, RunInUseError) and attempt < 2:
                    continue  # another process took the same run folder: take the next one
                reason = _reason(e) if not isinstance(e, SystemExit) else f"exit {e.code}"
                trial.set_user_attr("fail_reason", reason)
                raise TrialFailed(reason) from e
            finally:
                _end_trial()
        trial.set_user_attr("epochs", len(report.values))
        if report.pruned:
            raise optuna.TrialPruned(f"pruned after {len(report.values)} epoch(s)")
        if not report.values:
            trial.set_user_attr("fail_reason", f"no validation epoch logged {plan.spec.metric}")
            raise TrialFailed(f"no validation epoch logged {plan.spec.metric}")
        value = report.best()
        if not math.isfinite(value):
            trial.set_user_attr("fail_reason", f"{plan.spec.metric} is {value}")
            raise TrialFailed(f"{plan.spec.metric} is {value}")
        return value

    return objective


class _OneLineFailures(logging.Filter):
    """Optuna logs a failed trial with its traceback; a trial's failure is its one reason
    (a user error that ends the study, too: the command then says it in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TrialFailed | ImgclsError):
            record.exc_info = None
        return True


def one_line_failures() -> None:
    """Show a failed trial as its one line, without the traceback of ``TrialFailed``.

    The filter sits on the handlers of Optuna's root logger (named after the package, the one
    ``optuna.logging.disable_default_handler`` speaks of): a handler's filters see the records
    of every logger below it, so which of Optuna's modules logs a failed trial does not matter.
    """
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, _OneLineFailures) for f in handler.filters):
            handler.addFilter(_OneLineFailures())


# ------------------------------------------------------------------------------ stopping
class Stopped(BaseException):  # noqa: N818 - a signal, not an error
    """SIGINT (Ctrl-C) or SIGTERM asked the study to stop; raised wherever the process is.

    A ``BaseException``: neither the trial's fit (``except Exception``) nor Optuna (which
    fails the trial on an ``Exception`` or a ``KeyboardInterrupt``) takes it for a failure of
    the trial. Not a ``KeyboardInterrupt``: Lightning turns that into ``sys.exit(1)``, which
    would look like a trial that failed by itself."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.said = f"stopped by {self.name}"
        super().__init__(self.said)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Stopped`, once; a second signal is
    a plain ``KeyboardInterrupt`` (the command ends at once, without writing its outputs).

    Lightning runs the handler found at the start of a fit after its own SIGTERM handler
    (which alone would only end the fit: ``SIGTERMException``, a ``SystemExit``)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    fired: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if fired:
            raise KeyboardInterrupt
        fired.append(signum)
        raise Stopped(signum)

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in before:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _requeue_stopped(study: optuna.Study, trial: optuna.Trial | None, name: str) -> str:
    """Fail the trial a stop interrupted, marked as stopped, and queue it again with its
    parameters (however often it was stopped before: a stop is not the trial's doing); what
    became of it, for the command's last line."""
    if trial is None:
        return "before its first trial"
    frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == trial.number), None)
    if frozen is None or frozen.state != TrialState.RUNNING:
        return f"between trials (trial {trial.number} had ended)"
    try:
        trial.set_user_attr("stopped", name)
        failed = study.tell(trial, state=TrialState.FAIL)
    except (ValueError, RuntimeError):  # finished meanwhile by another process: it re-queued it
        return f"trial {trial.number} was finished meanwhile by another process"
    _retry(study, failed, max_retry=None)
    retry = max(
        (t.number for t in study.get_trials(deepcopy=False) if retried_from(t) == failed.number),
        default=None,
    )
    return (
        f"trial {failed.number} did not finish and is queued again with its parameters "
        f"(trial {retry})"
    )


def retried_from(trial: FrozenTrial) -> int | None:
    """The number of the trial ``trial`` is the retry of (the one it was copied from)."""
    history = trial.system_attrs.get("retry_history")
    return int(history[-1]) if isinstance(history, list) and history else None


def run_trials(plan: StudyPlan, study: optuna.Study, timeout: float | None) -> int:
    """Run trials until the study holds ``plan.n_trials`` or ``timeout`` seconds have passed
    (a running trial finishes); the number this process ran.

    Raises:
        Stopped: a SIGINT or SIGTERM (within ``stop_on_signals``); the trial it interrupted
            is failed and queued again first, and the exception's ``said`` tells so.
    """
    torch.set_float32_matmul_precision("high")
    fit_cli.quiet_lightning()
    running: list[optuna.Trial] = []
    objective = make_objective(plan, running)
    one_line_failures()
    start, ran = time.monotonic(), 0
    try:
        while counted(study) < plan.n_trials:
            if timeout is not None and time.monotonic() - start >= timeout:
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=True)
            ran += 1
    except Stopped as e:
        what = _requeue_stopped(study, running[0] if running else None, e.name)
        e.said = f"stopped by {e.name}: {what}; the same command continues the study"
        raise
    return ran
