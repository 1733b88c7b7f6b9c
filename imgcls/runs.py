"""Where runs live, and which checkpoint a user means.

A run is ``<root>/<experiment>/version_N/`` (root ``runs`` unless
``--trainer.default_root_dir`` says otherwise; experiment ``<dataset>-<net>``, e.g.
``mnist-lenet5`` or ``mnist-mlp-32``) holding ``config.yaml``, ``metrics.csv`` and
``checkpoints/best.ckpt`` + ``checkpoints/last.ckpt`` (and ``snapshots/epoch=N.ckpt``, the
weights after N epochs, where the fit kept them); evaluations of a run are logged inside
it (``<run>/test/version_K``). A new run never reuses a folder.

Every command that takes a checkpoint understands the same spellings
(:func:`resolve_checkpoint`):

- ``best`` / ``last``: that checkpoint of the newest run of the experiment;
- ``runs/<experiment>``: the newest of its runs that holds the checkpoint asked for;
- ``runs/<experiment>/version_N``: that run's checkpoint;
- a folder that holds ``best.ckpt`` / ``last.ckpt`` itself, or a ``.ckpt`` file.

This module imports only the standard library.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imgcls.errors import RunNotFoundError

__all__ = [
    "RUNS_DIR",
    "checkpoint_of",
    "experiment_name",
    "is_run",
    "net_label",
    "newest_run",
    "resolve_checkpoint",
    "run_of",
    "runs",
    "snapshot_of",
    "snapshots",
]

RUNS_DIR = "runs"
CHECKPOINTS = "checkpoints"
SNAPSHOTS = "snapshots"
_VERSION = re.compile(r"version_(\d+)")
_SNAPSHOT = re.compile(r"epoch=(\d+)\.ckpt")


def net_label(net: str, net_args: Mapping[str, Any] | None = None) -> str:
    """Short name of a net: ``lenet5``, ``convnet``, ``mlp-32`` (MLP widths appended)."""
    hidden = (net_args or {}).get("hidden") if net == "mlp" else None
    if hidden is not None:
        return "-".join([net, *(str(h) for h in hidden)]) if len(hidden) else "mlp-linear"
    return net


def experiment_name(dataset: str, net: str, net_args: Mapping[str, Any] | None = None) -> str:
    """``<dataset>-<net label>``: the folder of an experiment's runs."""
    return f"{dataset}-{net_label(net, net_args)}"


def runs(experiment_dir: str | os.PathLike[str]) -> list[Path]:
    """The ``version_N`` folders of an experiment, oldest first (by N)."""
    found = []
    for d in Path(experiment_dir).glob("version_*"):
        m = _VERSION.fullmatch(d.name)
        if m and d.is_dir():
            found.append((int(m.group(1)), d))
    return [d for _, d in sorted(found)]


def checkpoint_of(run: str | os.PathLike[str], which: str = "best") -> Path:
    """``<run>/checkpoints/<which>.ckpt`` (which may not exist)."""
    return Path(run) / CHECKPOINTS / f"{which}.ckpt"


def snapshot_of(run: str | os.PathLike[str], epoch: int) -> Path:
    """``<run>/snapshots/epoch=N.ckpt``: the weights after N epochs (0: before training)."""
    return Path(run) / SNAPSHOTS / f"epoch={epoch}.ckpt"


def snapshots(run: str | os.PathLike[str]) -> dict[int, Path]:
    """The snapshots a run kept (``imgcls fit --snapshots.epochs``), by epoch, in order."""
    found = {}
    folder = Path(run) / SNAPSHOTS
    if folder.is_dir():
        for f in folder.iterdir():
            m = _SNAPSHOT.fullmatch(f.name)
            if m and f.is_file():
                found[int(m.group(1))] = f
    return dict(sorted(found.items()))


def newest_run(experiment_dir: str | os.PathLike[str], which: str | None = "best") -> Path | None:
    """The newest run of an experiment that holds ``<which>.ckpt`` (any run if ``which`` is None).

    Runs that never wrote that checkpoint (a run that failed before its first epoch, an
    evaluation-only folder) do not shadow an older good one.
    """
    for run in reversed(runs(experiment_dir)):
        if which is None or checkpoint_of(run, which).is_file():
            return run
    return None


def is_run(path: str | os.PathLike[str]) -> bool:
    """A ``version_N`` folder."""
    return _VERSION.fullmatch(Path(path).name) is not None and Path(path).is_dir()


def run_of(ckpt: str | os.PathLike[str]) -> Path | None:
    """The run folder a checkpoint file belongs to (``…/version_N/checkpoints/x.ckpt``, or a
    snapshot ``…/version_N/snapshots/epoch=N.ckpt``), or None."""
    path = Path(ckpt)
    if path.parent.name in (CHECKPOINTS, SNAPSHOTS) and _VERSION.fullmatch(path.parent.parent.name):
        return path.parent.parent
    return None


def resolve_checkpoint(
    spec: str | os.PathLike[str],
    which: str = "best",
    experiment_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The checkpoint file a user means by ``spec`` (see the module docstring).

    Args:
        spec: ``best``, ``last``, an experiment folder, a run folder or a checkpoint file.
        which: the checkpoint of a folder: ``best`` or ``last``.
        experiment_dir: the experiment that ``best`` / ``last`` refer to.

    Raises:
        RunNotFoundError: nothing there; the message says where it looked and what to do.
    """
    s = str(spec)
    if s in ("best", "last"):
        if experiment_dir is None:
            raise RunNotFoundError(
                f"`{s}` names a checkpoint of an experiment: give its folder instead, "
                f"e.g. {RUNS_DIR}/mnist-lenet5 (its newest run) "
                f"or {RUNS_DIR}/mnist-lenet5/version_0"
            )
        return _in_experiment(Path(experiment_dir), s, spelled=s)
    path = Path(s)
    if path.is_file():
        return path
    if is_run(path) or (path / CHECKPOINTS).is_dir():  # a run folder (of any name)
        ckpt = checkpoint_of(path, which)
        if ckpt.is_file():
            return ckpt
        raise RunNotFoundError(_missing(s, f"{ckpt}"))
    if (path / f"{which}.ckpt").is_file():  # a folder of checkpoints (ModelCheckpoint's dirpath)
        return path / f"{which}.ckpt"
    if path.is_dir():
        return _in_experiment(path, which, spelled=s)
    raise RunNotFoundError(_missing(s, f"{path} (no such file or folder)"))


def _in_experiment(experiment_dir: Path, which: str, spelled: str) -> Path:
    run = newest_run(experiment_dir, which)
    if run is None:
        where = f"{experiment_dir}/version_*/{CHECKPOINTS}/{which}.ckpt"
        raise RunNotFoundError(_missing(spelled, where))
    return checkpoint_of(run, which)


def _missing(spelled: str, where: str) -> str:
    return (
        f"{spelled}: no checkpoint found (looked for {where}); train a run first "
        "(imgcls fit …) or give a run folder or a .ckpt file"
    )


# ----------------------------------------------------------------------------- metrics.csv
# a curve's name -> the metrics.csv column it is read from (one value an epoch)
EPOCH_COLUMNS = {
    "train/loss": "train/loss_epoch",
    "val/loss": "val/loss",
    "train/acc": "train/acc",
    "val/acc": "val/acc",
}


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.csv``, each holding only its non-empty numeric cells."""
    rows = []
    with open(path, newline="") as fh:
        for raw in csv.DictReader(fh):
            row = {}
            for k, v in raw.items():
                try:
                    row[k] = float(v)
                except (TypeError, ValueError):
                    continue
            rows.append(row)
    return rows


def epoch_curves(rows: list[dict[str, float]]) -> dict[str, tuple[list[float], list[float]]]:
    """The ``EPOCH_COLUMNS`` curves of ``read_metrics`` rows: ``{name: (epochs, values)}``, an
    epoch's value at its end (epoch index 0 at 1.0, the weights "after 1 epoch"). A resumed
    epoch's row replaces the interrupted one's; a curve with no value is left out."""
    out = {}
    for name, column in EPOCH_COLUMNS.items():
        by_epoch = {int(r["epoch"]): r[column] for r in rows if column in r and "epoch" in r}
        if by_epoch:
            epochs = sorted(by_epoch)
            out[name] = ([e + 1.0 for e in epochs], [by_epoch[e] for e in epochs])
    return out
