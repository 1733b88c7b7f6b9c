"""The report's measurements beyond one row per model, and its figures.

Each study reads the trained rows (``ReportData.experiments``) and their models, measures
what the lectures claim (speed of strided vs pooled nets, of LeNet-5 vs a fully-connected
net, the train/test gap, neighbouring feature-map values, the toy rings, backpropagation)
into ``ReportData.studies`` and draws the figures into ``<out>/figures``. A study whose rows
are missing (a report run on a subset of the experiments) is skipped.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from imgcls.insight import lectures
from imgcls.insight.artifacts import save_figure
from imgcls.insight.backprop import check_against_autograd
from imgcls.insight.cost import measure_speed
from imgcls.insight.figures import (
    filters_figure,
    learning_curves_figure,
    overfitting_figure,
    pca_figure,
    pooling_maps_figure,
    samples_figure,
    shift_figure,
    templates_figure,
)
from imgcls.insight.probe import (
    first_conv_weights,
    first_linear_templates,
    neighbour_values,
    pca_2d,
    pooling_pair,
    run_net,
)
from imgcls.insight.report.catalogue import FEATURE_IMAGE_INDEX, KERNEL_IMAGE_INDEX, SPEED_PAIRS
from imgcls.insight.report.results import FIGURES, ReportData
from imgcls.insight.testset import TestSet
from imgcls.insight.toy import LECTURE_ITERATIONS, rings_figure, train_rings, two_rings
from imgcls.insight.visualize import kernels_figures, model_figures

__all__ = ["studies_and_figures"]


def studies_and_figures(
    data: ReportData,
    models: Mapping[str, Any],
    tests: Mapping[str, TestSet],
    out: Path,
    quick: bool = False,
    log: Callable[[str], Any] = print,
) -> None:
    """Fill ``data.studies`` and ``data.figures`` (paths relative to ``out``)."""

    fig_dir = out / "figures"

    def keep(key: str, path: Path) -> None:
        data.figures[key] = path.relative_to(out).as_posix()

    def save(key: str, fig: Any) -> None:
        keep(key, save_figure(fig, fig_dir / FIGURES[key][0]))

    rows = {e.name: e for e in data.experiments}

    # Shift curves of the lectures' own nets, per data set, beside the lectures' numbers.
    for ds, key in (("mnist", "shift_mnist"), ("fashion_mnist", "shift_fashion")):
        group = [r for r in data.experiments if r.dataset == ds and r.study == "lectures"]
        if group:
            curves = [
                (r.name, [100 * v for v in r.shift_mean], [100 * v for v in r.shift_worst])
                for r in group
            ]
            title = f"{ds}: accuracy on shifted test images ({len(tests[ds]):,} images)"
            save(key, shift_figure(curves, lectures.shift_references(ds), title))

    pooled = [rows[n] for n in ("convnet", "convnet-pool2", "lenet5") if n in rows]
    if len(pooled) > 1:
        curves = [
            (r.name, [100 * v for v in r.shift_mean], [100 * v for v in r.shift_worst])
            for r in pooled
        ]
        save(
            "shift_pooling",
            shift_figure(
                curves, None, "one pooling stage (convnet) or two (convnet-pool2, lenet5)"
            ),
        )

    _speed(data, models)
    _curves(data, save)
    _overfitting(data, models, save)
    _lenet5_small(data, models, tests, save)
    _net_figures(data, models, tests, fig_dir, keep, save, log)

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
    if "fashion_mnist" in tests:
        t = tests["fashion_mnist"]
        save(
            "samples_fashion",
            samples_figure(t.images, t.labels, t.class_names, 8, "Fashion-MNIST test images"),
        )
    _rings(data, save, quick)
    _backprop(data)


def _speed(data: ReportData, models: Mapping[str, Any]) -> None:
    """Training-step and inference speed of each pair, measured back to back."""

    for study, names in SPEED_PAIRS.items():
        if not all(n in models for n in names):
            continue
        speeds = {}
        for name in names:
            hp = models[name].hparams
            speeds[name] = measure_speed(
                models[name].net, (hp.in_channels, hp.image_size, hp.image_size)
            )
        data.studies[f"speed_{study}"] = speeds


def _curves(data: ReportData, save: Callable[[str, Any], None]) -> None:

    rows = [r for r in data.experiments if r.study == "curves" and r.val_acc]
    if not rows:
        return
    per_epoch = {r.name: statistics.median(r.epoch_seconds) for r in rows if r.epoch_seconds}
    save(
        "curves_20k",
        learning_curves_figure(
            {r.name: [100 * v for v in r.val_acc] for r in rows},
            per_epoch,
            f"validation accuracy per epoch ({rows[0].n_train or 0:,} training images)",
        ),
    )


def _overfitting(
    data: ReportData, models: Mapping[str, Any], save: Callable[[str, Any], None]
) -> None:

    rows = [r for r in data.experiments if r.study == "overfit" and r.train_acc is not None]
    if not rows:
        return
    rows.sort(key=lambda r: -(r.n_train or 0))
    templates = [first_linear_templates(models[r.name].net, (1, 28, 28)) for r in rows]
    data.studies["overfit"] = [
        {
            "name": r.name,
            "n_train": r.n_train,
            "train_acc": r.train_acc,
            "test_acc": r.shift_mean[0],
            "gap": (r.train_acc or 0.0) - r.shift_mean[0],
        }
        for r in rows
    ]
    save(
        "overfitting",
        overfitting_figure(
            [r.n_train or 0 for r in rows],
            [100 * (r.train_acc or 0.0) for r in rows],
            [100 * r.shift_mean[0] for r in rows],
            templates,
            "MLP-10: train and test accuracy against training-set size",
        ),
    )


def _lenet5_small(
    data: ReportData,
    models: Mapping[str, Any],
    tests: Mapping[str, TestSet],
    save: Callable[[str, Any], None],
) -> None:
    """LeNet5Small's first-layer maps before and after pooling, and how alike neighbours are."""

    if "lenet5-small" not in models or "mnist" not in tests:
        return
    model, t = models["lenet5-small"], tests["mnist"]
    idx = FEATURE_IMAGE_INDEX if len(t) > FEATURE_IMAGE_INDEX else 0
    hp = model.hparams
    name_b, before, name_a, after = pooling_pair(
        model.net, t.images[idx], float(hp.mean), float(hp.std)
    )
    save(
        "pooling_maps_small",
        pooling_maps_figure(
            before, after, f"LeNet5Small: {name_b} (top) and {name_a} (bottom), test image {idx}"
        ),
    )
    channel = int(before.flatten(1).amax(1).argmax())  # the most active map
    values = neighbour_values(before[channel])
    data.studies["neighbours"] = {
        "image_index": idx,
        "layer": name_b,
        "channel": channel,
        **values,
        "before_shape": list(before.shape),
        "after_shape": list(after.shape),
    }


def _net_figures(
    data: ReportData,
    models: Mapping[str, Any],
    tests: Mapping[str, TestSet],
    fig_dir: Path,
    keep: Callable[[str, Path], None],
    save: Callable[[str, Any], None],
    log: Callable[[str], Any],
) -> None:

    if "convnet" in models and "mnist" in tests:
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
        save(
            "filters_lenet5",
            filters_figure(
                first_conv_weights(models["lenet5"].net), "LeNet-5: first-layer filters"
            ),
        )
    if "mlp-10" in models:
        save(
            "templates_mlp10",
            templates_figure(
                first_linear_templates(models["mlp-10"].net, (1, 28, 28)),
                "MLP-10: first-layer weights as templates",
            ),
        )
    if "mlp-128" in models and "mnist" in tests:
        t, hp = tests["mnist"], models["mlp-128"].hparams
        outputs = run_net(models["mlp-128"].net, t.images, float(hp.mean), float(hp.std))
        scores, explained = pca_2d(outputs.features)
        data.studies["pca_explained"] = {"mlp-128": [float(v) for v in explained]}
        save(
            "pca_mlp128",
            pca_figure(
                scores,
                t.labels,
                t.class_names,
                explained,
                f"MLP-128: 2-D PCA of the hidden layer ({outputs.features.shape[1]} units, "
                f"{len(t):,} test images)",
            ),
        )
    if "fashion-convnet" in models and "fashion_mnist" in tests:
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


def _rings(data: ReportData, save: Callable[[str, Any], None], quick: bool) -> None:

    points, labels = two_rings(seed=0)
    snapshots = train_rings(
        LECTURE_ITERATIONS, seed=0, data=(points, labels), grid=61 if quick else 121
    )
    data.studies["rings"] = [
        {"iteration": s.iteration, "accuracy": float(s.accuracy)} for s in snapshots
    ]
    save("rings", rings_figure(snapshots, points, labels))


def _backprop(data: ReportData) -> None:

    data.studies["backprop"] = {
        act: max(d["abs"] for d in check_against_autograd(activation=act).values())
        for act in ("relu", "sigmoid", "tanh")
    }
