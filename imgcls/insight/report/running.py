"""Running the report: every experiment trained (or reused, or loaded), evaluated and measured.

``build_report`` gathers the numbers into a ``ReportData`` and has ``studies`` draw the
figures; ``render.write_report`` writes it up. A run the report trains is laid out as
``imgcls fit`` lays out its own, under ``default_runs_dir`` unless told otherwise.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from imgcls.insight import InsightError, lectures
from imgcls.insight.artifacts import markdown_table
from imgcls.insight.cost import conv_params, layer_costs, output_size, summary_table, totals
from imgcls.insight.kernels import cross_correlate1d, max_pool2d
from imgcls.insight.methods import epoch_seconds_of_run, methods_of
from imgcls.insight.report.catalogue import EXPERIMENTS, MAX_SHIFT, QUICK_TEST_LIMIT, Experiment
from imgcls.insight.report.results import ExperimentResult, ReportData
from imgcls.insight.report.studies import studies_and_figures
from imgcls.insight.shift import TorchPredictor, evaluate_shift
from imgcls.insight.testset import load_test_set
from imgcls.insight.training import TrainSpec, config_of, train
from imgcls.runs import resolve_checkpoint
from imgcls.training.checkpoint_io import CheckpointError, load_classifier
from imgcls.utils import atomic_write_text

__all__ = ["build_report", "default_runs_dir", "worked_examples"]


def worked_examples() -> list[dict[str, Any]]:
    """Lecture 000's worked examples, recomputed by ``kernels`` and ``cost``."""

    x, w, want = lectures.CONV1D_EXAMPLE
    conv1d = [int(v) for v in cross_correlate1d(x, w).tolist()]
    pool_in, pool_want = lectures.MAXPOOL_EXAMPLE
    pooled = [[int(v) for v in row] for row in max_pool2d(pool_in, 2, stride=1).tolist()]
    conv = nn.Conv2d(3, 10, 5, padding=2)  # lecture 000's RGB example
    rgb = layer_costs(conv, (3, 32, 32))[0]
    weights, biases = conv.weight.numel(), conv.bias.numel() if conv.bias is not None else 0
    rgb_fc = nn.Linear(28 * 28 * 3, 128, bias=False)  # lecture 000's RGB example
    rows = [
        ("[1,2,3,4,5,6] ⊛ [1,2]", list(want), conv1d),
        ("3×3 input, 2×2 filter (valid)", "2×2", f"{output_size(3, 2)}×{output_size(3, 2)}"),
        ("4×4 input, 3×3 filter (valid)", "2×2", f"{output_size(4, 3)}×{output_size(4, 3)}"),
        (
            "2×2 max-pool, stride 1, of [[1,2,3],[4,5,6],[7,8,9]]",
            [list(r) for r in pool_want],
            pooled,
        ),
        (
            "weights of 6 conv filters of 5×5",
            lectures.LENET_SMALL_CONV_WEIGHTS,
            conv_params(1, 6, 5, bias=False),
        ),
        (
            "weights of a 6-unit fully-connected layer on 28×28",
            lectures.FC6_ON_28x28_WEIGHTS,
            28 * 28 * 6,
        ),
        (
            "10 filters 5×5×3, same padding, on 32×32×3: output",
            "10×32×32",
            "×".join(map(str, rgb.output_shape)),
        ),
        ("… multiply-adds", lectures.RGB_CONV_MACS, rgb.macs),
        (
            "… weights + biases",
            f"{lectures.RGB_CONV_WEIGHTS} + {lectures.RGB_CONV_BIASES}",
            f"{weights} + {biases}",
        ),
        ("features of a 28×28×3 image", lectures.RGB_FEATURES, rgb_fc.in_features),
        (
            "weights of 128 fully-connected units on it",
            lectures.RGB_FC128_WEIGHTS,
            rgb_fc.weight.numel(),
        ),
        (
            "weights of one 5×5×3 filter vs one fully-connected unit",
            f"{lectures.RGB_FILTER_WEIGHTS} vs {lectures.RGB_FEATURES:,}",
            f"{nn.Conv2d(3, 1, 5, bias=False).weight.numel()} vs {rgb_fc.in_features:,}",
        ),
    ]

    def show(v: Any) -> Any:
        return f"{v:,}" if isinstance(v, int) else v

    return [
        {"claim": c, "lecture": show(lec), "ours": show(ours), "match": lec == ours}
        for c, lec, ours in rows
    ]


def _machine(threads: int) -> dict[str, Any]:

    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "accelerator": "cpu",
    }


def _check_external(name: str, path: Path, exp: Experiment) -> Any:
    """Load a checkpoint given with --ckpt NAME=PATH; it must be the experiment's net and data."""

    model = load_classifier(path)
    hp = model.hparams
    want = exp.full
    if hp.dataset != want.dataset:
        raise InsightError(
            f"{path}: trained on {hp.dataset!r}, but experiment {name!r} is on {want.dataset!r}"
        )
    if hp.net != want.net or dict(hp.net_args or {}) != dict(want.net_args):
        raise InsightError(
            f"{path}: a {hp.net} {dict(hp.net_args or {})}, but experiment {name!r} is a "
            f"{want.net} {dict(want.net_args)}"
        )
    return model


@dataclass
class _Run:
    model: Any
    ckpt: Path
    origin: str
    fit_seconds: float | None
    epoch_seconds: list[float]
    val_acc: list[float]
    train_acc: float | None


def _obtain(
    exp: Experiment,
    spec: TrainSpec,
    runs_dir: Path,
    reuse: bool,
    external: tuple[Path, Any] | None,
    data_dir: str | None,
    progress: bool,
    log: Callable[[str], Any],
) -> _Run:
    """One experiment's model: the external checkpoint, a reused finished run, or a new run.

    A run the report trains is laid out as ``imgcls fit`` lays out its own
    (``<runs_dir>/<name>-<key>/version_0/{config.yaml,checkpoints/last.ckpt}``), so its
    methods are read back the same way and ``imgcls export`` takes it as it is.
    """

    if external is not None:  # loaded and checked by _check_external
        path, model = external
        log(f"[report] {exp.name}: using checkpoint {path}")
        seconds = epoch_seconds_of_run(path)
        return _Run(
            model, path, f"checkpoint {path}", sum(seconds) if seconds else None, seconds, [], None
        )
    run = runs_dir / f"{exp.name}-{spec.key()}" / "version_0"
    ckpt, facts = run / "checkpoints" / "last.ckpt", run / "train.json"
    if reuse and facts.is_file() and ckpt.is_file():
        try:
            info = json.loads(facts.read_text())
            model = load_classifier(ckpt)
            if exp.train_accuracy and info.get("train_acc") is None:
                raise KeyError("train_acc")
            log(f"[report] {exp.name}: reusing the finished run in {run}")
            return _Run(
                model,
                ckpt,
                f"reused {run}",
                info["fit_seconds"],
                list(info.get("epoch_seconds") or []),
                list(info.get("val_acc") or []),
                info.get("train_acc"),
            )
        except (CheckpointError, ValueError, KeyError) as e:
            log(f"[report] {exp.name}: cannot reuse {run} ({e}); training again")
    size = f"{spec.train_subset:,}" if spec.train_subset else "all"
    length = f"{spec.steps} steps" if spec.steps else f"{spec.epochs} epoch(s)"
    log(f"[report] {exp.name}: training {spec.net} on {size} {spec.dataset} images for {length}")
    atomic_write_text(run / "config.yaml", yaml.safe_dump(config_of(spec), sort_keys=False))
    result = train(
        spec, data_dir, progress=progress, checkpoint=ckpt, train_accuracy=exp.train_accuracy
    )
    atomic_write_text(
        facts, json.dumps(result.facts(), indent=1) + "\n"
    )  # written last: marks the run finished
    log(f"[report] {exp.name}: trained in {result.fit_seconds:.1f} s")
    return _Run(
        result.model,
        ckpt,
        "trained",
        result.fit_seconds,
        result.epoch_seconds,
        result.val_acc,
        result.train_acc,
    )


def default_runs_dir(quick: bool) -> Path:
    """Where the report keeps the models it trains, unless told otherwise."""
    return Path("runs") / ("report-quick" if quick else "report")


def build_report(
    out_dir: str | os.PathLike[str],
    quick: bool = False,
    reuse: bool = False,
    runs_dir: str | os.PathLike[str] | None = None,
    checkpoints: dict[str, str] | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    command: str = "imgcls report",
    log: Callable[[str], Any] = print,
    experiments: Sequence[Experiment] = EXPERIMENTS,
    test_limit: int | None = None,
) -> ReportData:
    """Run (or reuse) every experiment, evaluate it, draw the figures into ``out_dir``/figures.

    Raises:
        InsightError: a --ckpt NAME that is no experiment, or a checkpoint of the wrong net /
            data set.
    """

    out = Path(out_dir)
    runs = Path(runs_dir) if runs_dir else default_runs_dir(quick)
    checkpoints = dict(checkpoints or {})
    unknown = sorted(set(checkpoints) - {e.name for e in experiments})
    if unknown:
        raise InsightError(
            f"--ckpt names {unknown} are not experiments of the report; "
            f"valid: {', '.join(e.name for e in experiments)}"
        )
    by_name = {e.name: e for e in experiments}
    external: dict[str, tuple[Path, Any]] = {}
    for name, path in checkpoints.items():  # fail fast, before any training
        resolved = resolve_checkpoint(path)
        external[name] = (resolved, _check_external(name, resolved, by_name[name]))
    limit = test_limit if test_limit is not None else (QUICK_TEST_LIMIT if quick else None)
    tests = {
        ds: load_test_set(ds, data_dir, limit)
        for ds in dict.fromkeys(e.full.dataset for e in experiments)
    }
    started = time.perf_counter()
    results: list[ExperimentResult] = []
    models: dict[str, Any] = {}
    layer_tables: dict[str, str] = {}
    seen_archs: set[str] = set()
    for i, exp in enumerate(experiments, 1):
        spec = exp.spec(quick)
        log(f"[report {i}/{len(experiments)}] {exp.name}")
        got = _obtain(exp, spec, runs, reuse, external.get(exp.name), data_dir, progress, log)
        model = got.model
        models[exp.name] = model
        test = tests[spec.dataset]
        shift = evaluate_shift(
            TorchPredictor(model, exp.name, got.ckpt),
            test.images,
            test.labels,
            MAX_SHIFT,
            progress=progress,
        )
        hp = model.hparams
        costs = layer_costs(model.net, (hp.in_channels, hp.image_size, hp.image_size))
        params, macs = totals(costs)
        arch = json.dumps([hp.net, dict(hp.net_args or {})], sort_keys=True)
        if arch not in seen_archs:  # one per-layer table per architecture
            seen_archs.add(arch)
            layer_tables[exp.name] = markdown_table(*summary_table(costs))
        methods = methods_of(got.ckpt)
        results.append(
            ExperimentResult(
                name=exp.name,
                title=exp.title,
                dataset=hp.dataset,
                net=hp.net,
                net_args=dict(hp.net_args or {}),
                n_train=methods.get("n_train"),
                epochs=methods.get("epochs_done"),
                fit_seconds=got.fit_seconds,
                origin=got.origin,
                params=params,
                macs=macs,
                n_test=len(test),
                shift_mean=[float(v) for v in shift.mean],
                shift_worst=[float(v) for v in shift.worst],
                lecture_acc=exp.lecture_acc,
                lecture_shift=list(exp.lecture_shift) if exp.lecture_shift else None,
                source=exp.source,
                study=exp.study,
                shift_axis=[float(v) for v in shift.axis_mean],
                shift_directions=shift.per_direction(),
                epoch_seconds=got.epoch_seconds,
                val_acc=got.val_acc,
                train_acc=got.train_acc,
                methods=methods,
            )
        )
        log(
            f"[report] {exp.name}: test accuracy {100 * shift.mean[0]:.2f} %, shifted 1/2/3 px "
            + " / ".join(f"{100 * v:.2f}" for v in shift.mean[1:])
            + " % (8 directions), "
            + " / ".join(f"{100 * v:.2f}" for v in shift.axis_mean[1:])
            + " % (left/right/up/down)"
        )
    data = ReportData(
        command=command,
        mode="quick" if quick else "full",
        created=time.strftime("%Y-%m-%d %H:%M"),
        machine=_machine(torch.get_num_threads()),
        experiments=results,
        layer_tables=layer_tables,
        worked_examples=worked_examples(),
    )
    log("[report] measuring speed, drawing figures")

    studies_and_figures(data, models, tests, out, quick=quick, log=log)
    data.notes.append(f"Total wall time of this report: {time.perf_counter() - started:.0f} s.")
    return data
