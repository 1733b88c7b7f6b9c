"""``imgcls compare``: several runs side by side, from their run folders.

    imgcls compare runs/mnist-mlp-32 runs/mnist-convnet [--out compare]
    imgcls compare 'runs/mnist-*/version_*' best

Writes into ``--out``: ``compare.png`` (the runs' loss, accuracy and learning-rate curves on
shared axes, one colour a run) and the table of each run (net, parameters, epochs, training
time, best validation accuracy, test accuracy) as ``compare_table.png``, ``compare.md`` and
``compare.csv``; the markdown table also goes to stdout.

A run is named as every command names one: ``runs/<exp>/version_N``, ``runs/<exp>`` (its
newest run), a checkpoint file, or ``best`` / ``last`` (the newest run under ``runs`` that
holds that checkpoint); globs are expanded. A run without metrics is named in one line and
left out; when no run is left, that is an error.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcls.commands.options import add_out, check_writable_folder, write_stdout
from imgcls.errors import RunNotFoundError

COLUMNS = ["run", "net", "parameters", "epochs", "train_s", "best_val_acc", "test_acc"]
GLOB_CHARS = "*?["


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="runs/<exp>/version_N, runs/<exp> (its newest run), a .ckpt file, best, last; "
        "globs are expanded",
    )
    add_out(p, "compare", "folder for compare.png, compare_table.png, compare.md, compare.csv")
    p.add_argument("--root", default="runs", help="where best / last look (default: runs)")


@dataclass
class Row:
    run: str
    net: str
    parameters: int | None
    epochs: int
    train_s: float | None
    best_val_acc: float | None
    test_acc: float | None

    def cells(self) -> list[str]:
        def num(v: float | None, fmt: str) -> str:
            return "" if v is None else format(v, fmt)

        return [
            self.run,
            self.net,
            "" if self.parameters is None else str(self.parameters),
            str(self.epochs),
            num(self.train_s, ".1f"),
            num(self.best_val_acc, ".4f"),
            num(self.test_acc, ".4f"),
        ]


def expand(specs: list[str], root: Path) -> tuple[list[Path], list[str]]:
    """The run folders the arguments name (each once, in order) and a line for each argument
    that names none."""
    from imgcls import runs

    found: list[Path] = []
    missing: list[str] = []
    for spec in specs:
        paths = sorted(glob.glob(spec)) if any(c in spec for c in GLOB_CHARS) else [spec]
        if not paths:
            missing.append(f"{spec}: matches nothing")
        for s in paths:
            run = _run_of(s, root, runs)
            if run is None:
                missing.append(f"{s}: not a run folder")
            elif run.resolve() not in [f.resolve() for f in found]:
                found.append(run)
    return found, missing


def _run_of(spec: str, root: Path, runs: Any) -> Path | None:
    path = Path(spec)
    if spec in ("best", "last"):
        candidates = [
            r for exp in root.glob("*") if exp.is_dir() for r in runs.runs(exp)
            if runs.checkpoint_of(r, spec).is_file()
        ]  # fmt: skip
        return max(
            candidates, key=lambda r: runs.checkpoint_of(r, spec).stat().st_mtime, default=None
        )
    if path.is_file():
        return runs.run_of(path)
    if runs.is_run(path):
        return path
    if path.is_dir():
        return runs.newest_run(path, None)
    return None


def _metrics(path: Path) -> list[dict[str, float]]:
    from imgcls.runs import read_metrics

    return read_metrics(path) if path.is_file() else []


def describe(run: Path) -> Row:
    """The table row of a run (which has a metrics.csv)."""
    import yaml

    from imgcls.runs import checkpoint_of, net_label

    rows = _metrics(run / "metrics.csv")
    epochs = {
        int(r["epoch"]) for r in rows if "epoch" in r and ("val/acc" in r or "train/acc" in r)
    }
    seconds = {int(r["epoch"]): r["time/train_epoch_s"] for r in rows if "time/train_epoch_s" in r}
    val = [r["val/acc"] for r in rows if "val/acc" in r]
    net = "?"
    config = run / "config.yaml"
    if config.is_file():
        model = (yaml.safe_load(config.read_text()) or {}).get("model") or {}
        net = net_label(str(model.get("net", "?")), model.get("net_args"))
    return Row(
        run=f"{run.parent.name}/{run.name}",
        net=net,
        parameters=_parameters(checkpoint_of(run, "best"))
        or _parameters(checkpoint_of(run, "last")),
        epochs=len(epochs),
        train_s=sum(seconds.values()) if seconds else None,
        best_val_acc=max(val) if val else None,
        test_acc=_test_acc(run),
    )


def _parameters(ckpt: Path) -> int | None:
    if not ckpt.is_file():
        return None
    from imgcls.training.checkpoint_io import load_classifier

    model = load_classifier(ckpt)
    return sum(p.numel() for p in model.parameters())


def _test_acc(run: Path) -> float | None:
    """test/acc of the run's newest test (``<run>/test/version_K``)."""
    from imgcls.runs import runs

    for test in reversed(runs(run / "test")):
        accs = [r["test/acc"] for r in _metrics(test / "metrics.csv") if "test/acc" in r]
        if accs:
            return accs[-1]
    return None


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def table_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(r.cells() for r in rows)
    return buf.getvalue()


def table_figure(rows: list[Row]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 0.6 + 0.4 * (len(rows) + 1)), dpi=100)
    ax = fig.subplots()
    ax.axis("off")
    widths = [0.26, 0.12, 0.12, 0.08, 0.1, 0.12, 0.12]  # the run's name is the longest cell
    table = ax.table(
        cellText=[r.cells() for r in rows], colLabels=COLUMNS, colWidths=widths, loc="center"
    )
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    table.scale(1, 1.4)
    return fig


def run(args: argparse.Namespace) -> int:
    from imgcls.training.curves import curves_figure, run_series, save_png
    from imgcls.utils import atomic_write_text

    found, missing = expand(args.runs, Path(args.root))
    comparable = []
    for folder in found:
        if (folder / "metrics.csv").is_file() and run_series(folder / "metrics.csv"):
            comparable.append(folder)
        else:
            missing.append(f"{folder}: no metrics (metrics.csv missing or empty)")
    for line in missing:
        print(f"[imgcls] skipped {line}", flush=True)
    if not comparable:
        raise RunNotFoundError(
            "nothing to compare: no run with metrics among "
            + ", ".join(args.runs)
            + "; name run folders (runs/<experiment>/version_N) of finished fits"
        )
    out = check_writable_folder(args.out, "--out")
    rows = [describe(f) for f in comparable]
    series = {r.run: run_series(f / "metrics.csv") for r, f in zip(rows, comparable, strict=True)}
    title = "validation solid, training dashed"
    save_png(curves_figure(series, title=title), out / "compare.png")
    save_png(table_figure(rows), out / "compare_table.png")
    text = markdown(rows)
    atomic_write_text(out / "compare.md", text)
    atomic_write_text(out / "compare.csv", table_csv(rows))
    write_stdout(text)
    print(f"[imgcls] compared {len(rows)} run(s): {out}/compare.png, compare_table.png, "
          "compare.md, compare.csv", flush=True)  # fmt: skip
    return 0
