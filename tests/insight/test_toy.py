"""Lecture 002's toy problem: two rings, a small net, the boundary after 50..3000 iterations."""

from __future__ import annotations

import pytest
import torch

from imgcls.insight.artifacts import save_figure
from imgcls.insight.toy import LECTURE_ITERATIONS, rings_figure, train_rings, two_rings


@pytest.fixture(scope="module")
def snapshots():
    return train_rings()  # the lecture's iterations, seed 0: about 2 s on one CPU thread


def test_rings_shape_balance_radii_and_determinism():
    points, labels = two_rings(n=400, seed=3, noise=0.1)
    assert points.shape == (400, 2) and points.dtype == torch.float32
    assert labels.shape == (400,) and labels.dtype == torch.int64
    assert int((labels == 0).sum()) == int((labels == 1).sum()) == 200
    radius = points.norm(dim=1)
    assert abs(float(radius[labels == 0].mean()) - 1.0) < 0.05
    assert abs(float(radius[labels == 1].mean()) - 2.0) < 0.05
    again, again_labels = two_rings(n=400, seed=3, noise=0.1)
    assert torch.equal(points, again) and torch.equal(labels, again_labels)
    assert not torch.equal(points, two_rings(n=400, seed=4, noise=0.1)[0])


def test_boundary_fits_the_rings_by_3000(snapshots):
    assert [s.iteration for s in snapshots] == list(LECTURE_ITERATIONS)
    acc = {s.iteration: s.accuracy for s in snapshots}
    assert acc[3000] >= 0.99
    assert acc[50] < acc[3000] - 0.1  # the early panels show a boundary still forming
    for s in snapshots:
        assert s.prob.shape == (len(s.ys), len(s.xs))
        assert s.prob.min() >= 0.0 and s.prob.max() <= 1.0
    # After 3000 steps the centre is class 0 (inner ring) and the corners class 1 (outside).
    last = snapshots[-1].prob
    mid = len(last) // 2
    assert last[mid, mid] < 0.5 < last[0, 0]


def test_training_is_deterministic_per_seed():
    a = train_rings(iterations=(20,), seed=1)
    b = train_rings(iterations=(20,), seed=1)
    assert a[0].accuracy == b[0].accuracy and (a[0].prob == b[0].prob).all()


def test_figure_has_one_panel_per_iteration(snapshots, tmp_path):
    points, labels = two_rings(seed=0)
    fig = rings_figure(snapshots, points, labels)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 6
    assert panels[0].get_title().startswith("iteration 50 — acc ")
    assert panels[-1].get_title() == f"iteration 3000 — acc {100 * snapshots[-1].accuracy:.1f} %"
    assert save_figure(fig, tmp_path / "rings.png").stat().st_size > 0
