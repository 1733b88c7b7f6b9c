"""The tune file: what a study stacks on, what it optimises and over which space.

A tune file (``configs/tune/*.yaml``) holds::

    configs: [../data/mnist.yaml, ../model/lenet5.yaml]  # fit configs, relative to this file
    metric: val/acc              # a validation metric the module logs every epoch
    direction: maximize          # default: minimize for a loss, else maximize
    n_trials: 20                 # the study's budget (--n_trials overrides it)
    sampler: {name: tpe, seed: null, n_startup_trials: 5}   # tpe | random
    pruner: {name: median, n_startup_trials: 3, n_warmup_steps: 0}
        # median | percentile (percentile: 25) | hyperband | successive_halving | none
    space:                       # the dotted keys `imgcls fit` takes
      model.scheduler.init_args.max_lr: {low: 1e-4, high: 3e-2, log: true}
      data.init_args.batch_size: [64, 128, 256]
      model.net_args.widths: [[8, 16], [16, 32]]

A range ``{low, high}`` of two integers is searched over integers (``step`` optional), else
over floats (``log: true`` for a log scale); a list is a set of choices (scalars, lists or
mappings). Several ``-c`` files stack: a tune file's keys replace the earlier ones' and its
``space`` adds to theirs; a plain fit config (only ``model`` / ``data`` / ``trainer`` …) is
stacked after the tune files' ``configs``.

This module imports neither torch nor optuna: the checks of a tune file are plain Python.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imgcls.errors import ConfigError

__all__ = ["Param", "TuneSpec", "load_spec", "metric_problem"]

TUNE_KEYS = ("configs", "metric", "direction", "n_trials", "sampler", "pruner", "space")
FIT_KEYS = (
    "seed_everything",
    "model",
    "data",
    "trainer",
    "checkpoint",
    "snapshots",
    "ckpt_path",
)
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "percentile", "hyperband", "successive_halving", "none")
# What ImageClassifier logs after every validation epoch (module.py); per-class accuracies are
# ``val/acc_class/<class name>``. Training metrics are logged after the validation of the same
# epoch, too late to prune on, so a study optimises a validation metric.
VAL_METRICS = ("val/acc", "val/f1", "val/loss")


@dataclass
class Param:
    """One dimension of the search space."""

    key: str
    kind: str  # "float" | "int" | "choice"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)

    def encoded_choices(self) -> list[Any]:
        """The choices as Optuna stores them: scalars as they are, lists and mappings as
        JSON text (Optuna's categorical values are scalars)."""
        return [c if _scalar(c) else json.dumps(c) for c in self.choices]

    def decode(self, value: Any) -> Any:
        if self.kind == "choice" and isinstance(value, str) and value not in self.choices:
            return json.loads(value)
        return value


@dataclass
class TuneSpec:
    files: list[str]
    configs: list[str]
    metric: str
    direction: str
    n_trials: int
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    space: list[Param]
    name: str  # the first tune file's stem: the default study name


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, bool | int | float | str)


def _number(v: Any, where: str) -> float:
    """A YAML number; PyYAML reads ``1e-4`` (no dot) as text, so text that is a number counts."""
    if isinstance(v, bool):
        raise ConfigError(f"{where}: expected a number, got {v!r}")
    if isinstance(v, int | float):
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {v!r}") from None


def _param(key: str, value: Any, path: str) -> Param:
    where = f"{path}: space: {key}"
    if not isinstance(key, str) or not key or " " in key:
        raise ConfigError(f"{path}: space: {key!r} is not a dotted key such as model.net_args.x")
    if isinstance(value, dict) and set(value) == {"choices"}:
        value = value["choices"]
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: an empty list of choices; give at least one value")
        encoded = [c if _scalar(c) else json.dumps(c) for c in value]
        if len(set(map(repr, encoded))) < len(encoded):
            raise ConfigError(f"{where}: a choice is listed twice: {value}")
        return Param(key, "choice", choices=list(value))
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: expected a list of choices or a range {{low: …, high: …}}, got {value!r}"
        )
    unknown = sorted(set(value) - {"low", "high", "log", "step"})
    if unknown or "low" not in value or "high" not in value:
        raise ConfigError(
            f"{where}: a range is {{low: …, high: …, log: true|false, step: …}}, got {value}"
        )
    low, high = _number(value["low"], where + ".low"), _number(value["high"], where + ".high")
    log = bool(value.get("log", False))
    step = value.get("step")
    step = None if step is None else _number(step, where + ".step")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"{where}: low and high must be finite numbers, got {low} and {high}")
    if low >= high:
        raise ConfigError(
            f"{where}: empty range (low {low} >= high {high}); give low < high, or set a single "
            "value as a fit option instead"
        )
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    if log and step is not None:
        raise ConfigError(f"{where}: a range takes log or step, not both")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}: step must be > 0, got {step}")
    is_int = all(
        isinstance(value[k], int) and not isinstance(value[k], bool) for k in ("low", "high")
    )
    is_int = is_int and (step is None or float(step).is_integer())
    return Param(key, "int" if is_int else "float", low=low, high=high, log=log, step=step)


class _Loader(yaml.SafeLoader):
    """YAML as jsonargparse reads it for numbers: ``1e-4`` and ``1.0e+30`` are floats (YAML
    1.2), not the text that PyYAML's YAML 1.1 makes of an exponent without a dot."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|"
        r"^[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?$|^[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?$"
    ),
    list("-+0123456789."),
)


def _read(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: no such tune file (configs/tune/ has the shipped ones)")
    try:
        data = yaml.load(p.read_text(), Loader=_Loader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {getattr(e, 'problem', None) or e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a tune file is a mapping ({', '.join(TUNE_KEYS)})")
    return data


def _options(path: str, what: str, value: Any, names: tuple[str, ...]) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or value.get("name") not in names:
        raise ConfigError(
            f"{path}: {what}: expected {{name: {' | '.join(names)}, …}}, got {value!r}"
        )
    return dict(value)


def load_spec(files: list[str]) -> TuneSpec:
    """The tune files (and fit configs) given with ``-c``, stacked and checked.

    Raises:
        ConfigError: a missing or malformed file, an unknown key, a bad range, sampler or pruner.
    """
    if not files:
        raise ConfigError("give a tune file: imgcls tune -c configs/tune/lenet5.yaml")
    merged: dict[str, Any] = {}
    space: dict[str, Param] = {}
    configs: list[str] = []
    extra: list[str] = []
    tune_files: list[str] = []
    for path in files:
        data = _read(path)
        if set(data) <= set(FIT_KEYS) and not set(data) & set(TUNE_KEYS):
            extra.append(path)  # a plain fit config, stacked after the tune files' configs
            continue
        unknown = sorted(set(data) - set(TUNE_KEYS))
        if unknown:
            raise ConfigError(
                f"{path}: unknown key(s) {', '.join(map(str, unknown))}; a tune file may hold "
                f"{', '.join(TUNE_KEYS)} (fit options go in the files listed under configs:)"
            )
        tune_files.append(path)
        here = Path(path).parent
        listed = data.get("configs") or []
        if not isinstance(listed, list) or not all(isinstance(c, str) for c in listed):
            raise ConfigError(f"{path}: configs: expected a list of fit config files")
        for c in listed:
            resolved = here / c if not Path(c).is_absolute() else Path(c)
            if not resolved.is_file():
                raise ConfigError(f"{path}: configs: {c} not found (looked for {resolved})")
            configs.append(str(resolved))
        given = data.get("space") or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{path}: space: expected a mapping of dotted keys to ranges")
        for key, value in given.items():
            space[key] = _param(key, value, path)
        merged.update({k: v for k, v in data.items() if k not in ("configs", "space")})
    if not tune_files:
        raise ConfigError(
            f"{files[0]} is a fit config, not a tune file: give a tune file first "
            "(configs/tune/*.yaml: configs, metric, space, …)"
        )
    if not space:
        raise ConfigError(f"{tune_files[0]}: space: nothing to search; list at least one key")
    metric = merged.get("metric", "val/acc")
    if not isinstance(metric, str):
        raise ConfigError(f"{tune_files[0]}: metric: expected a name such as val/acc")
    direction = merged.get("direction") or ("minimize" if "loss" in metric else "maximize")
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"direction: expected maximize or minimize, got {direction!r}")
    n_trials = merged.get("n_trials", 20)
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"n_trials: expected a whole number >= 1, got {n_trials!r}")
    return TuneSpec(
        files=tune_files,
        configs=configs + extra,
        metric=metric,
        direction=direction,
        n_trials=n_trials,
        sampler=_options(tune_files[0], "sampler", merged.get("sampler", "tpe"), SAMPLERS),
        pruner=_options(tune_files[0], "pruner", merged.get("pruner", "median"), PRUNERS),
        space=list(space.values()),
        name=Path(tune_files[0]).stem,
    )


def metric_problem(metric: str, class_names: list[str] | None, val_size: Any) -> str | None:
    """Why ``metric`` will never be logged by a fit of this config, or None if it will be."""
    known = [*VAL_METRICS, *(f"val/acc_class/{n}" for n in class_names or [])]
    if metric not in known:
        shown = [*VAL_METRICS, "val/acc_class/<class>"]
        return (
            f"metric {metric!r} is never logged by imgcls fit; a study optimises one of "
            f"{', '.join(shown)} (logged after every validation epoch)"
        )
    if val_size in (0, 0.0):
        return (
            f"metric {metric!r} is never logged: this config trains without validation "
            "(data.init_args.val_size 0); give a val_size > 0"
        )
    return None
