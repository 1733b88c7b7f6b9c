"""``imgcls report``: the lectures' experiments, run (or reused) and written up as one markdown
report that puts the lectures' numbers beside ours.

Experiments (``EXPERIMENTS``): on MNIST an MLP with 10 and with 32 hidden units (lecture 002),
the lecture's 2-conv net (lecture 002), LeNet-5 (lecture 000), also on 20,000 images with its
training time; on Fashion-MNIST the 2-conv net. For each: test accuracy, accuracy on test
images shifted 1/2/3 px, parameters, multiply-adds and training time on this machine.

Two halves: ``build_report`` runs everything and gathers the numbers into a ``ReportData``;
``write_report`` turns a ``ReportData`` into markdown (tested on its own, on fixed numbers).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imgcls.insight import InsightError, lectures
from imgcls.insight.artifacts import markdown_table, write_json
from imgcls.insight.training import TrainSpec

__all__ = [
    "EXPERIMENTS",
    "SECTIONS",
    "Experiment",
    "ExperimentResult",
    "ReportData",
    "build_report",
    "render_report",
    "write_report",
]


@dataclass(frozen=True)
class Experiment:
    name: str  # short id, used for --ckpt NAME=PATH and file names
    title: str  # how the lectures call it
    full: TrainSpec  # the lectures' setting
    quick: TrainSpec  # --quick: a small subset, one epoch
    lecture_acc: float | None  # test accuracy (%) the lectures report
    lecture_shift: tuple[float, ...] | None  # accuracy (%) at 0, 1, 2, … px
    source: str  # where in the lectures

    def spec(self, quick: bool) -> TrainSpec:
        return self.quick if quick else self.full


# Full runs use the lectures' training-set sizes; epochs are the lectures' where they say
# (14 for the 2-conv net) and 10 otherwise. Quick runs fit the 3-minute CI budget on 2 CPU cores.
EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        "mlp-10",
        "MLP, 10 hidden units",
        TrainSpec("mlp", {"hidden": [10]}, "mnist", None, 10),
        TrainSpec("mlp", {"hidden": [10]}, "mnist", 10_000, 1),
        lectures.MLP10_ACC,
        None,
        "lecture 002",
    ),
    Experiment(
        "mlp-32",
        "MLP, 32 hidden units",
        TrainSpec("mlp", {"hidden": [32]}, "mnist", None, 10),
        TrainSpec("mlp", {"hidden": [32]}, "mnist", 10_000, 1),
        lectures.MLP32_ACC,
        lectures.MLP32_SHIFT,
        "lecture 002",
    ),
    Experiment(
        "convnet",
        "CNN (conv 32, conv 64, pool, fc 128)",
        TrainSpec("convnet", {}, "mnist", None, 14),
        TrainSpec("convnet", {}, "mnist", 2_000, 1),
        lectures.CNN_MNIST_SHIFT[0],
        lectures.CNN_MNIST_SHIFT,
        "lecture 002",
    ),
    Experiment(
        "lenet5",
        "LeNet-5",
        TrainSpec("lenet5", {}, "mnist", None, 10),
        TrainSpec("lenet5", {}, "mnist", 5_000, 1),
        None,
        None,
        "lecture 000",
    ),
    Experiment(
        "lenet5-20k",
        "LeNet-5 on 20,000 images",
        TrainSpec("lenet5", {}, "mnist", lectures.LENET5_20K_IMAGES, 10),
        TrainSpec("lenet5", {}, "mnist", lectures.LENET5_20K_IMAGES, 1),
        None,
        None,
        "lecture 000",
    ),
    Experiment(
        "fashion-convnet",
        "CNN on Fashion-MNIST",
        TrainSpec("convnet", {}, "fashion_mnist", None, 14),
        TrainSpec("convnet", {}, "fashion_mnist", 2_000, 1),
        lectures.CNN_FASHION_SHIFT[0],
        lectures.CNN_FASHION_SHIFT,
        "lecture 002",
    ),
)
QUICK_TEST_LIMIT = 500  # --quick evaluates on the first 500 test images
MAX_SHIFT = 3
FEATURE_IMAGE_INDEX = 1  # MNIST test image 1 is a 2, as in lecture 002's figs. 6–7
KERNEL_IMAGE_INDEX = 18  # MNIST test image 18 is a 3, as in lecture 000's prong example

SECTIONS = (
    "How this report was made",
    "Results beside the lectures",
    "Translation robustness",
    "Parameters and multiply-adds",
    "Training time",
    "What the networks learn",
    "Errors",
    "Classic kernels",
    "The lectures' worked examples",
    "Differences from the lectures",
)
# Figures the report shows: key -> (file name, caption).
FIGURES: dict[str, tuple[str, str]] = {
    "shift_mnist": (
        "shift_mnist.png",
        "MNIST: accuracy on shifted test images (solid: mean of 8 directions, "
        "dashed: worst direction, dotted: lecture 002)",
    ),
    "shift_fashion": ("shift_fashion_mnist.png", "Fashion-MNIST: accuracy on shifted test images"),
    "filters_convnet": (
        "convnet_filters.png",
        "The 32 first-layer 3×3 filters of the CNN (lecture 002, fig. 5)",
    ),
    "feature_maps_convnet": (
        "convnet_feature_maps.png",
        "The CNN's conv-layer outputs for a test image of a 2 (lecture 002, figs. 6–7)",
    ),
    "filters_lenet5": (
        "lenet5_filters.png",
        "LeNet-5's six 5×5 first-layer filters (150 weights, lecture 000)",
    ),
    "templates_mlp10": (
        "mlp-10_templates.png",
        "The 10 hidden units of MLP-10 as 28×28 templates (lecture 002, fig. 3)",
    ),
    "pca_convnet": (
        "convnet_pca.png",
        "2-D PCA of the CNN's 128-unit penultimate layer, by class (lecture 000)",
    ),
    "confusion_convnet": ("convnet_confusion.png", "Confusion matrix of the CNN on MNIST"),
    "confusion_fashion": (
        "fashion-convnet_confusion.png",
        "Confusion matrix of the CNN on Fashion-MNIST",
    ),
    "misclassified_convnet": ("convnet_misclassified.png", "MNIST test images the CNN gets wrong"),
    "kernels": (
        "kernels.png",
        "Classic kernels on a test image of a 3, cross-correlation with same padding "
        "(lecture 002; the prong filter is lecture 000's)",
    ),
}


@dataclass
class ExperimentResult:
    name: str
    title: str
    dataset: str
    net: str
    net_args: dict[str, Any]
    n_train: int | None
    epochs: int | None
    fit_seconds: float | None  # None: an external checkpoint, time unknown
    origin: str  # "trained", "reused <dir>" or "checkpoint <path>"
    params: int
    macs: int
    n_test: int
    shift_mean: list[float]  # accuracy (fraction) at 0, 1, …, MAX_SHIFT px, mean of 8 directions
    shift_worst: list[float]  # … worst direction
    lecture_acc: float | None = None
    lecture_shift: list[float] | None = None
    source: str = ""


@dataclass
class ReportData:
    command: str
    mode: str  # "quick" or "full"
    created: str
    machine: dict[str, Any]
    experiments: list[ExperimentResult]
    figures: dict[str, str] = field(default_factory=dict)  # key -> path relative to the report
    layer_tables: dict[str, str] = field(
        default_factory=dict
    )  # experiment name -> markdown per-layer table
    worked_examples: list[dict[str, Any]] = field(
        default_factory=list
    )  # {claim, lecture, ours, match}
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- numbers


def worked_examples() -> list[dict[str, Any]]:
    """Lecture 000's worked examples, recomputed by ``kernels`` and ``cost``."""
    from torch import nn

    from imgcls.insight.cost import conv_params, layer_costs, output_size
    from imgcls.insight.kernels import cross_correlate1d, max_pool2d

    x, w, want = lectures.CONV1D_EXAMPLE
    conv1d = [int(v) for v in cross_correlate1d(x, w).tolist()]
    pool_in, pool_want = lectures.MAXPOOL_EXAMPLE
    pooled = [[int(v) for v in row] for row in max_pool2d(pool_in, 2, stride=1).tolist()]
    conv = nn.Conv2d(3, 10, 5, padding=2)  # lecture 000's RGB example
    rgb = layer_costs(conv, (3, 32, 32))[0]
    weights, biases = conv.weight.numel(), conv.bias.numel() if conv.bias is not None else 0
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
    ]

    def show(v: Any) -> Any:
        return f"{v:,}" if isinstance(v, int) else v

    return [
        {"claim": c, "lecture": show(lec), "ours": show(ours), "match": lec == ours}
        for c, lec, ours in rows
    ]


def _machine(threads: int) -> dict[str, Any]:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "accelerator": "cpu",
    }


def _external(name: str, path: str, exp: Experiment) -> tuple[Any, int | None, int | None, str]:
    """Load a checkpoint given with --ckpt NAME=PATH.

    It must be the experiment's net and data set.
    """
    import torch

    from imgcls.checkpoint import load_classifier
    from imgcls.runs import resolve_checkpoint

    resolved = resolve_checkpoint(path)
    model = load_classifier(resolved)
    hp = model.hparams
    want = exp.full
    if hp.dataset != want.dataset:
        raise InsightError(
            f"{resolved}: trained on {hp.dataset!r}, but experiment {name!r} is on {want.dataset!r}"
        )
    if hp.net != want.net or dict(hp.net_args or {}) != dict(want.net_args):
        raise InsightError(
            f"{resolved}: a {hp.net} {dict(hp.net_args or {})}, but experiment {name!r} is a "
            f"{want.net} {dict(want.net_args)}"
        )
    ckpt = torch.load(resolved, map_location="cpu", weights_only=True)
    dm = ckpt.get("datamodule_hyper_parameters") or {}
    n_train = None
    # Saved by `imgcls fit` runs: the training images are the subset, or all but the
    # validation split.
    if dm:
        from imgcls.data.provision import get_spec

        total = get_spec(hp.dataset).files[0].count
        val = dm.get("val_size", 0) or 0
        val = round(val * total) if isinstance(val, float) and val < 1 else int(val)
        n_train = int(dm.get("train_subset") or total - val)
    epochs = int(ckpt["epoch"]) + 1 if "epoch" in ckpt else None
    return model, n_train, epochs, f"checkpoint {resolved}"


def _obtain(
    exp: Experiment,
    spec: TrainSpec,
    runs_dir: Path,
    reuse: bool,
    external: tuple[Any, ...] | None,
    data_dir: str | None,
    progress: bool,
    log: Callable[[str], Any],
) -> tuple[Any, int | None, int | None, float | None, str]:
    """(model, n_train, epochs, fit seconds, origin) of one experiment.

    The model is the external checkpoint, a reused finished run or a new training run.
    """
    from imgcls.checkpoint import CheckpointError, load_classifier
    from imgcls.insight.training import train
    from imgcls.utils import atomic_write_text

    if external is not None:  # loaded and checked by _external
        model, n_train, epochs, origin = external
        log(f"[report] {exp.name}: using {origin}")
        return model, n_train, epochs, None, origin
    run = runs_dir / f"{exp.name}-{spec.key()}"
    ckpt, facts = run / "model.ckpt", run / "train.json"
    if reuse and facts.is_file() and ckpt.is_file():
        try:
            info = json.loads(facts.read_text())
            model = load_classifier(ckpt)
            log(f"[report] {exp.name}: reusing the finished run in {run}")
            return model, info["n_train"], spec.epochs, info["fit_seconds"], f"reused {run}"
        except (CheckpointError, ValueError, KeyError) as e:
            log(f"[report] {exp.name}: cannot reuse {run} ({e}); training again")
    size = f"{spec.train_subset:,}" if spec.train_subset else "all"
    log(
        f"[report] {exp.name}: training {spec.net} on {size} {spec.dataset} images "
        f"for {spec.epochs} epoch(s)"
    )
    result = train(spec, data_dir, progress=progress, checkpoint=ckpt)
    atomic_write_text(
        facts, json.dumps(result.facts(), indent=1) + "\n"
    )  # written last: marks the run finished
    log(f"[report] {exp.name}: trained in {result.fit_seconds:.1f} s")
    return result.model, result.n_train, spec.epochs, result.fit_seconds, "trained"


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
    import torch

    from imgcls.insight.artifacts import markdown_table as md_table
    from imgcls.insight.artifacts import save_figure
    from imgcls.insight.cost import layer_costs, summary_table, totals
    from imgcls.insight.figures import filters_figure, shift_figure
    from imgcls.insight.probe import first_conv_weights
    from imgcls.insight.shift import TorchPredictor, evaluate_shift
    from imgcls.insight.testset import load_test_set
    from imgcls.insight.visualize import kernels_figures, model_figures

    out = Path(out_dir)
    fig_dir = out / "figures"
    runs = Path(runs_dir) if runs_dir else default_runs_dir(quick)
    checkpoints = dict(checkpoints or {})
    unknown = sorted(set(checkpoints) - {e.name for e in experiments})
    if unknown:
        raise InsightError(
            f"--ckpt names {unknown} are not experiments of the report; "
            f"valid: {', '.join(e.name for e in experiments)}"
        )
    by_name = {e.name: e for e in experiments}
    from imgcls.runs import resolve_checkpoint

    # Where each external model came from: its run's config says the precision it trained in.
    sources = {name: resolve_checkpoint(path) for name, path in checkpoints.items()}
    external = {
        name: _external(name, path, by_name[name]) for name, path in checkpoints.items()
    }  # fail fast
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
        model, n_train, epochs, seconds, origin = _obtain(
            exp, spec, runs, reuse, external.get(exp.name), data_dir, progress, log
        )
        models[exp.name] = model
        test = tests[spec.dataset]
        shift = evaluate_shift(
            TorchPredictor(model, exp.name, sources.get(exp.name)),
            test.images,
            test.labels,
            MAX_SHIFT,
            progress=progress,
        )
        hp = model.hparams
        costs = layer_costs(model.net, (hp.in_channels, hp.image_size, hp.image_size))
        params, macs = totals(costs)
        arch = json.dumps([spec.net, spec.net_args], sort_keys=True)
        if arch not in seen_archs:  # one per-layer table per architecture
            seen_archs.add(arch)
            layer_tables[exp.name] = md_table(*summary_table(costs))
        results.append(
            ExperimentResult(
                exp.name,
                exp.title,
                spec.dataset,
                spec.net,
                dict(spec.net_args),
                n_train,
                epochs,
                seconds,
                origin,
                params,
                macs,
                len(test),
                [float(v) for v in shift.mean],
                [float(v) for v in shift.worst],
                exp.lecture_acc,
                list(exp.lecture_shift) if exp.lecture_shift else None,
                exp.source,
            )
        )
        log(
            f"[report] {exp.name}: test accuracy {100 * shift.mean[0]:.2f} %, shifted 1/2/3 px "
            + " / ".join(f"{100 * v:.2f}" for v in shift.mean[1:])
            + " %"
        )

    log("[report] drawing figures")
    figures: dict[str, str] = {}

    def keep(key: str, path: Path) -> None:
        figures[key] = path.relative_to(out).as_posix()

    for ds, key in (("mnist", "shift_mnist"), ("fashion_mnist", "shift_fashion")):
        group = [r for r in results if r.dataset == ds]
        if group:
            curves = [
                (r.name, [100 * v for v in r.shift_mean], [100 * v for v in r.shift_worst])
                for r in group
            ]
            refs = lectures.shift_references(ds)
            keep(
                key,
                save_figure(
                    shift_figure(
                        curves,
                        refs,
                        f"{ds}: accuracy on shifted test images ({len(tests[ds]):,} images)",
                    ),
                    fig_dir / FIGURES[key][0],
                ),
            )
    if "convnet" in models:
        paths, _ = model_figures(
            models["convnet"],
            tests["mnist"],
            fig_dir,
            FEATURE_IMAGE_INDEX,
            prefix="convnet_",
            label="CNN",
            log=log,
        )
        for part in ("filters", "feature_maps", "pca", "confusion", "misclassified"):
            keep(f"{part}_convnet", paths[part])
    if "lenet5" in models:
        keep(
            "filters_lenet5",
            save_figure(
                filters_figure(
                    first_conv_weights(models["lenet5"].net), "LeNet-5: first-layer filters"
                ),
                fig_dir / FIGURES["filters_lenet5"][0],
            ),
        )
    if "mlp-10" in models:
        from imgcls.insight.figures import templates_figure
        from imgcls.insight.probe import first_linear_templates

        keep(
            "templates_mlp10",
            save_figure(
                templates_figure(
                    first_linear_templates(models["mlp-10"].net, (1, 28, 28)),
                    "MLP-10: first-layer weights as templates",
                ),
                fig_dir / FIGURES["templates_mlp10"][0],
            ),
        )
    if "fashion-convnet" in models:
        paths, _ = model_figures(
            models["fashion-convnet"],
            tests["fashion_mnist"],
            fig_dir,
            0,
            prefix="fashion-convnet_",
            label="CNN (Fashion-MNIST)",
            log=log,
        )
        keep("confusion_fashion", paths["confusion"])
        for extra in paths.values():  # only the confusion matrix is shown; drop the rest
            if extra != paths["confusion"]:
                extra.unlink(missing_ok=True)
    if "mnist" in tests:
        t = tests["mnist"]
        idx = KERNEL_IMAGE_INDEX if len(t) > KERNEL_IMAGE_INDEX else 0
        keep(
            "kernels",
            kernels_figures(
                t.images[idx, 0],
                fig_dir,
                f"classic kernels on MNIST test image {idx} "
                f"({t.class_names[int(t.labels[idx])]}); cross-correlation, same padding",
                name=Path(FIGURES["kernels"][0]).stem,
            ),
        )
    threads = torch.get_num_threads()
    notes = [f"Total wall time of this report: {time.perf_counter() - started:.0f} s."]
    return ReportData(
        command=command,
        mode="quick" if quick else "full",
        created=time.strftime("%Y-%m-%d %H:%M"),
        machine=_machine(threads),
        experiments=results,
        figures=figures,
        layer_tables=layer_tables,
        worked_examples=worked_examples(),
        notes=notes,
    )


# ----------------------------------------------------------------------------- markdown


def _pct(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _secs(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} s"


def _fig(data: ReportData, key: str) -> str:
    caption = FIGURES[key][1]
    if key not in data.figures:
        return f"*({caption}: not produced in this run.)*\n"
    return f"![{caption}]({data.figures[key]})\n\n*{caption}.*\n"


def render_report(data: ReportData) -> str:
    """The report as markdown: every section of ``SECTIONS``, in order."""
    exps = data.experiments
    quick = data.mode == "quick"
    n_test = ", ".join(sorted({f"{e.n_test:,}" for e in exps}))
    out: list[str] = ["# The lectures' CNN experiments, reproduced with imgcls\n"]
    if quick:
        out.append(
            "> **Quick mode**: small training subsets and one epoch, evaluated on the first "
            f"{n_test} test images. The numbers show that the pipeline works, "
            "not what the nets can do; "
            "run `imgcls report` (without `--quick`) for the real comparison.\n"
        )

    out.append(f"## {SECTIONS[0]}\n")
    m = data.machine
    out.append(f"```\n{data.command}\n```\n")
    out.append(
        f"Made {data.created} on {m.get('cpu_count')} CPU core(s) ({m.get('cpu')}), "
        f"{m.get('torch_threads')} torch thread(s), torch {m.get('torch')}, "
        f"Python {m.get('python')}; {m.get('platform')}. "
        f"Test accuracy is measured on {n_test} images of the official test set. "
        "Each run trains with Adam (lr 1e-3, batch 128) on a class-balanced, seeded subset of "
        "the 60,000 training images (all of them when the table says 60,000), "
        "with no validation split, and is tested after its last epoch.\n"
    )

    out.append(f"## {SECTIONS[1]}\n")
    cols = [
        "experiment",
        "data",
        "train images",
        "epochs",
        "test acc % (lecture)",
        "test acc % (ours)",
        "1 px (lecture / ours)",
        "2 px (lecture / ours)",
        "3 px (lecture / ours)",
        "params",
        "multiply-adds",
        "train time",
    ]
    rows = []
    for e in exps:
        shifts = []
        for d in (1, 2, 3):
            lec = e.lecture_shift[d] if e.lecture_shift and d < len(e.lecture_shift) else None
            ours = 100 * e.shift_mean[d] if d < len(e.shift_mean) else None
            shifts.append(f"{_pct(lec)} / {_pct(ours)}")
        rows.append(
            [
                f"{e.title} (`{e.name}`)",
                e.dataset,
                f"{e.n_train:,}" if e.n_train else "?",
                e.epochs or "?",
                _pct(e.lecture_acc),
                _pct(100 * e.shift_mean[0]),
                *shifts,
                f"{e.params:,}",
                f"{e.macs:,}",
                _secs(e.fit_seconds),
            ]
        )
    out.append(markdown_table(cols, rows))
    out.append(
        "\nShift columns are the mean over 8 directions; "
        "the lecture does not say which direction it used. "
        "Multiply-adds are per image. – : the lectures give no number.\n"
    )

    out.append(f"## {SECTIONS[2]}\n")
    out.append(
        "Every test image is moved d pixels (zero fill) in each of the 8 compass directions; "
        "a diagonal move shifts d rows and d columns. "
        "Lecture 002's point: the MLP loses 10 points at 1 px and 35 at 2 px, "
        "the CNN (convolution + pooling) far less.\n"
    )
    cols = (
        ["experiment", "0 px"]
        + [f"{d} px mean / worst" for d in range(1, 4)]
        + ["lecture 0/1/2/3 px"]
    )
    rows = []
    for e in exps:
        row: list[Any] = [e.name, _pct(100 * e.shift_mean[0])]
        row += [
            f"{100 * e.shift_mean[d]:.2f} / {100 * e.shift_worst[d]:.2f}"
            if d < len(e.shift_mean)
            else ""
            for d in range(1, 4)
        ]
        row.append(" / ".join(f"{v:g}" for v in e.lecture_shift) if e.lecture_shift else "–")
        rows.append(row)
    out.append(markdown_table(cols, rows))
    out.append("\n" + _fig(data, "shift_mnist") + "\n" + _fig(data, "shift_fashion"))

    out.append(f"## {SECTIONS[3]}\n")
    out.append(
        "Lecture 000: a conv layer needs few weights because a filter is shared across the "
        "image, but sliding it over every position costs many multiply-adds. "
        "Counted per image: a conv layer (C_in·K·K per output element), a linear layer (in·out), "
        "batch norm (one per element); biases, activations and pooling are not counted.\n"
    )
    cols = ["experiment", "params", "multiply-adds", "multiply-adds per param"]
    rows = [[e.name, f"{e.params:,}", f"{e.macs:,}", f"{e.macs / e.params:.1f}"] for e in exps]
    out.append(markdown_table(cols, rows))
    for name, table in data.layer_tables.items():
        out.append(f"\n<details><summary>Per layer: {name}</summary>\n\n{table}\n</details>\n")

    out.append(f"\n## {SECTIONS[4]}\n")
    lenet20 = next((e for e in exps if e.name == "lenet5-20k"), None)
    if lenet20 is not None:
        out.append(
            "Lecture 000 trains LeNet-5 on a subsample of "
            f"{lectures.LENET5_20K_IMAGES:,} images and says it "
            f'"takes around {lectures.LENET5_20K_SECONDS:g} seconds to train" (epochs not stated). '
            f"Here {lenet20.epochs} epoch(s) on {lenet20.n_train or 0:,} images "
            f"took **{_secs(lenet20.fit_seconds)}** "
            f"on this machine ({m.get('torch_threads')} CPU thread(s)), reaching "
            f"{100 * lenet20.shift_mean[0]:.2f} % test accuracy.\n"
        )
    cols = ["experiment", "train images", "epochs", "train time", "time per epoch", "origin"]
    rows = [
        [
            e.name,
            f"{e.n_train:,}" if e.n_train else "?",
            e.epochs or "?",
            _secs(e.fit_seconds),
            _secs(e.fit_seconds / e.epochs) if e.fit_seconds is not None and e.epochs else "n/a",
            e.origin,
        ]
        for e in exps
    ]
    out.append(markdown_table(cols, rows))

    out.append(f"\n## {SECTIONS[5]}\n")
    out.append(
        "For greyscale digits the first conv layer learns oriented edges and strokes "
        "(lecture 000); an MLP's hidden units are whole-image templates (lecture 002). "
        "The penultimate layer separates the classes well enough for a linear head, "
        "which the PCA shows in 2-D.\n"
    )
    for key in (
        "filters_convnet",
        "feature_maps_convnet",
        "filters_lenet5",
        "templates_mlp10",
        "pca_convnet",
    ):
        out.append(_fig(data, key))

    out.append(f"## {SECTIONS[6]}\n")
    for key in ("confusion_convnet", "misclassified_convnet", "confusion_fashion"):
        out.append(_fig(data, key))

    out.append(f"## {SECTIONS[7]}\n")
    out.append(
        "What ML calls convolution is cross-correlation: "
        "the kernel slides unflipped (lecture 000). "
        "Kernels from lecture 002 (Sobel, Laplacian, outline, emboss, sharpen) "
        "and lecture 000's 5×5 prong filter.\n"
    )
    out.append(_fig(data, "kernels"))

    out.append(f"## {SECTIONS[8]}\n")
    out.append(
        "Recomputed by `imgcls.insight.kernels` and `imgcls.insight.cost` "
        "(and checked by the tests).\n"
    )
    cols = ["lecture 000", "lecture says", "imgcls computes", "same"]
    rows = [
        [w["claim"], w["lecture"], w["ours"], "yes" if w["match"] else "**no**"]
        for w in data.worked_examples
    ]
    out.append(markdown_table(cols, rows, align="llll"))
    out.append(
        "\nLecture 000 prints the pooled size as (H − K)/(s + 1); "
        "its own example (3×3, K = 2, s = 1 → 2×2) follows ⌊(H − K)/s⌋ + 1, "
        "which `imgcls summary --size H --kernel K --pool` uses.\n"
    )

    out.append(f"## {SECTIONS[9]}\n")
    diffs = [
        "Optimiser: Adam (lr 1e-3, batch 128) for every net. "
        "Lecture 002's CNN is PyTorch's MNIST example (Adadelta, lr 1.0, step decay); "
        "its MLPs' optimiser is not stated.",
        "Epochs (full mode): 14 for the CNNs, as lecture 002; "
        "10 for the others, which the lectures do not state.",
        "Shifts: mean and worst of 8 directions; "
        "lecture 002 reports one number per distance without a direction.",
        "LeNet-5 is the 28×28 variant (first conv padded by 2), ReLU and max-pool "
        "(lecture 000's notebook).",
        "Training time is measured on this machine's CPU; "
        "the lectures' times come from other hardware.",
    ]
    if quick:
        diffs.insert(
            0,
            "Quick mode: small subsets, 1 epoch, a test subset; not comparable with the lectures.",
        )
    out.append("".join(f"- {d}\n" for d in diffs + data.notes))
    return "\n".join(out)


def write_report(data: ReportData, out_dir: str | os.PathLike[str]) -> Path:
    """Write README.md (the report) and results.json (every number) into ``out_dir``; log to W&B."""
    from imgcls.insight.artifacts import log_to_wandb
    from imgcls.utils import atomic_write_text

    out = Path(out_dir)
    md = out / "README.md"
    atomic_write_text(md, render_report(data))
    write_json(out / "results.json", data.to_dict())
    figures = {k: out / v for k, v in data.figures.items()}
    cols = [
        "experiment",
        "dataset",
        "test_acc",
        "shift1",
        "shift2",
        "shift3",
        "params",
        "macs",
        "fit_seconds",
    ]
    rows = [
        [e.name, e.dataset, *e.shift_mean[:4], e.params, e.macs, e.fit_seconds]
        for e in data.experiments
    ]
    log_to_wandb("report", figures, {"results": (cols, rows)})
    return md


def report_data_from_json(path: str | os.PathLike[str]) -> ReportData:
    """Read back a results.json (to re-render a report without re-running it)."""
    raw = json.loads(Path(path).read_text())
    raw["experiments"] = [ExperimentResult(**e) for e in raw["experiments"]]
    return ReportData(**raw)
