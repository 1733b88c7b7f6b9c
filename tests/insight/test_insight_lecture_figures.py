"""Tests of the figures and probes that put the lectures' pictures beside ours: sample images
per class, learning curves, overfitting against training-set size, maps before / after pooling,
neighbouring values of a feature map, and the PCA of a fully-connected net's hidden layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imgcls.insight import InsightError
from imgcls.insight.artifacts import save_figure
from imgcls.insight.figures import (
    MAX_TEMPLATE_UNITS,
    learning_curves_figure,
    overfitting_figure,
    pooling_maps_figure,
    samples_figure,
)
from imgcls.insight.probe import (
    NoConvLayersError,
    first_linear_templates,
    neighbour_values,
    pca_2d,
    pooling_pair,
    run_net,
)
from imgcls.insight.testset import load_test_set
from imgcls.models import create_model

from .test_insight_figures import png_size


def _panel(ax) -> np.ndarray:  # the image data an axes shows
    (im,) = ax.get_images()
    return np.asarray(im.get_array())


# ----------------------------------------------------------------------------- samples
def test_samples_figure_shows_the_first_images_of_each_class(tmp_path: Path) -> None:
    labels = torch.tensor([2, 0, 2, 1, 0, 2, 0, 2])
    images = torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1).expand(8, 1, 4, 4) * 30
    fig = samples_figure(images, labels, ["zero", "one", "two"], per_class=3, title="t")
    axes = fig.axes
    assert len(axes) == 3 * 3
    grid = np.array(axes).reshape(3, 3)
    assert [grid[k, 0].get_ylabel() for k in range(3)] == ["zero", "one", "two"]
    expected = {0: [1, 4, 6], 1: [3], 2: [0, 2, 5]}  # first 3 of each class, in order
    for k, idx in expected.items():
        for j in range(3):
            if j < len(idx):
                assert np.array_equal(_panel(grid[k, j]), images[idx[j], 0].double().numpy())
            else:
                assert grid[k, j].get_images() == []  # class 1 has one image
    assert png_size(save_figure(fig, tmp_path / "s.png")) == (1000, 1000)


def test_samples_figure_on_real_fashion_mnist(real_fashion_root: Path) -> None:
    ts = load_test_set("fashion_mnist", real_fashion_root, limit=300)
    fig = samples_figure(ts.images, ts.labels, ts.class_names, per_class=4, title="Fashion-MNIST")
    grid = np.array(fig.axes).reshape(10, 4)
    names = [grid[k, 0].get_ylabel() for k in range(10)]
    assert names[0] == "T-shirt/top" and names[9] == "Ankle boot"
    first_boot = int(torch.nonzero(ts.labels == 9)[0])
    assert np.array_equal(_panel(grid[9, 0]), ts.images[first_boot, 0].double().numpy())


# ----------------------------------------------------------------------------- learning curves
def test_learning_curves_plot_each_epoch_from_one(tmp_path: Path) -> None:
    curves = {"lenet5": [90.0, 95.5, 97.25], "mlp-128": [85.0, 88.0]}
    fig = learning_curves_figure(curves, {"lenet5": 12.34}, "LeNet-5 vs MLP")
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 2
    assert (
        list(lines[0].get_xdata()) == [1, 2, 3] and list(lines[0].get_ydata()) == curves["lenet5"]
    )
    assert list(lines[1].get_xdata()) == [1, 2] and list(lines[1].get_ydata()) == curves["mlp-128"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["lenet5 (12.3 s/epoch)", "mlp-128"]
    assert png_size(save_figure(fig, tmp_path / "l.png")) == (900, 500)
    no_times = learning_curves_figure(curves, None, "t")
    assert [t.get_text() for t in no_times.axes[0].get_legend().get_texts()] == list(curves)


# ----------------------------------------------------------------------------- overfitting
def test_overfitting_figure_lines_and_template_rows(tmp_path: Path) -> None:
    sizes, train, test = [60000, 10000, 1000, 100], [98.0, 99.0, 100.0, 100.0], [97, 95, 88, 70]
    plain = overfitting_figure(sizes, train, test, None, "MLP-10")
    (ax,) = plain.axes
    assert ax.get_xscale() == "log"
    (tr, te) = ax.get_lines()
    assert list(tr.get_xdata()) == sizes and list(tr.get_ydata()) == train
    assert list(te.get_xdata()) == sizes and list(te.get_ydata()) == test
    assert png_size(save_figure(plain, tmp_path / "o.png")) == (900, 500)

    net = create_model("mlp", hidden=[10])
    templates = [first_linear_templates(net, (1, 28, 28))[:, 0] * (i + 1) for i in range(4)]
    fig = overfitting_figure(sizes, train, test, templates, "MLP-10")
    assert len(fig.axes) == 1 + 4 * 10
    plot, panels = fig.axes[0], fig.axes[1:]
    assert [list(line.get_ydata()) for line in plot.get_lines()] == [train, test]
    for i in range(4):
        for u in range(10):
            assert np.allclose(_panel(panels[10 * i + u]), templates[i][u].numpy())
    assert png_size(save_figure(fig, tmp_path / "ot.png")) == (1000, 450 + 4 * 140)
    wide = overfitting_figure([10], [1.0], [1.0], [torch.zeros(40, 5, 5)], "t")
    assert len(wide.axes) == 1 + MAX_TEMPLATE_UNITS
    with pytest.raises(ValueError, match="one template tensor per size"):
        overfitting_figure(sizes, train, test, templates[:2], "t")


# ----------------------------------------------------------------------------- pooling
@pytest.mark.parametrize(
    ("net", "args", "before", "after", "shapes"),
    [
        (
            "lenet5_small",
            {},
            "features.0 + ReLU",
            "features.2 (MaxPool2d)",
            ((6, 24, 24), (6, 12, 12)),
        ),
        ("lenet5", {}, "features.0 + ReLU", "features.2 (MaxPool2d)", ((6, 28, 28), (6, 14, 14))),
        # the default convnet pools once, after both convs: "before" is the second conv's ReLU
        (
            "convnet",
            {},
            "features.2 + ReLU",
            "features.4 (MaxPool2d)",
            ((64, 24, 24), (64, 12, 12)),
        ),
    ],
)
def test_pooling_pair_is_the_map_before_and_after_the_first_pool(
    net: str, args: dict, before: str, after: str, shapes: tuple
) -> None:
    torch.manual_seed(0)
    model = create_model(net, **args)
    image = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    lb, b, la, a = pooling_pair(model, image, 0.1307, 0.3081)
    assert (lb, la) == (before, after)
    assert (tuple(b.shape), tuple(a.shape)) == shapes
    assert torch.equal(torch.nn.functional.max_pool2d(b, 2), a)
    assert b.min() >= 0 and b.max() > 0  # after the ReLU


def test_pooling_pair_needs_a_pool_after_a_conv() -> None:
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    with pytest.raises(NoConvLayersError):
        pooling_pair(create_model("mlp"), image, 0.0, 1.0)
    with pytest.raises(InsightError, match="no pooling layer"):
        pooling_pair(create_model("convnet", pool_size=1), image, 0.0, 1.0)


def test_pooling_maps_figure_shows_both_rows(tmp_path: Path, real_data_root: Path) -> None:
    torch.manual_seed(0)
    net = create_model("lenet5_small")
    image = load_test_set("mnist", real_data_root, limit=1).images[0]
    _, b, _, a = pooling_pair(net, image, 0.1307, 0.3081)
    fig = pooling_maps_figure(b, a, "LeNet5Small: 6 maps before and after max-pooling")
    assert len(fig.axes) == 2 * 6
    for c in range(6):
        top, bottom = fig.axes[c], fig.axes[6 + c]
        assert np.array_equal(_panel(top), b[c].numpy())
        assert np.array_equal(_panel(bottom), a[c].numpy())
        assert top.get_images()[0].get_clim() == bottom.get_images()[0].get_clim()
    assert png_size(save_figure(fig, tmp_path / "p.png")) == (1200, 500)


# ----------------------------------------------------------------------------- neighbour values
def test_neighbour_values_on_a_hand_made_map() -> None:
    m = torch.zeros(8, 8)
    m[2:5, 2:6] = torch.tensor([[1.0, 2.0, 2.0, 1.0], [2.0, 4.0, 3.0, 1.0], [1.0, 2.0, 2.0, 1.0]])
    v = neighbour_values(m, size=3)
    assert v["peak"] == [3, 3] and v["max"] == 4.0
    assert (v["top"], v["left"]) == (2, 2)
    assert v["window"] == [[1.0, 2.0, 2.0], [2.0, 4.0, 3.0], [1.0, 2.0, 2.0]]
    # Pairs with both values non-zero: the block's. Horizontal |diffs| per row (1,0,1), (2,1,2),
    # (1,0,1): 9 over 9 pairs; vertical per column (1,1), (2,2), (1,1), (0,0): 8 over 8 pairs.
    assert v["n_pairs"] == 17
    assert v["value_range"] == 4.0
    assert v["mean_abs_neighbour_diff"] == pytest.approx((9 + 8) / 17 / 4.0)

    corner = neighbour_values(torch.arange(36.0).view(6, 6) / 7, size=5)
    assert corner["peak"] == [5, 5] and (corner["top"], corner["left"]) == (1, 1)
    assert len(corner["window"]) == 5 and all(len(r) == 5 for r in corner["window"])
    assert corner["window"][-1][-1] == round(35 / 7, 3) == 5.0
    assert corner["window"][0][0] == round(7 / 7, 3)
    assert corner["window"][0][1] == 1.143  # rounded to 3 decimals
    # |x[i,j] - x[i,j+1]| = 1/7, |x[i,j] - x[i+1,j]| = 6/7, over pairs not touching x[0,0] = 0
    h, vert = [1 / 7] * (6 * 5 - 1), [6 / 7] * (5 * 6 - 1)
    assert corner["mean_abs_neighbour_diff"] == pytest.approx(np.mean(h + vert) / 5.0)
    assert neighbour_values(torch.zeros(3, 3))["mean_abs_neighbour_diff"] == 0.0
    small = neighbour_values(torch.ones(2, 3), size=5)  # map smaller than the window
    assert small["window"] == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    with pytest.raises(InsightError, match="2-D"):
        neighbour_values(torch.zeros(1, 3, 3))


# ----------------------------------------------------------------------------- MLP PCA
def test_pca_of_an_mlp_128_hidden_layer() -> None:
    torch.manual_seed(0)
    net = create_model("mlp", hidden=[128])
    images = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8)
    out = run_net(net, images, 0.1307, 0.3081, batch_size=20)
    assert tuple(out.features.shape) == (50, 128)  # the hidden layer after its ReLU
    assert out.features.min() >= 0
    with torch.inference_mode():
        assert torch.allclose(net.head(out.features), out.logits, atol=1e-5)
    scores, explained = pca_2d(out.features)
    assert tuple(scores.shape) == (50, 2)
    assert 0 < float(explained[1]) <= float(explained[0]) < 1
