"""Test accuracy against training-set size (lecture 002, "Overfitting with less training data").

For each net, size and seed: train in-process (``training.train``, the Lightning Trainer) on
a class-balanced, seeded subset of that many training images, test on the official test
set, and report the mean and the sample standard deviation across seeds.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from imgcls.insight import InsightError
from imgcls.insight.training import TrainSpec, parse_net, train

__all__ = ["SweepPoint", "check_sizes", "run_sweep", "summarise", "write_sweep_outputs"]


@dataclass
class SweepPoint:
    net: str  # the name as given, e.g. "mlp-32"
    size: int  # requested training-set size
    n_train: int  # images actually used
    seed: int
    test_acc: float  # fraction of the test set
    fit_seconds: float


def run_sweep(
    nets: Sequence[str],
    sizes: Sequence[int],
    seeds: int,
    epochs: int,
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    log: Callable[[str], Any] = print,
    test_limit: int | None = None,
) -> list[SweepPoint]:
    """Train every (net, size, seed) and test it; seeds are 0 … ``seeds`` − 1.

    Raises:
        InsightError: an unknown net, a size < 1 or above the training split's, fewer than
            one seed or epoch.
    """
    from imgcls.insight.shift import TorchPredictor, evaluate_shift
    from imgcls.insight.testset import load_test_set

    if seeds < 1 or epochs < 1:
        raise InsightError(f"--seeds and --epochs must be >= 1, got {seeds} and {epochs}")
    if not sizes or min(sizes) < 1:
        raise InsightError(f"--sizes must be positive integers, got {list(sizes)}")
    check_sizes(sizes, dataset)
    specs = {name: parse_net(name) for name in nets}  # fail on a bad name before any training
    test = load_test_set(dataset, data_dir, test_limit)
    points: list[SweepPoint] = []
    total = len(nets) * len(sizes) * seeds
    for name, (net, net_args) in specs.items():
        for size in sizes:
            for seed in range(seeds):
                log(
                    f"[sweep {len(points) + 1}/{total}] {name}, {size:,} training images, "
                    f"seed {seed}, {epochs} epoch(s)"
                )
                result = train(
                    TrainSpec(net, net_args, dataset, size, epochs, seed),
                    data_dir,
                    progress=progress,
                )
                acc = float(
                    evaluate_shift(
                        TorchPredictor(result.model, name),
                        test.images,
                        test.labels,
                        0,
                        progress=False,
                    ).mean[0]
                )
                points.append(SweepPoint(name, size, result.n_train, seed, acc, result.fit_seconds))
                log(
                    f"[sweep {len(points)}/{total}] {name} n={result.n_train:,} seed {seed}: "
                    f"test accuracy {100 * acc:.2f} % (fit {result.fit_seconds:.1f} s)"
                )
    return points


def check_sizes(sizes: Sequence[int], dataset: str) -> None:
    """Refuse a size above the training split's: it would train on the whole split while the
    results said otherwise.

    Raises:
        InsightError: a size is larger than the training split of ``dataset``.
    """
    from imgcls.data.provision import get_spec

    total = get_spec(dataset).files[0].count  # the training images (60,000)
    over = [s for s in sizes if s > total]
    if over:
        raise InsightError(
            f"--sizes {','.join(str(s) for s in over)}: the {dataset} training split has "
            f"{total:,} images; pass sizes from 1 to {total} ({total} trains on all of them)"
        )


def summarise(points: Sequence[SweepPoint]) -> dict[str, list[dict[str, Any]]]:
    """{net: [{size, n_train, mean, std, accs, fit_seconds}, …]} in percent, sizes ascending."""
    out: dict[str, list[dict[str, Any]]] = {}
    for net in dict.fromkeys(p.net for p in points):
        rows = []
        for size in sorted({p.size for p in points if p.net == net}):
            group = [p for p in points if p.net == net and p.size == size]
            accs = [100 * p.test_acc for p in group]
            rows.append(
                {
                    "size": size,
                    "n_train": group[0].n_train,
                    "mean": statistics.fmean(accs),
                    "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                    "accs": accs,
                    "fit_seconds": statistics.fmean(p.fit_seconds for p in group),
                }
            )
        out[net] = rows
    return out


def write_sweep_outputs(
    points: Sequence[SweepPoint], out_dir: str | os.PathLike[str], dataset: str, epochs: int
) -> dict[str, Path]:
    """Write sweep.md (mean ± std per net and size), sweep.csv (every run), sweep.json, sweep.png.

    Also logs them to W&B when a run is active.
    """
    from imgcls.insight.artifacts import (
        log_to_wandb,
        markdown_table,
        save_figure,
        write_csv,
        write_json,
    )
    from imgcls.insight.figures import sweep_figure
    from imgcls.utils import atomic_write_text

    out = Path(out_dir)
    summary = summarise(points)
    cols = [
        "net",
        "training images",
        "test accuracy % (mean ± std)",
        "seeds",
        "per seed",
        "fit s (mean)",
    ]
    rows = [
        [
            net,
            f"{r['n_train']:,}",
            f"{r['mean']:.2f} ± {r['std']:.2f}",
            len(r["accs"]),
            " ".join(f"{a:.2f}" for a in r["accs"]),
            f"{r['fit_seconds']:.1f}",
        ]
        for net, rs in summary.items()
        for r in rs
    ]
    md = out / "sweep.md"
    atomic_write_text(
        md,
        f"# {dataset}: test accuracy against training-set size\n\n"
        f"{epochs} epoch(s) per run; class-balanced subsets drawn per seed; std is the sample "
        f"standard deviation across seeds. Lecture 002 shows the same trend as overfitting "
        f"with 100, 1,000, 10,000 and 60,000 images.\n\n" + markdown_table(cols, rows),
    )
    long_cols = list(asdict(points[0]).keys()) if points else []
    csv_path = write_csv(out / "sweep.csv", long_cols, [list(asdict(p).values()) for p in points])
    js = write_json(
        out / "sweep.json",
        {
            "dataset": dataset,
            "epochs": epochs,
            "summary": summary,
            "runs": [asdict(p) for p in points],
        },
    )
    series = {
        net: ([r["n_train"] for r in rs], [r["mean"] for r in rs], [r["std"] for r in rs])
        for net, rs in summary.items()
    }
    png = save_figure(
        sweep_figure(
            series, f"{dataset}: test accuracy against training-set size ({epochs} epoch(s))"
        ),
        out / "sweep.png",
    )
    log_to_wandb(
        "sweep",
        {"plot": png},
        {"summary": (cols, rows), "runs": (long_cols, [list(asdict(p).values()) for p in points])},
    )
    return {"md": md, "csv": csv_path, "json": js, "png": png}
