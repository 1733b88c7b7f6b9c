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
import statistics
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
    full: TrainSpec  # the setting the committed report runs
    quick: TrainSpec  # --quick: a small subset, one epoch
    lecture_acc: float | None = None  # test accuracy (%) the lectures report
    lecture_shift: tuple[float, ...] | None = None  # accuracy (%) at 0, 1, 2, … px
    source: str = ""  # where in the lectures
    study: str = "lectures"  # the report section it belongs to (see STUDIES)
    train_accuracy: bool = False  # also measure accuracy on its own training images

    def spec(self, quick: bool) -> TrainSpec:
        return self.quick if quick else self.full


# The lectures' protocol: lecture 002's CNN "after 14 epochs" is PyTorch's MNIST example
# (Adadelta lr 1.0, the rate times 0.7 each epoch, batch 64, all 60,000 images, seed 1).
# configs/lecture/protocol.yaml says the same for `imgcls fit` (a test keeps the two equal).
LECTURE_EPOCHS = 14
LECTURE_PROTOCOL: dict[str, Any] = {
    "batch_size": 64,
    "optimizer": "torch.optim.Adadelta",
    "optimizer_args": {"lr": 1.0, "eps": 1e-6},
    "scheduler": "torch.optim.lr_scheduler.StepLR",
    "scheduler_args": {"step_size": 1, "gamma": 0.7},
    "seed": 1,
}
# The overfitting study trains every size for the same number of steps (a per-epoch schedule
# would leave 100 images two steps an epoch), with a constant-rate Adam.
OVERFIT_SIZES = (60_000, 10_000, 1_000, 100)
OVERFIT_STEPS, QUICK_OVERFIT_STEPS = 3_000, 30
ADAM: dict[str, Any] = {
    "optimizer": "torch.optim.Adam",
    "optimizer_args": {"lr": 1e-3},
    "scheduler": None,
    "scheduler_args": {},
}
RESNET_ARGS: dict[str, Any] = {"widths": [16, 32], "blocks": 2}
# The lectures' protocol on a third of the images: these nets cost as much per image as the
# 2-conv net. The decaying rate matters: under a constant rate the batch-norm net's running
# statistics trail its last weights, and its eval-mode accuracy with them.
RESNET_IMAGES = 20_000
QUICK_IMAGES = 2_000


def lecture_spec(
    net: str,
    net_args: dict[str, Any] | None = None,
    dataset: str = "mnist",
    subset: int | None = None,
    epochs: int = LECTURE_EPOCHS,
    **changes: Any,
) -> TrainSpec:
    """The lectures' protocol for ``net``; ``changes`` override fields of ``TrainSpec``."""
    fields: dict[str, Any] = {**LECTURE_PROTOCOL, **changes}
    return TrainSpec(net, dict(net_args or {}), dataset, subset, epochs, **fields)


def _pair(
    net: str,
    net_args: dict[str, Any] | None = None,
    dataset: str = "mnist",
    subset: int | None = None,
    **changes: Any,
) -> tuple[TrainSpec, TrainSpec]:
    """(full, quick) specs: the quick one on ``QUICK_IMAGES`` images for one epoch."""
    quick_changes = {**changes, "epochs": 1}
    if "val_size" in changes:
        quick_changes["val_size"] = 500
    if changes.get("steps"):
        quick_changes["steps"] = QUICK_OVERFIT_STEPS
    quick_subset = min(subset or QUICK_IMAGES, QUICK_IMAGES)
    return (
        lecture_spec(net, net_args, dataset, subset, **changes),
        lecture_spec(net, net_args, dataset, quick_subset, **quick_changes),
    )


def _overfit(size: int) -> Experiment:
    full, quick = _pair("mlp", {"hidden": [10]}, "mnist", size, steps=OVERFIT_STEPS, **ADAM)
    # --quick: four distinct sizes that load and train in a second each.
    small = {60_000: QUICK_IMAGES, 10_000: 1_000, 1_000: 300}.get(size, min(size, 100))
    quick = TrainSpec(**{**asdict(quick), "train_subset": small})
    return Experiment(
        f"overfit-{size}",
        f"MLP-10 on {size:,} images",
        full,
        quick,
        source="lecture 002, overfitting with less training data",
        study="overfit",
        train_accuracy=True,
    )


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        "mlp-10",
        "MLP, 10 hidden units",
        *_pair("mlp", {"hidden": [10]}),
        lectures.MLP10_ACC,
        None,
        "lecture 002",
    ),
    Experiment(
        "mlp-32",
        "MLP, 32 hidden units",
        *_pair("mlp", {"hidden": [32]}),
        lectures.MLP32_ACC,
        lectures.MLP32_SHIFT,
        "lecture 002",
    ),
    Experiment(
        "mlp-128",
        "MLP, 128 hidden units",
        *_pair("mlp", {"hidden": [128]}),
        source="lecture 000 (its fully-connected net)",
    ),
    Experiment(
        "convnet",
        "CNN (conv 32, conv 64, pool, fc 128)",
        *_pair("convnet"),
        lectures.CNN_MNIST_SHIFT[0],
        lectures.CNN_MNIST_SHIFT,
        "lecture 002",
    ),
    Experiment(
        "fashion-convnet",
        "CNN on Fashion-MNIST",
        *_pair("convnet", None, "fashion_mnist"),
        lectures.CNN_FASHION_SHIFT[0],
        lectures.CNN_FASHION_SHIFT,
        "lecture 002",
    ),
    Experiment("lenet5", "LeNet-5", *_pair("lenet5"), source="lecture 000"),
    Experiment("lenet5-small", "LeNet5Small", *_pair("lenet5_small"), source="lecture 000"),
    Experiment(
        "convnet-pool2",
        "CNN with a pool after each conv",
        *_pair("convnet", {"pool_after": "each"}),
        source="lecture 002: more pooling, more invariance",
        study="pooling",
    ),
    Experiment(
        "convnet-stride",
        "CNN with stride-2 convs, no pool",
        *_pair("convnet", {"stride": 2, "pool_size": 1}),
        source="lecture 000: strided convolution",
        study="stride",
    ),
    Experiment(
        "lenet5-20k",
        "LeNet-5 on 20,000 images",
        *_pair("lenet5", None, "mnist", lectures.LENET5_20K_IMAGES, val_size=5_000),
        source="lecture 000",
        study="curves",
    ),
    Experiment(
        "mlp-128-20k",
        "MLP-128 on 20,000 images",
        *_pair("mlp", {"hidden": [128]}, "mnist", lectures.LENET5_20K_IMAGES, val_size=5_000),
        source="lecture 000",
        study="curves",
    ),
    *(_overfit(n) for n in OVERFIT_SIZES),
    Experiment(
        "resnet-bn",
        "ResNet, batch-norm blocks (He et al.)",
        *_pair("resnet", dict(RESNET_ARGS), "mnist", RESNET_IMAGES),
        source="lecture 002, eq. (6)",
        study="resnet",
    ),
    Experiment(
        "resnet-lecture",
        "ResNet, lecture 002's eq. (6) blocks",
        *_pair(
            "resnet",
            {**RESNET_ARGS, "block": "lecture", "batch_norm": False},
            "mnist",
            RESNET_IMAGES,
        ),
        source="lecture 002, eq. (6)",
        study="resnet",
    ),
    Experiment(
        "lenet5-cosine",
        "LeNet-5, loss −fᵀy/‖f‖",
        *_pair("lenet5", loss="cosine"),
        source="lecture 002: an alternative loss",
        study="loss",
    ),
)
QUICK_TEST_LIMIT = 500  # --quick evaluates on the first 500 test images
MAX_SHIFT = 3
FEATURE_IMAGE_INDEX = 1  # MNIST test image 1 is a 2, as in lecture 002's figs. 6–7
KERNEL_IMAGE_INDEX = 18  # MNIST test image 18 is a 3, as in lecture 000's prong example

SECTIONS = (
    "How this report was made",
    "Results beside the lectures",
    "Claims, each with a verdict",
    "Translation robustness",
    "More pooling, more invariance?",
    "Strided convolution or pooling",
    "LeNet-5 or a fully-connected net, on 20,000 images",
    "Overfitting with less training data",
    "Residual blocks as the lecture writes them",
    "An alternative loss",
    "Parameters and multiply-adds",
    "Training time",
    "What the networks learn",
    "Errors",
    "Classic kernels",
    "Toy data: two rings",
    "Backpropagation as lecture 002 derives it",
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
    "shift_pooling": (
        "shift_pooling.png",
        "One pooling stage or two: accuracy on shifted MNIST test images (lecture 002)",
    ),
    "curves_20k": (
        "learning_curves_20k.png",
        "LeNet-5 and a fully-connected net on 20,000 images: validation accuracy per epoch "
        "(lecture 000)",
    ),
    "overfitting": (
        "overfitting.png",
        "MLP-10 on 60,000 / 10,000 / 1,000 / 100 images: train and test accuracy, "
        "and its 10 hidden units at each size (lecture 002)",
    ),
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
    "pooling_maps_small": (
        "lenet5-small_pooling.png",
        "LeNet5Small's 6 first-layer feature maps of a test image of a 2, before and after "
        "2×2 max-pooling (lecture 000)",
    ),
    "templates_mlp10": (
        "mlp-10_templates.png",
        "The 10 hidden units of MLP-10 as 28×28 templates (lecture 002, fig. 3)",
    ),
    "pca_mlp128": (
        "mlp-128_pca.png",
        "2-D PCA of the fully-connected net's 128-unit hidden layer, by class (lecture 000)",
    ),
    "pca_convnet": (
        "convnet_pca.png",
        "2-D PCA of the CNN's 128-unit penultimate layer, by class",
    ),
    "confusion_convnet": ("convnet_confusion.png", "Confusion matrix of the CNN on MNIST"),
    "misclassified_convnet": ("convnet_misclassified.png", "MNIST test images the CNN gets wrong"),
    "confusion_fashion": (
        "fashion-convnet_confusion.png",
        "Confusion matrix of the CNN on Fashion-MNIST",
    ),
    "samples_fashion": (
        "fashion_samples.png",
        "Fashion-MNIST test images with their class names (lecture 002)",
    ),
    "kernels": (
        "kernels.png",
        "Classic kernels on a test image of a 3, cross-correlation with same padding "
        "(lecture 002; the prong filter is lecture 000's)",
    ),
    "rings": (
        "rings.png",
        "Two rings: the decision boundary after 50 … 3,000 iterations (lecture 002, fig. 2)",
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
    fit_seconds: float | None  # None: an external checkpoint whose run kept no epoch times
    origin: str  # "trained", "reused <dir>" or "checkpoint <path>"
    params: int
    macs: int
    n_test: int
    shift_mean: list[float]  # accuracy (fraction) at 0, 1, …, MAX_SHIFT px, mean of 8 directions
    shift_worst: list[float]  # … worst direction
    lecture_acc: float | None = None
    lecture_shift: list[float] | None = None
    source: str = ""
    study: str = "lectures"
    shift_axis: list[float] = field(default_factory=list)  # mean of N, E, S, W moves only
    shift_directions: dict[str, list[float]] = field(default_factory=dict)  # name -> 0..k px
    epoch_seconds: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)  # per epoch, with a validation split
    train_acc: float | None = None  # on its own training images, after training
    methods: dict[str, Any] = field(default_factory=dict)  # methods_of(its checkpoint)


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
    studies: dict[str, Any] = field(default_factory=dict)  # measurements beyond the rows

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def row(self, name: str) -> ExperimentResult | None:
        return next((e for e in self.experiments if e.name == name), None)


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


def _check_external(name: str, path: Path, exp: Experiment) -> Any:
    """Load a checkpoint given with --ckpt NAME=PATH; it must be the experiment's net and data."""
    from imgcls.checkpoint import load_classifier

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
    import yaml

    from imgcls.checkpoint import CheckpointError, load_classifier
    from imgcls.insight.methods import epoch_seconds_of_run
    from imgcls.insight.training import config_of, train
    from imgcls.utils import atomic_write_text

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
    import torch

    from imgcls.insight.artifacts import markdown_table as md_table
    from imgcls.insight.cost import layer_costs, summary_table, totals
    from imgcls.insight.methods import methods_of
    from imgcls.insight.shift import TorchPredictor, evaluate_shift
    from imgcls.insight.testset import load_test_set
    from imgcls.runs import resolve_checkpoint

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
            layer_tables[exp.name] = md_table(*summary_table(costs))
        methods = methods_of(got.ckpt)
        results.append(
            ExperimentResult(
                exp.name,
                exp.title,
                hp.dataset,
                hp.net,
                dict(hp.net_args or {}),
                methods.get("n_train"),
                methods.get("epochs_done"),
                got.fit_seconds,
                got.origin,
                params,
                macs,
                len(test),
                [float(v) for v in shift.mean],
                [float(v) for v in shift.worst],
                exp.lecture_acc,
                list(exp.lecture_shift) if exp.lecture_shift else None,
                exp.source,
                exp.study,
                [float(v) for v in shift.axis_mean],
                shift.per_direction(),
                got.epoch_seconds,
                got.val_acc,
                got.train_acc,
                methods,
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
    from imgcls.insight.report.studies import studies_and_figures

    studies_and_figures(data, models, tests, out, quick=quick, log=log)
    data.notes.append(f"Total wall time of this report: {time.perf_counter() - started:.0f} s.")
    return data


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


def _rows(data: ReportData, study: str) -> list[ExperimentResult]:
    return [e for e in data.experiments if e.study == study]


def _shift_cells(e: ExperimentResult) -> list[str]:
    """'8-dir mean / worst / axis mean' for 1, 2, 3 px."""
    cells = []
    for d in range(1, MAX_SHIFT + 1):
        if d >= len(e.shift_mean):
            cells.append("")
            continue
        axis = (e.shift_axis or e.shift_mean)[d]  # results of older reports have no axis figures
        cells.append(
            f"{100 * e.shift_mean[d]:.2f} / {100 * e.shift_worst[d]:.2f} / {100 * axis:.2f}"
        )
    return cells


def _per_epoch(e: ExperimentResult) -> str:
    if e.epoch_seconds:
        return _secs(statistics.median(e.epoch_seconds))
    if e.fit_seconds is not None and e.epochs:
        return _secs(e.fit_seconds / e.epochs)
    return "n/a"


def render_report(data: ReportData) -> str:
    """The report as markdown: every section of ``SECTIONS``, in order."""
    from imgcls.insight.methods import METHOD_COLUMNS
    from imgcls.insight.report.claims import ACCURACY_RULE, claims

    exps = data.experiments
    quick = data.mode == "quick"
    n_test = ", ".join(sorted({f"{e.n_test:,}" for e in exps})) or "0"
    out: list[str] = ["# The lectures' CNN experiments, reproduced with imgcls\n"]
    if quick:
        out.append(
            "> **Quick mode**: small training subsets and one epoch, evaluated on the first "
            f"{n_test} test images. The numbers show that the pipeline works, "
            "not what the nets can do, and the verdicts below judge them all the same; "
            "run `imgcls report` (without `--quick`) for the real comparison.\n"
        )

    # ------------------------------------------------------------ methods
    out.append(f"## {SECTIONS[0]}\n")
    m = data.machine
    out.append(f"```\n{data.command}\n```\n")
    out.append(
        f"Made {data.created} on {m.get('cpu_count')} CPU core(s) ({m.get('cpu')}), "
        f"{m.get('torch_threads')} torch thread(s), torch {m.get('torch')}, "
        f"Python {m.get('python')}; {m.get('platform')}. "
        f"Test accuracy is measured on {n_test} images of the official test set, which no run "
        "trains or selects on. What produced each row is read from its checkpoint and its "
        "run's config.yaml (`imgcls.insight.methods`), not written by hand. "
        "The lectures' protocol is `configs/lecture/protocol.yaml`: PyTorch's MNIST example, "
        "which lecture 002's CNN is (Adadelta lr 1.0, the rate × 0.7 after every epoch, "
        "batch 64, all 60,000 training images, 14 epochs, seed 1).\n"
    )
    cols = ["row", *(c for c, _ in METHOD_COLUMNS)]
    rows: list[list[Any]] = [
        [e.name, *(e.methods.get(k, "?") for _, k in METHOD_COLUMNS)] for e in exps
    ]
    out.append(markdown_table(cols, rows, align="l" * len(cols)))

    # ------------------------------------------------------------ results
    out.append(f"\n## {SECTIONS[1]}\n")
    cols = [
        "experiment",
        "data",
        "train images",
        "epochs",
        "test acc % (lecture)",
        "test acc % (ours)",
        "1 px: lecture / axis / 8-dir",
        "2 px: lecture / axis / 8-dir",
        "3 px: lecture / axis / 8-dir",
        "params",
        "multiply-adds",
        "train time",
    ]
    rows = []
    for e in _rows(data, "lectures"):
        shifts = []
        for d in (1, 2, 3):
            lec = e.lecture_shift[d] if e.lecture_shift and d < len(e.lecture_shift) else None
            axis = e.shift_axis or e.shift_mean
            ours = 100 * axis[d] if d < len(axis) else None
            eight = 100 * e.shift_mean[d] if d < len(e.shift_mean) else None
            shifts.append(f"{_pct(lec)} / {_pct(ours)} / {_pct(eight)}")
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
        "\nEvery row trained with the lectures' protocol. Shift columns: the lecture's number, "
        "then ours as the mean of the four axis-aligned moves (left, right, up, down) and as "
        "the mean of all eight directions; the lecture does not say which direction it "
        "shifted (see Translation robustness). Multiply-adds are per image. "
        "– : the lectures give no number.\n"
    )

    # ------------------------------------------------------------ claims
    out.append(f"## {SECTIONS[2]}\n")
    out.append(
        "Every claim in the two lectures that a measurement here can test, judged by this "
        f"run's numbers. Rule: {ACCURACY_RULE}; the other rules are in the *why* column or "
        "in `imgcls/insight/claims.py`.\n"
    )
    verdicts = claims(data)
    cols = ["claim", "source", "lecture", "ours", "verdict", "why"]
    rows = [[c.claim, c.source, c.lecture, c.ours, f"**{c.verdict}**", c.why] for c in verdicts]
    out.append(markdown_table(cols, rows, align="llllll"))

    # ------------------------------------------------------------ shift
    out.append(f"\n## {SECTIONS[3]}\n")
    out.append(
        "Every test image is moved d pixels (zero fill) in each of the 8 compass directions; "
        "a diagonal move shifts d rows *and* d columns, so it is the hardest. Three readings "
        "per distance: the mean of all 8, the worst direction, and the mean of the 4 "
        "axis-aligned moves. Lecture 002 gives one number per distance and no direction, "
        "so both means are set beside its numbers. Per-direction figures are in "
        "`results.json` (`shift_directions`).\n"
    )
    cols = (
        ["experiment", "0 px"]
        + [f"{d} px: 8-dir mean / worst / axis mean" for d in range(1, MAX_SHIFT + 1)]
        + ["lecture 0/1/2/3 px"]
    )
    rows = [
        [
            e.name,
            _pct(100 * e.shift_mean[0]),
            *_shift_cells(e),
            " / ".join(f"{v:g}" for v in e.lecture_shift) if e.lecture_shift else "–",
        ]
        for e in exps
    ]
    out.append(markdown_table(cols, rows))
    out.append(_which_shift(data))
    out.append("\n" + _fig(data, "shift_mnist") + "\n" + _fig(data, "shift_fashion"))

    # ------------------------------------------------------------ pooling
    out.append(f"## {SECTIONS[4]}\n")
    out.append(
        'Lecture 002: "to get better translation invariance we can introduce more pooling '
        'into the network". The same 2-conv net with its one 2×2 max-pool after both convs '
        "(`convnet`) and with a pool after each conv (`convnet-pool2`, "
        "`net_args: {pool_after: each}`), same protocol; LeNet-5 (two pools) beside them. "
        "Accuracy lost (points) against the unshifted test set, axis-aligned mean:\n"
    )
    pooled = [e for e in (data.row(n) for n in ("convnet", "convnet-pool2", "lenet5")) if e]
    cols = ["net", "pools", "0 px", "1 px drop", "2 px drop", "3 px drop", "worst 3 px"]
    rows = []
    for e in pooled:
        axis = e.shift_axis or e.shift_mean
        pools = "1" if e.name == "convnet" else "2"
        rows.append(
            [
                e.name,
                pools,
                _pct(100 * e.shift_mean[0]),
                *(
                    f"{100 * (e.shift_mean[0] - axis[d]):.2f}" if d < len(axis) else ""
                    for d in (1, 2, 3)
                ),
                _pct(100 * e.shift_worst[-1]),
            ]
        )
    out.append(markdown_table(cols, rows) if rows else "*(not run)*\n")
    out.append("\n" + _fig(data, "shift_pooling"))

    # ------------------------------------------------------------ stride
    out.append(f"## {SECTIONS[5]}\n")
    out.append(
        "Lecture 000: strided convolution is faster, at the cost of a little accuracy. The "
        "lecture's 2-conv net with its max-pool (`convnet`) against the same net with stride 2 "
        "in both convs and no pool (`convnet-stride`), same protocol. Speed is measured in this "
        "run, one net right after the other (median of 20 training steps at batch 64, and "
        "inference at batch 256, on the CPU).\n"
    )
    out.append(_speed_table(data, "stride"))

    # ------------------------------------------------------------ curves
    out.append(f"## {SECTIONS[6]}\n")
    out.append(
        "Lecture 000 trains LeNet-5 on a subsample of 20,000 images and says it takes around "
        "20 seconds to train, with faster convergence and better validation accuracy than "
        "the fully-connected net, and faster compute. Here both train on the same 20,000 "
        "images (class-balanced, seed 1) with 5,000 more held out for validation, lectures' "
        "protocol.\n"
    )
    out.append(_speed_table(data, "curves"))
    out.append("\n" + _fig(data, "curves_20k"))

    # ------------------------------------------------------------ overfitting
    out.append(f"## {SECTIONS[7]}\n")
    over = data.studies.get("overfit") or []
    steps = int(_rows(data, "overfit")[0].methods.get("global_step") or 0) if over else 0
    if over:
        out.append(
            "Lecture 002 shows MLP-10's hidden units trained on 60,000, 10,000, 1,000 and 100 "
            f"images. Here each size trains for the same {steps:,} optimizer steps at batch 64 "
            "with constant-rate Adam (a per-epoch schedule would give 100 images two steps an "
            "epoch); train accuracy is the final model on its own training images.\n"
        )
        cols = ["train images", "train acc %", "test acc %", "gap (points)"]
        rows = [
            [
                f"{r['n_train']:,}",
                _pct(100 * r["train_acc"]),
                _pct(100 * r["test_acc"]),
                f"{100 * r['gap']:.2f}",
            ]
            for r in over
        ]
        out.append(markdown_table(cols, rows))
    else:
        out.append("*(not run)*\n")
    out.append("\n" + _fig(data, "overfitting"))

    # ------------------------------------------------------------ resnet
    out.append(f"## {SECTIONS[8]}\n")
    out.append(
        "Lecture 002's eq. (6): f_k = f_{k−1} + W_{k,1} σ(W_{k,2} f_{k−1} + b_k) — no "
        "activation after the sum, no batch norm (`resnet` with `block: lecture, "
        "batch_norm: false`), beside He et al.'s block (batch norm, ReLU after the sum), the "
        "`resnet` default. Widths 16 and 32, two blocks each; the lectures' protocol on "
        f"{RESNET_IMAGES:,} of the training images (these nets cost as much per image as the "
        "2-conv net).\n"
    )
    cols = ["block", "params", "test acc %", "3 px axis mean %", "time per epoch"]
    rows = [
        [
            e.title,
            f"{e.params:,}",
            _pct(100 * e.shift_mean[0]),
            _pct(100 * (e.shift_axis or e.shift_mean)[-1]),
            _per_epoch(e),
        ]
        for e in _rows(data, "resnet")
    ]
    out.append(markdown_table(cols, rows) if rows else "*(not run)*\n")

    # ------------------------------------------------------------ loss
    out.append(f"\n## {SECTIONS[9]}\n")
    out.append(
        'Lecture 002: the loss L = −Σ f_L(x_i)ᵀ y_i / ‖f_L(x_i)‖ "works equally well" '
        "(`--model.loss cosine`; our mean over the batch rather than the sum, so that it does "
        "not scale with the batch). LeNet-5 with each loss, lectures' protocol.\n"
    )
    cols = ["loss", "test acc %", "3 px axis mean %"]
    rows = [
        [
            e.methods.get("loss", "?"),
            _pct(100 * e.shift_mean[0]),
            _pct(100 * (e.shift_axis or e.shift_mean)[-1]),
        ]
        for e in (data.row("lenet5"), data.row("lenet5-cosine"))
        if e is not None
    ]
    out.append(markdown_table(cols, rows) if rows else "*(not run)*\n")

    # ------------------------------------------------------------ cost
    out.append(f"\n## {SECTIONS[10]}\n")
    out.append(
        "Lecture 000: a conv layer needs few weights because a filter is shared across the "
        "image, but sliding it over every position costs many multiply-adds; and a colour "
        "image makes fully-connected nets worse (2,352 features, 301,056 weights for 128 "
        "units, against 75 for a 5×5×3 filter: see the worked examples). "
        "Counted per image: a conv layer (C_in·K·K per output element), a linear layer "
        "(in·out), batch norm (one per element); biases, activations and pooling are not "
        "counted.\n"
    )
    cols = ["experiment", "params", "multiply-adds", "multiply-adds per param"]
    rows = [[e.name, f"{e.params:,}", f"{e.macs:,}", f"{e.macs / e.params:.1f}"] for e in exps]
    out.append(markdown_table(cols, rows))
    for name, table in data.layer_tables.items():
        out.append(f"\n<details><summary>Per layer: {name}</summary>\n\n{table}\n</details>\n")

    # ------------------------------------------------------------ time
    out.append(f"\n## {SECTIONS[11]}\n")
    out.append(
        f"Wall time of training on this machine ({m.get('torch_threads')} CPU thread(s)); "
        "a row given as a checkpoint of `imgcls fit` reads its epoch times from the run's "
        "metrics.csv. The lectures' times come from other hardware.\n"
    )
    cols = ["experiment", "train images", "epochs", "train time", "time per epoch", "origin"]
    rows = [
        [
            e.name,
            f"{e.n_train:,}" if e.n_train else "?",
            e.epochs or "?",
            _secs(e.fit_seconds),
            _per_epoch(e),
            e.origin,
        ]
        for e in exps
    ]
    out.append(markdown_table(cols, rows))

    # ------------------------------------------------------------ learned
    out.append(f"\n## {SECTIONS[12]}\n")
    out.append(
        "For greyscale digits the first conv layer learns oriented edges and strokes "
        "(lecture 000); an MLP's hidden units are whole-image templates (lecture 002). "
        "The penultimate layer separates the classes well enough for a linear head, which "
        "the PCA shows in 2-D, for the fully-connected net (lecture 000's figure) and the CNN.\n"
    )
    for key in (
        "filters_convnet",
        "feature_maps_convnet",
        "filters_lenet5",
        "pooling_maps_small",
    ):
        out.append(_fig(data, key))
    n = data.studies.get("neighbours")
    if n:
        out.append(
            f"Raw values around the strongest activation of LeNet5Small's map {n['channel']} "
            f"({n['layer']}, test image {n['image_index']}, peak at row {n['peak'][0]}, "
            f"column {n['peak'][1]}): lecture 000's point that neighbouring values are largely "
            "redundant. Neighbours differ by "
            f"{100 * float(n['mean_abs_neighbour_diff']):.1f} % of the map's range on average "
            "(over pairs where both are active).\n"
        )
        window = n["window"]
        out.append(
            markdown_table(
                [""] + [f"col {n['left'] + j}" for j in range(len(window[0]))],
                [[f"row {n['top'] + i}", *r] for i, r in enumerate(window)],
            )
        )
    for key in ("templates_mlp10", "pca_mlp128", "pca_convnet"):
        out.append(_fig(data, key))

    # ------------------------------------------------------------ errors
    out.append(f"## {SECTIONS[13]}\n")
    for key in (
        "confusion_convnet",
        "misclassified_convnet",
        "samples_fashion",
        "confusion_fashion",
    ):
        out.append(_fig(data, key))

    # ------------------------------------------------------------ kernels
    out.append(f"## {SECTIONS[14]}\n")
    out.append(
        "What ML calls convolution is cross-correlation: "
        "the kernel slides unflipped (lecture 000). "
        "Kernels from lecture 002 (Sobel, Laplacian, outline, emboss, sharpen) "
        "and lecture 000's 5×5 prong filter.\n"
    )
    out.append(_fig(data, "kernels"))

    # ------------------------------------------------------------ rings
    out.append(f"## {SECTIONS[15]}\n")
    rings = data.studies.get("rings") or []
    out.append(
        "Lecture 002's toy problem: two classes on concentric rings, and a fully-connected "
        "net's decision boundary after 50, 150, 250, 350, 500 and 3,000 iterations "
        "(`imgcls.insight.toy`: 400 points, a 2-16-16-2 tanh net, full-batch Adam lr 5e-4, "
        "seed 0). Training accuracy: "
        + (", ".join(f"{s['iteration']}: {100 * s['accuracy']:.1f} %" for s in rings) or "not run")
        + ".\n"
    )
    out.append(_fig(data, "rings"))

    # ------------------------------------------------------------ backprop
    out.append(f"## {SECTIONS[16]}\n")
    bp = data.studies.get("backprop") or {}
    out.append(
        "Theorem 1 of lecture 002, with z_k = W_k f_{k−1} + b_k and D_k = diag(σ'(z_k)): "
        "∂L/∂z_{k−1} = D_{k−1} W_kᵀ ∂L/∂z_k, ∂L/∂W_k = ∂L/∂z_k f_{k−1}ᵀ, ∂L/∂b_k = ∂L/∂z_k. "
        "`imgcls.insight.backprop` computes them with explicit matrices (no autograd) for the "
        "lecture's Figure 1 net (6 inputs, hidden 2, 6, 4; 3 outputs, soft-max "
        "negative log-likelihood, a batch of 5, float64) and compares every W_k and b_k with "
        "`torch.autograd`. Largest absolute difference: "
        + (", ".join(f"{a} {v:.1e}" for a, v in bp.items()) or "not run")
        + ". `tests/test_backprop.py` also checks that a wrong equation (D left out) is caught.\n"
    )

    # ------------------------------------------------------------ worked examples
    out.append(f"## {SECTIONS[17]}\n")
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

    # ------------------------------------------------------------ differences
    out.append(f"## {SECTIONS[18]}\n")
    diffs = [
        "The lectures do not say how their MLPs or LeNet-5 were trained; here they use the "
        "CNN's protocol (PyTorch's MNIST example), so every lecture row is trained alike.",
        "Lecture 002's CNN is that example's net exactly (dropout 0.25 and 0.5 included); its "
        "test loader normalises with the same mean and std.",
        "Shifts: the lecture gives one number per distance and no direction; the results "
        "table compares with the mean of the four axis-aligned moves (left, right, up, down), "
        "and the 8-direction mean and worst are beside it.",
        "LeNet-5 is the 28×28 variant (first conv padded by 2), ReLU and max-pool "
        "(lecture 000's notebook).",
        "The overfitting, ResNet and toy studies use protocols of their own, stated in their "
        "sections and in the methods table; the lectures give none.",
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


def _which_shift(data: ReportData) -> str:
    """Which reading of ours comes closest to each lecture shift series (mean |gap|)."""
    series = [e for e in data.experiments if e.lecture_shift and len(e.lecture_shift) > 1]
    if not series:
        return ""
    cols = [
        "experiment",
        "lecture 1/2/3 px",
        "8-direction mean",
        "axis-aligned mean",
        "closest single direction",
    ]
    rows, winners = [], []
    for e in series:
        lec = list(e.lecture_shift or [])[1:]

        def gap(values: Sequence[float], lec: list[float] = lec) -> float:
            return sum(abs(100 * v - w) for v, w in zip(values[1:], lec, strict=False)) / len(lec)

        readings = {
            "8-direction mean": gap(e.shift_mean),
            "axis-aligned mean": gap(e.shift_axis or e.shift_mean),
        }
        directions = {k: gap(v) for k, v in e.shift_directions.items()}
        best_dir = min(directions, key=lambda k: directions[k]) if directions else None
        winners.append(min(readings, key=lambda k: readings[k]))
        rows.append(
            [
                e.name,
                " / ".join(f"{v:g}" for v in lec),
                f"{readings['8-direction mean']:.2f}",
                f"{readings['axis-aligned mean']:.2f}",
                f"{best_dir} {directions[best_dir]:.2f}" if best_dir else "–",
            ]
        )
    same = len(set(winners)) == 1
    verdict = (
        f"The {winners[0]} is the closer reading for every series."
        if same
        else "No one reading is closest for every series ("
        + ", ".join(f"{e.name}: {w}" for e, w in zip(series, winners, strict=True))
        + "), so the lecture's direction cannot be recovered from its numbers; the claims "
        "judge each series by the closer of the two means."
    )
    return (
        "\nWhich of our readings is closest to the lecture's shifted accuracies "
        "(mean absolute gap over its distances, points):\n\n"
        + markdown_table(cols, rows)
        + f"\n{verdict}\n"
    )


def _speed_table(data: ReportData, study: str) -> str:
    """Accuracy, training and inference speed of a pair measured in one run."""
    from imgcls.insight.report.studies import SPEED_PAIRS

    speeds = data.studies.get(f"speed_{study}") or {}
    names = SPEED_PAIRS.get(study, ())
    cols = [
        "net",
        "params",
        "multiply-adds",
        "test acc %",
        "train step ms (batch 64)",
        "train images/s",
        "inference images/s",
        "time per epoch in its run",
    ]
    if study == "curves":
        cols.append("val acc % after epoch 1 / last")
    rows = []
    for name in names:
        e, sp = data.row(name), speeds.get(name)
        if e is None or sp is None:
            continue
        row: list[Any] = [
            name,
            f"{e.params:,}",
            f"{e.macs:,}",
            _pct(100 * e.shift_mean[0]),
            f"{sp['train_step_ms']:.2f}",
            f"{sp['train_images_per_s']:,.0f}",
            f"{sp['infer_images_per_s']:,.0f}",
            _per_epoch(e),
        ]
        if study == "curves":
            row.append(
                f"{100 * e.val_acc[0]:.2f} / {100 * e.val_acc[-1]:.2f}" if e.val_acc else "–"
            )
        rows.append(row)
    if not rows:
        return "*(not run)*\n"
    return markdown_table(cols, rows)


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
