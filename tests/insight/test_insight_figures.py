"""Tests of ``imgcls visualize`` and ``imgcls visualize kernels``: every figure is written,
non-empty, at its expected pixel size; an MLP gets templates and a clear message instead of
filters; bad paths and a mismatched data set are errors naming what was wrong."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.__main__ import main
from imgcls.insight.artifacts import log_to_wandb, save_figure
from imgcls.insight.figures import feature_maps_figure, filters_figure
from imgcls.insight.probe import NoConvLayersError, feature_maps, first_conv_weights, pca_2d
from imgcls.insight.testset import TestSet
from imgcls.insight.visualize import model_figures
from tests.helpers.training import make_checkpoint


def png_size(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 1000, path
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def _fake_test_set(n: int = 60) -> TestSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    return TestSet("mnist", images, torch.arange(n) % 10, [str(i) for i in range(10)])


# ----------------------------------------------------------------------------- figures in-process
def test_conv_net_figures_and_sizes(tmp_path: Path) -> None:
    from imgcls.training.checkpoint_io import load_classifier

    model = load_classifier(make_checkpoint(tmp_path / "c.ckpt", "convnet"))
    paths, facts = model_figures(
        model, _fake_test_set(), tmp_path / "fig", image_index=3, log=lambda s: None
    )
    assert set(paths) == {"filters", "feature_maps", "pca", "confusion", "misclassified"}
    sizes = {k: png_size(p) for k, p in paths.items()}
    assert sizes == {
        "filters": (800, 800),
        "feature_maps": (1200, 750),
        "pca": (800, 800),
        "confusion": (800, 800),
        "misclassified": (1000, 1000),
    }
    assert facts["n_images"] == 60 and 0.0 <= facts["accuracy"] <= 1.0
    assert sum(map(sum, facts["confusion"])) == 60  # every image counted once


def test_mlp_gets_templates_and_a_clear_message(tmp_path: Path) -> None:
    from imgcls.training.checkpoint_io import load_classifier

    model = load_classifier(make_checkpoint(tmp_path / "m.ckpt", "mlp", {"hidden": [10]}))
    with pytest.raises(NoConvLayersError, match="no convolutional layers"):
        first_conv_weights(model.net)
    messages: list[str] = []
    paths, facts = model_figures(model, _fake_test_set(), tmp_path / "fig", log=messages.append)
    assert set(paths) == {"templates", "pca", "confusion", "misclassified"}
    assert png_size(paths["templates"]) == (800, 800)
    assert not (tmp_path / "fig" / "filters.png").exists()
    assert any("no convolutional layers" in m and "templates" in m for m in messages)


def test_feature_maps_take_the_activation_after_each_conv() -> None:
    from imgcls.models import create_model

    net = create_model("convnet").eval()
    maps = feature_maps(net, torch.full((1, 28, 28), 128, dtype=torch.uint8), 0.1307, 0.3081)
    assert [(label, tuple(m.shape)) for label, m in maps] == [
        ("features.0 + ReLU", (32, 26, 26)),
        ("features.2 + ReLU", (64, 24, 24)),
    ]
    assert all(bool((m >= 0).all()) for _, m in maps)  # after the ReLU
    fig = feature_maps_figure(torch.zeros(1, 28, 28, dtype=torch.uint8), maps, "t")
    assert tuple(fig.get_size_inches() * fig.dpi) == (1200, 750)


def test_pca_recovers_the_dominant_directions() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 5, generator=g) * torch.tensor([10.0, 3.0, 0.1, 0.1, 0.1])
    scores, explained = pca_2d(x)
    assert scores.shape == (500, 2)
    assert explained[0] > 0.85 and explained[1] > 0.05 and explained.sum() > 0.99
    assert torch.allclose(scores[:, 0].abs(), (x[:, 0] - x[:, 0].mean()).abs(), atol=0.5)


def test_figures_are_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "f.png"
    save_figure(filters_figure(torch.randn(6, 1, 5, 5), "six"), target)
    assert png_size(target) == (800, 800)
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]  # no temp file left behind


def test_figures_and_tables_go_to_an_active_wandb_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: list[dict] = []
    run = types.SimpleNamespace(log=logged.append)
    fake = types.SimpleNamespace(
        run=run, Image=lambda p: ("image", p), Table=lambda columns, data: ("table", columns, data)
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    png = save_figure(filters_figure(torch.randn(2, 1, 3, 3), "x"), tmp_path / "a.png")
    assert log_to_wandb("visualize", {"filters": png}, {"t": (["a"], [[1]])})
    assert logged == [
        {"visualize/filters": ("image", str(png)), "visualize/t": ("table", ["a"], [[1]])}
    ]
    fake.run = None
    assert not log_to_wandb("visualize", {"filters": png})


# ----------------------------------------------------------------------------- the commands
@pytest.mark.real_data
def test_visualize_command_on_the_trained_lenet(
    trained_ckpt: Path, real_data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "vis"
    assert (
        main(
            [
                "visualize",
                "--ckpt",
                str(trained_ckpt),
                "--image_index",
                "1",
                "--limit",
                "2000",
                "--data_dir",
                str(real_data_root),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    expected = {
        "filters.png": (800, 800),
        "feature_maps.png": (1200, 750),
        "pca.png": (800, 800),
        "confusion.png": (800, 800),
        "misclassified.png": (1000, 1000),
    }
    assert {p.name: png_size(p) for p in sorted(out.iterdir())} == expected
    assert "on 2000 mnist test images" in capsys.readouterr().out


@pytest.mark.real_data
def test_visualize_kernels_on_a_test_image(real_data_root: Path, tmp_path: Path) -> None:
    assert (
        main(
            [
                "visualize",
                "kernels",
                "--index",
                "18",
                "--data_dir",
                str(real_data_root),
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert png_size(tmp_path / "kernels.png") == (1600, 800)


def test_visualize_kernels_on_an_image_file(tmp_path: Path) -> None:
    img = np.zeros((40, 30), dtype=np.uint8)
    img[10:30, 12:16] = 255
    Image.fromarray(img).save(tmp_path / "bar.png")
    assert (
        main(
            [
                "visualize",
                "kernels",
                "--image",
                str(tmp_path / "bar.png"),
                "--out",
                str(tmp_path / "k"),
            ]
        )
        == 0
    )
    assert png_size(tmp_path / "k" / "kernels.png") == (1600, 800)


def test_visualize_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.png"
    assert main(["visualize", "kernels", "--image", str(missing), "--out", str(tmp_path)]) == 2
    assert str(missing) in capsys.readouterr().err
    not_an_image = tmp_path / "text.png"
    not_an_image.write_text("hello")
    assert main(["visualize", "kernels", "--image", str(not_an_image), "--out", str(tmp_path)]) == 2
    assert "not a readable image" in capsys.readouterr().err
    missing_ckpt = tmp_path / "missing.ckpt"
    assert main(["visualize", "--ckpt", str(missing_ckpt), "--out", str(tmp_path)]) == 2
    assert str(missing_ckpt) in capsys.readouterr().err
    fashion = make_checkpoint(tmp_path / "fashion.ckpt", "mlp", {"hidden": [8]}, "fashion_mnist")
    assert (
        main(
            [
                "visualize",
                "--ckpt",
                str(fashion),
                "--dataset",
                "mnist",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "'fashion_mnist'" in err and "'mnist'" in err
    assert main(["visualize", "--out", str(tmp_path)]) == 2
    assert "--ckpt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
