"""The report's data model: one ``ExperimentResult`` per row, the whole run as ``ReportData``.

``ReportData.to_dict`` is results.json; ``report_data_from_json`` reads one back, so a report
can be re-rendered without re-running it. ``FIGURES`` names the figures a report draws and
their captions.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FIGURES", "ExperimentResult", "ReportData", "report_data_from_json"]

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


@dataclass(kw_only=True)  # 24 fields: a positional call would be unreadable
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


def report_data_from_json(path: str | os.PathLike[str]) -> ReportData:
    """Read back a results.json (to re-render a report without re-running it)."""
    raw = json.loads(Path(path).read_text())
    raw["experiments"] = [ExperimentResult(**e) for e in raw["experiments"]]
    return ReportData(**raw)
