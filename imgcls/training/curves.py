"""Pictures every run folder gets: ``curves.png`` after ``fit`` (loss, accuracy and learning
rate from the run's ``metrics.csv``) and ``confusion_matrix.png`` after ``test``.

The series come from ``metrics.csv`` alone (:func:`run_series`), so that the picture shows what
the file says and ``imgcls compare`` draws several runs with the same code. Figures are built
on ``matplotlib.figure.Figure`` (no pyplot state, no GUI backend) and written atomically. A
picture is a convenience: the callers turn a failure to draw it into a warning.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from imgcls.runs import EPOCH_COLUMNS, epoch_curves, read_metrics
from imgcls.utils import atomic_path

__all__ = [
    "CURVES_FILE",
    "Series",
    "confusion_matrix_figure",
    "curves_figure",
    "read_metrics",
    "run_series",
    "save_png",
    "write_curves",
]

CURVES_FILE = "curves.png"
DPI = 100
STEP_LOSS = "train/loss"  # the step loss, logged every log_every_n_steps
LR_PREFIX = "lr-"  # LearningRateMonitor's columns: lr-<optimizer>

# a series: x in epochs (an epoch's value at its end: epoch 0 at x = 1) and the values
Series = tuple[list[float], list[float]]


def run_series(metrics_csv: str | os.PathLike[str]) -> dict[str, Series]:
    """The curves of a run as plotted: ``train/loss``, ``val/loss``, ``train/acc``,
    ``val/acc`` per epoch, ``train/loss_step`` and ``lr`` per logged step; each a pair
    (x in epochs, values). A series with no value is left out.

    The step series are placed in epochs through the steps an epoch takes, read from the
    epoch-level rows (their ``step`` is the epoch's last step).
    """
    rows = read_metrics(metrics_csv)
    out: dict[str, Series] = epoch_curves(rows)
    steps_per_epoch = _steps_per_epoch(rows)
    lr_column = next((k for r in rows for k in r if k.startswith(LR_PREFIX)), None)
    step_columns: dict[str, str | None] = {"train/loss_step": STEP_LOSS, "lr": lr_column}
    for name, col in step_columns.items():
        if col is None or steps_per_epoch is None:
            continue
        by_step = {r["step"]: r[col] for r in rows if col in r and "step" in r}
        if by_step:
            steps = sorted(by_step)
            out[name] = ([(s + 1) / steps_per_epoch for s in steps], [by_step[s] for s in steps])
    return out


def _steps_per_epoch(rows: Sequence[Mapping[str, float]]) -> float | None:
    """Training steps an epoch: the last step of the first epoch that logged an epoch metric."""
    for r in rows:
        if "step" in r and "epoch" in r and any(c in r for c in EPOCH_COLUMNS.values()):
            return (r["step"] + 1) / (r["epoch"] + 1)
    return None


def curves_figure(runs: Mapping[str, Mapping[str, Series]], title: str = "") -> Figure:
    """Loss, accuracy and learning rate per epoch, one colour a run (validation solid,
    training dashed, the step loss faint); the panels share the epoch axis."""
    fig = Figure(figsize=(15, 4.5), dpi=DPI, layout="constrained")
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3, sharex=True)
    for i, (label, series) in enumerate(runs.items()):
        color = f"C{i % 10}"
        prefix = f"{label} " if len(runs) > 1 else ""
        for ax, name, style, alpha in (
            (loss_ax, "train/loss_step", "-", 0.25),
            (loss_ax, "train/loss", "o--", 1.0),
            (loss_ax, "val/loss", "o-", 1.0),
            (acc_ax, "train/acc", "o--", 1.0),
            (acc_ax, "val/acc", "o-", 1.0),
            (lr_ax, "lr", "-", 1.0),
        ):
            if name in series:
                x, y = series[name]
                if name == "lr" or name.endswith("acc"):
                    label_name = name
                else:
                    label_name = name.replace("_step", " (step)")
                ax.plot(
                    x, y, style, color=color, alpha=alpha, label=prefix + label_name, markersize=4
                )
    for ax, ylabel in ((loss_ax, "loss"), (acc_ax, "accuracy"), (lr_ax, "learning rate")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    return fig


def save_png(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """``fig`` as a PNG at ``path``, written to a temporary file and renamed."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
    return Path(path)


def write_curves(run_dir: str | os.PathLike[str]) -> Path | None:
    """``<run_dir>/curves.png`` from ``<run_dir>/metrics.csv``; None when there are no metrics."""
    run = Path(run_dir)
    metrics = run / "metrics.csv"
    if not metrics.is_file():
        return None
    series = run_series(metrics)
    if not series:
        return None
    title = f"{run.parent.name} {run.name}"
    return save_png(curves_figure({title: series}, title=title), run / CURVES_FILE)


def confusion_matrix_figure(
    counts: Sequence[Sequence[int]], class_names: Sequence[str], title: str = ""
) -> Figure:
    """Counts of true class (rows) against predicted class (columns), each cell written out,
    coloured by the share of its row."""
    n = len(class_names)
    side = max(5.0, 0.6 * n + 2)
    fig = Figure(figsize=(side, side), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    totals = [max(sum(row), 1) for row in counts]
    shares = [[v / t for v in row] for row, t in zip(counts, totals, strict=True)]
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for r, row in enumerate(counts):
        for c, v in enumerate(row):
            dark = shares[r][c] > 0.5
            ax.text(c, r, str(v), ha="center", va="center", fontsize="small",
                    color="white" if dark else "black")  # fmt: skip
    ax.set_xticks(range(n), class_names, rotation=45 if max(map(len, class_names)) > 2 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    correct = sum(counts[i][i] for i in range(n))
    total = sum(sum(row) for row in counts)
    acc = f"accuracy {correct / total:.2%}" if total else "no images"
    ax.set_title(f"{title}: {acc}" if title else acc)
    return fig
