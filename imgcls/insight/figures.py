"""Matplotlib figures for the insight commands, each at a fixed size in pixels.

Figures are built on ``matplotlib.figure.Figure`` (no pyplot state, no GUI backend) and saved
by ``artifacts.save_figure`` without a tight crop, so a PNG is exactly figsize × ``DPI`` pixels:
the sizes below are part of the contract (the tests check them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "SIZES",
    "confusion_figure",
    "feature_maps_figure",
    "filters_figure",
    "kernels_figure",
    "learning_curves_figure",
    "misclassified_figure",
    "overfitting_figure",
    "pca_figure",
    "pooling_maps_figure",
    "samples_figure",
    "shift_figure",
    "sweep_figure",
    "templates_figure",
]

DPI = 100
# Width × height in inches; at DPI 100 the PNG is 100× these in pixels.
SIZES: dict[str, tuple[float, float]] = {
    "filters": (8, 8),
    "templates": (8, 8),
    "pca": (8, 8),
    "confusion": (8, 8),
    "misclassified": (10, 10),
    "kernels": (16, 8),
    "shift": (9, 5),
    "sweep": (9, 5),
    "samples": (10, 10),
    "learning_curves": (9, 5),
    "overfitting": (9, 5),  # without templates; with them, see OVERFITTING_* below
    "pooling": (12, 5),
}
# overfitting_figure with templates: width × (plot + one row of templates per training size).
OVERFITTING_WIDTH, OVERFITTING_PLOT_HEIGHT, OVERFITTING_ROW_HEIGHT = 10.0, 4.5, 1.4
MAX_TEMPLATE_UNITS = 16  # templates shown per training size
MAX_POOLED_CHANNELS = 16  # maps shown per row of pooling_maps_figure
FEATURE_MAPS_WIDTH, FEATURE_MAPS_ROW_HEIGHT, FEATURE_MAPS_TOP = (
    12.0,
    3.0,
    1.5,
)  # height = top + row · layers
MAX_CHANNELS = 64  # feature maps shown per layer
COLORS = [f"C{i}" for i in range(10)]


def _figure(kind: str) -> Figure:
    return Figure(figsize=SIZES[kind], dpi=DPI, layout="constrained")


def _grid(n: int, cols: int | None = None) -> tuple[int, int]:
    c = cols or math.ceil(math.sqrt(n))
    return math.ceil(n / c), c


def _show(
    ax: Any,
    img: np.ndarray | torch.Tensor,
    cmap: str = "gray",
    title: str | None = None,
    symmetric: bool = False,
    fontsize: float = 8,
) -> None:
    a = np.asarray(img, dtype=np.float64)
    if symmetric:
        m = float(np.abs(a).max()) or 1.0
        ax.imshow(a, cmap=cmap, vmin=-m, vmax=m, interpolation="nearest")
    else:
        ax.imshow(a, cmap=cmap, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def _image_grid(
    fig: Figure,
    images: Sequence[np.ndarray | torch.Tensor],
    titles: Sequence[str] | None = None,
    cols: int | None = None,
    cmap: str = "gray",
    symmetric: bool = False,
    fontsize: float = 8,
) -> None:
    rows, c = _grid(len(images), cols)
    axes = fig.subplots(rows, c, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < len(images):
            _show(ax, images[i], cmap, titles[i] if titles else None, symmetric, fontsize)
        else:
            ax.axis("off")


def filters_figure(weights: torch.Tensor, title: str) -> Figure:
    """First-layer filters (O, I, K, K) as a grid; colour channels averaged; red > 0 > blue."""
    fig = _figure("filters")
    w = weights.float().mean(dim=1)  # (O, K, K)
    _image_grid(
        fig, list(w.numpy()), [f"{i}" for i in range(len(w))], cmap="RdBu_r", symmetric=True
    )
    fig.suptitle(title)
    return fig


def templates_figure(templates: torch.Tensor, title: str, max_units: int = 64) -> Figure:
    """An MLP's first-layer weights (U, C, H, W) as H×W templates (lecture 002, fig. 3)."""
    fig = _figure("templates")
    t = templates[:max_units].float().mean(dim=1)  # (U, H, W)
    _image_grid(
        fig, list(t.numpy()), [f"unit {i}" for i in range(len(t))], cmap="RdBu_r", symmetric=True
    )
    shown = f" (first {len(t)} of {len(templates)})" if len(templates) > len(t) else ""
    fig.suptitle(title + shown)
    return fig


def feature_maps_figure(
    image: torch.Tensor, maps: Sequence[tuple[str, torch.Tensor]], title: str
) -> Figure:
    """The input image, then one block per conv layer with up to ``MAX_CHANNELS`` channel maps.

    Size: ``FEATURE_MAPS_WIDTH`` × (``FEATURE_MAPS_TOP`` + ``FEATURE_MAPS_ROW_HEIGHT`` · layers)
    inches.
    """
    height = FEATURE_MAPS_TOP + FEATURE_MAPS_ROW_HEIGHT * len(maps)
    fig = Figure(figsize=(FEATURE_MAPS_WIDTH, height), dpi=DPI, layout="constrained")
    # An array of SubFigures: one for the input, one per layer; always >= 2 of them, so never
    # a bare SubFigure.
    subs: Any = fig.subfigures(
        len(maps) + 1, 1, height_ratios=[FEATURE_MAPS_TOP] + [FEATURE_MAPS_ROW_HEIGHT] * len(maps)
    )
    top = subs[0]
    ax = top.subplots(1, 1)
    _show(ax, image.float().mean(dim=0), title="input")
    top.suptitle(title)
    for sub, (label, fmap) in zip(subs[1:], maps, strict=True):
        n = min(len(fmap), MAX_CHANNELS)
        cols = 16 if n > 8 else 8  # the same tile size for every layer of up to 8 or 16 channels
        _image_grid(sub, list(fmap[:n].numpy()), cols=cols, cmap="viridis")
        shown = f", first {n} of {len(fmap)} channels" if len(fmap) > n else f", {n} channels"
        sub.suptitle(
            f"{label}: {tuple(fmap.shape[1:])[0]}×{tuple(fmap.shape[1:])[1]}{shown}", fontsize=10
        )
    return fig


def pca_figure(
    scores: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    explained: torch.Tensor,
    title: str,
) -> Figure:
    """2-D PCA scores (N, 2) of the penultimate layer, one colour per class."""
    fig = _figure("pca")
    ax = fig.subplots()
    s, y = scores.numpy(), labels.numpy()
    for k, name in enumerate(class_names):
        sel = y == k
        ax.scatter(
            s[sel, 0],
            s[sel, 1],
            s=4,
            alpha=0.6,
            color=COLORS[k % len(COLORS)],
            label=name,
            rasterized=True,
        )
    ax.set_xlabel(f"PC 1 ({100 * float(explained[0]):.1f} % of variance)")
    ax.set_ylabel(f"PC 2 ({100 * float(explained[1]):.1f} % of variance)")
    ax.legend(markerscale=4, fontsize=8, loc="best")
    ax.set_title(title)
    return fig


def confusion_figure(cm: torch.Tensor, class_names: Sequence[str], title: str) -> Figure:
    """Confusion matrix (rows: true class, columns: predicted), counts printed in each cell."""
    fig = _figure("confusion")
    ax = fig.subplots()
    m = cm.numpy().astype(np.int64)
    ax.imshow(np.log1p(m), cmap="Blues")
    k = len(class_names)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    hi = np.log1p(m).max() or 1.0
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(m[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if np.log1p(m[i, j]) > 0.6 * hi else "black",
            )
    ax.set_title(title)
    return fig


def misclassified_figure(
    images: torch.Tensor,
    true: torch.Tensor,
    pred: torch.Tensor,
    class_names: Sequence[str],
    title: str,
    max_images: int = 25,
) -> Figure:
    """A gallery of misclassified images (N, C, H, W) with 'true → predicted' labels."""
    fig = _figure("misclassified")
    n = min(len(images), max_images)
    if n == 0:
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center", fontsize=14)
    else:
        titles = [
            f"{class_names[int(t)]} → {class_names[int(p)]}"
            for t, p in zip(true[:n], pred[:n], strict=True)
        ]
        _image_grid(
            fig,
            list(images[:n].float().mean(dim=1).numpy()),
            titles,
            cols=5,
            cmap="gray_r",
            fontsize=9,
        )
    fig.suptitle(f"{title} (true → predicted)")
    return fig


def kernels_figure(
    image: torch.Tensor,
    responses: Mapping[str, torch.Tensor],
    kernels: Mapping[str, Sequence[Sequence[float]]],
    title: str,
) -> Figure:
    """The image, then its cross-correlation with each kernel (kernel printed under each panel)."""
    fig = _figure("kernels")
    panels = 1 + len(responses)
    rows, cols = _grid(panels, cols=math.ceil(panels / 2))
    axes = fig.subplots(rows, cols, squeeze=False).flat
    _show(axes[0], image.double(), title="image", fontsize=11)
    for ax, (name, resp) in zip(axes[1:], responses.items(), strict=False):
        _show(ax, resp, cmap="gray", title=name, fontsize=11)
        k = kernels[name]
        text = "\n".join(" ".join(f"{v:>3g}" for v in row) for row in k)
        ax.set_xlabel(text, fontsize=7, family="monospace")
    for ax in axes[panels:]:
        ax.axis("off")
    fig.suptitle(title)
    return fig


def shift_figure(
    curves: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    references: Mapping[str, Sequence[float]] | None,
    title: str,
) -> Figure:
    """Accuracy (%) against shift distance: per model the mean (solid) and worst direction
    (dashed); lecture curves dotted grey. ``curves``: (name, mean %, worst %)."""
    fig = _figure("shift")
    ax = fig.subplots()
    for i, (name, mean, worst) in enumerate(curves):
        d = np.arange(len(mean))
        color = COLORS[i % len(COLORS)]
        ax.plot(d, mean, "o-", color=color, label=f"{name} (mean of 8 directions)")
        ax.plot(d, worst, "s--", color=color, alpha=0.6, label=f"{name} (worst direction)")
    for j, (name, curve) in enumerate((references or {}).items()):
        ax.plot(
            np.arange(len(curve)), curve, ":", marker="x", color=str(0.2 + 0.25 * j), label=name
        )
    k = max([len(m) for _, m, _ in curves] + [len(c) for c in (references or {}).values()]) - 1
    ax.set_xticks(range(k + 1))
    ax.set_xlabel("shift (pixels, zero fill)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title)
    return fig


def sweep_figure(
    series: Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[float]]], title: str
) -> Figure:
    """Test accuracy (%) against training-set size, log x; error bars: std across seeds.
    ``series``: {net: (sizes, mean %, std %)}."""
    fig = _figure("sweep")
    ax = fig.subplots()
    for i, (name, (sizes, mean, std)) in enumerate(series.items()):
        ax.errorbar(
            sizes, mean, yerr=std, fmt="o-", capsize=4, color=COLORS[i % len(COLORS)], label=name
        )
    ax.set_xscale("log")
    ax.set_xlabel("training images")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(title)
    return fig


def samples_figure(
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    per_class: int = 8,
    title: str = "sample images",
) -> Figure:
    """One row per class, named on the left: the first ``per_class`` images (N, C, H, W) of
    each class in the order given, so the same data always gives the same figure. A class with
    fewer images leaves its row's remaining cells empty."""
    fig = _figure("samples")
    axes = fig.subplots(len(class_names), per_class, squeeze=False)
    y = labels.cpu()
    for k, name in enumerate(class_names):
        idx = torch.nonzero(y == k).flatten()[:per_class].tolist()
        for j, ax in enumerate(axes[k]):
            if j < len(idx):
                _show(ax, images[idx[j]].float().mean(dim=0))
            else:
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
        axes[k, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
    fig.suptitle(title)
    return fig


def learning_curves_figure(
    curves: Mapping[str, Sequence[float]],
    seconds_per_epoch: Mapping[str, float] | None = None,
    title: str = "validation accuracy per epoch",
) -> Figure:
    """Validation accuracy (%) after each epoch (x from 1), one line per net; a net's legend
    entry gives its training time per epoch where ``seconds_per_epoch`` has it."""
    fig = _figure("learning_curves")
    ax = fig.subplots()
    times = seconds_per_epoch or {}
    longest = 1
    for i, (name, acc) in enumerate(curves.items()):
        epochs = np.arange(1, len(acc) + 1)
        longest = max(longest, len(acc))
        label = f"{name} ({times[name]:.1f} s/epoch)" if name in times else name
        ax.plot(epochs, list(acc), "o-", color=COLORS[i % len(COLORS)], label=label)
    if longest <= 20:
        ax.set_xticks(range(1, longest + 1))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    return fig


def overfitting_figure(
    sizes: Sequence[int],
    train_acc: Sequence[float],
    test_acc: Sequence[float],
    templates: Sequence[torch.Tensor] | None = None,
    title: str = "accuracy against training-set size",
) -> Figure:
    """Train and test accuracy (%) against training-set size (log x). With ``templates`` (one
    (units, H, W) or (units, C, H, W) tensor per size: an MLP's first-layer weights, see
    ``probe.first_linear_templates``), one row of up to ``MAX_TEMPLATE_UNITS`` templates per
    size underneath (lecture 002, "Overfitting with less training data").

    Size: ``SIZES["overfitting"]`` without templates, else ``OVERFITTING_WIDTH`` ×
    (``OVERFITTING_PLOT_HEIGHT`` + ``OVERFITTING_ROW_HEIGHT`` · sizes) inches.
    """
    if not len(sizes) == len(train_acc) == len(test_acc):
        raise ValueError(
            f"one train and one test accuracy per size: {len(sizes)} sizes, "
            f"{len(train_acc)} train and {len(test_acc)} test accuracies"
        )
    if templates is not None and len(templates) != len(sizes):
        raise ValueError(f"one template tensor per size: {len(sizes)} sizes, {len(templates)}")
    if templates is None:
        fig = _figure("overfitting")
        top: Any = fig
    else:
        height = OVERFITTING_PLOT_HEIGHT + OVERFITTING_ROW_HEIGHT * len(sizes)
        fig = Figure(figsize=(OVERFITTING_WIDTH, height), dpi=DPI, layout="constrained")
        subs: Any = fig.subfigures(
            len(sizes) + 1,
            1,
            height_ratios=[OVERFITTING_PLOT_HEIGHT] + [OVERFITTING_ROW_HEIGHT] * len(sizes),
        )
        top = subs[0]
    ax = top.subplots()
    ax.plot(list(sizes), list(train_acc), "o-", color=COLORS[0], label="train")
    ax.plot(list(sizes), list(test_acc), "s-", color=COLORS[1], label="test")
    ax.set_xscale("log")
    ax.set_xticks(list(sizes), [f"{n:,}" for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training images")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    if templates is not None:
        for sub, n, t in zip(subs[1:], sizes, templates, strict=True):
            t = t.detach().float().cpu()
            if t.dim() == 4:
                t = t.mean(dim=1)  # colour channels averaged, as in templates_figure
            units = min(len(t), MAX_TEMPLATE_UNITS)
            _image_grid(sub, list(t[:units].numpy()), cols=units, cmap="RdBu_r", symmetric=True)
            shown = f", first {units} of {len(t)} units" if len(t) > units else ""
            sub.suptitle(f"{n:,} training images{shown}", fontsize=9)
    return fig


def pooling_maps_figure(before: torch.Tensor, after: torch.Tensor, title: str) -> Figure:
    """One image's feature maps before pooling (C, H, W, top row) and after it (C, H', W',
    bottom row), up to ``MAX_POOLED_CHANNELS`` channels. Each channel's two maps share one
    colour scale, so the maxima that pooling keeps look the same in both rows."""
    if len(before) != len(after):
        raise ValueError(f"channels differ: {len(before)} before pooling, {len(after)} after")
    fig = _figure("pooling")
    b, a = before.detach().float().cpu(), after.detach().float().cpu()
    n = min(len(b), MAX_POOLED_CHANNELS)
    subs: Any = fig.subfigures(2, 1)
    for sub, maps, what in ((subs[0], b, "before"), (subs[1], a, "after")):
        axes = sub.subplots(1, n, squeeze=False)[0]
        for c, ax in enumerate(axes):
            lo = float(min(b[c].min(), a[c].min()))
            hi = float(max(b[c].max(), a[c].max()))
            ax.imshow(maps[c].numpy(), cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{c}", fontsize=8)
        shown = f", first {n} of {len(maps)} channels" if len(maps) > n else ""
        sub.suptitle(f"{what} pooling: {maps.shape[1]}×{maps.shape[2]}{shown}", fontsize=10)
    fig.suptitle(title)
    return fig
