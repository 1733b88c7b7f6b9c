"""Lecture 002's toy problem: two classes on concentric rings, and a small net learning them.

The lecture shows the decision boundary after 50, 150, 250, 350, 500 and 3000 training
iterations: no straight line separates the rings, so the boundary has to bend into a closed
curve, and watching it do so is the point. ``train_rings`` records exactly those snapshots
and ``rings_figure`` draws them. Everything runs on the CPU in a few seconds and is
deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from imgcls.insight.figures import COLORS, DPI, _grid

__all__ = ["LECTURE_ITERATIONS", "RingsSnapshot", "rings_figure", "train_rings", "two_rings"]

LECTURE_ITERATIONS = (50, 150, 250, 350, 500, 3000)
RINGS_SIZE = (12.0, 8.0)  # inches: 3 × 2 square-ish panels, 1200 × 800 px at DPI
EXTENT = 3.0  # the grid covers [-EXTENT, EXTENT]²: the outer ring (radius 2) with a margin


def two_rings(
    n: int = 400, seed: int = 0, noise: float = 0.15
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points (n, 2) float32 and labels (n,) int64: class 0 on the circle of radius 1,
    class 1 on radius 2, each radius perturbed by N(0, noise²); angles uniform.

    The classes are balanced (n // 2 of class 1, the rest class 0) and interleaved, so any
    prefix is roughly balanced too. The same seed gives the same points.
    """
    if n < 2:
        raise ValueError(f"two_rings needs at least 2 points, got {n}")
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    radius = 1.0 + labels.double() + noise * torch.randn(n, generator=g, dtype=torch.float64)
    angle = 2 * torch.pi * torch.rand(n, generator=g, dtype=torch.float64)
    points = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return points.float(), labels


@dataclass(frozen=True)
class RingsSnapshot:
    """The net after ``iteration`` gradient steps: its training accuracy and its class-1
    probability ``prob[i, j]`` at the grid point (``xs[j]``, ``ys[i]``)."""

    iteration: int
    accuracy: float
    xs: np.ndarray  # (G,)
    ys: np.ndarray  # (G,)
    prob: np.ndarray  # (G, G), rows follow ys


def _mlp(hidden: Sequence[int], activation: Literal["relu", "tanh"]) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = 2
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU() if activation == "relu" else nn.Tanh()]
        width = h
    layers.append(nn.Linear(width, 2))  # logits of the two classes, σ_L the identity
    return nn.Sequential(*layers)


def train_rings(
    iterations: Sequence[int] = LECTURE_ITERATIONS,
    hidden: Sequence[int] = (16, 16),
    lr: float = 0.0005,
    seed: int = 0,
    activation: Literal["relu", "tanh"] = "tanh",
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
    grid: int = 121,
) -> list[RingsSnapshot]:
    """Train a small fully-connected net on ``two_rings(seed=seed)`` (or ``data``) with
    full-batch Adam on the soft-max cross-entropy, and snapshot it after each of
    ``iterations`` steps.

    Adam at this small learning rate (a larger one fits the rings within ~150 steps) makes
    the boundary move visibly across the lecture's snapshots: about 60 % training accuracy
    at 50 steps, 80-90 % at 150, a closed curve by 350-500 and 100 % by 3000. The seed fixes
    the initialisation without touching the global RNG. One thread: on these tiny matrices
    threads only add synchronisation (several times slower on a busy machine).
    """
    steps = sorted(set(int(i) for i in iterations))
    if not steps or steps[0] < 0:
        raise ValueError(f"iterations must be non-negative step counts, got {list(iterations)}")
    points, labels = data if data is not None else two_rings(seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _mlp(hidden, activation)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    axis = np.linspace(-EXTENT, EXTENT, grid)
    gx, gy = np.meshgrid(axis, axis)  # rows follow y
    grid_points = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], axis=1)).float()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        snapshots: list[RingsSnapshot] = []
        done = 0
        for target in steps:
            for _ in range(target - done):
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(net(points), labels).backward()
                opt.step()
            done = target
            with torch.no_grad():
                accuracy = float((net(points).argmax(1) == labels).float().mean())
                prob = torch.softmax(net(grid_points), dim=1)[:, 1].reshape(grid, grid).numpy()
            snapshots.append(RingsSnapshot(target, accuracy, axis, axis, prob))
    finally:
        torch.set_num_threads(threads)
    return snapshots


def rings_figure(
    snapshots: Sequence[RingsSnapshot], points: torch.Tensor, labels: torch.Tensor
) -> Figure:
    """One panel per snapshot: the class-1 probability as a filled map, the decision boundary
    (probability 0.5) as a black line, and the training points coloured by class."""
    fig = Figure(figsize=RINGS_SIZE, dpi=DPI, layout="constrained")
    rows, cols = _grid(len(snapshots), cols=3)
    axes = fig.subplots(rows, cols, squeeze=False)
    pts, y = points.numpy(), labels.numpy()
    levels = np.linspace(0.0, 1.0, 11)
    filled = None
    for ax, snap in zip(axes.flat, snapshots, strict=False):
        filled = ax.contourf(snap.xs, snap.ys, snap.prob, levels=levels, cmap="RdBu_r", alpha=0.5)
        ax.contour(snap.xs, snap.ys, snap.prob, levels=[0.5], colors="black", linewidths=1.5)
        for k in (0, 1):
            sel = y == k
            ax.scatter(pts[sel, 0], pts[sel, 1], s=5, color=COLORS[k * 3], label=f"class {k}")
        ax.set_aspect("equal")
        ax.set_xlim(-EXTENT, EXTENT)
        ax.set_ylim(-EXTENT, EXTENT)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"iteration {snap.iteration} — acc {100 * snap.accuracy:.1f} %", fontsize=10)
    for ax in axes.flat[len(snapshots) :]:
        ax.axis("off")
    if filled is not None:
        fig.colorbar(filled, ax=axes, shrink=0.6, label="P(class 1)")
        axes.flat[0].legend(fontsize=8, loc="upper right", markerscale=2)
    fig.suptitle("Two rings: the decision boundary as training goes on (lecture 002)")
    return fig
