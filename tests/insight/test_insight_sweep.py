"""Tests of ``imgcls sweep subset`` and the in-process training it uses, on the small generated
data set (600 training / 200 test images)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from imgcls.__main__ import main
from imgcls.insight import InsightError
from imgcls.insight.sweep import SweepPoint, run_sweep, summarise
from imgcls.insight.training import TrainSpec, parse_net, train


def test_parse_net() -> None:
    assert parse_net("mlp-32") == ("mlp", {"hidden": [32]})
    assert parse_net("mlp-32-16") == ("mlp", {"hidden": [32, 16]})
    assert parse_net("lenet5") == ("lenet5", {})
    with pytest.raises(InsightError, match="unknown net 'vgg'"):
        parse_net("vgg")


def test_summarise_mean_and_sample_std() -> None:
    pts = [SweepPoint("mlp", 100, 100, s, acc, 1.0) for s, acc in enumerate([0.5, 0.7, 0.9])]
    pts.append(SweepPoint("mlp", 1000, 1000, 0, 0.95, 2.0))
    (small, big) = summarise(pts)["mlp"]
    assert small["mean"] == pytest.approx(70.0) and small["std"] == pytest.approx(
        20.0
    )  # sample std (n − 1)
    assert big["mean"] == pytest.approx(95.0) and big["std"] == 0.0 and big["n_train"] == 1000


def test_train_uses_every_image_when_the_size_exceeds_the_data(
    tiny_data: Path, tmp_path: Path
) -> None:
    from imgcls.training.checkpoint_io import load_classifier

    ckpt = tmp_path / "run" / "model.ckpt"
    result = train(
        TrainSpec("mlp", {"hidden": [8]}, "mnist", 60_000, 1, 0), tiny_data, checkpoint=ckpt
    )
    assert result.n_train == 600 and result.fit_seconds > 0
    model = load_classifier(ckpt)  # a weights-only checkpoint that rebuilds the model alone
    assert model.hparams.net == "mlp" and model.hparams.net_args == {"hidden": [8]}
    assert train(TrainSpec("mlp", {"hidden": [8]}, "mnist", 100, 1, 0), tiny_data).n_train == 100


def test_sweep_on_tiny_data(tiny_data: Path, tmp_path: Path) -> None:
    points = run_sweep(
        ["mlp-16"],
        [50, 600],
        seeds=2,
        epochs=3,
        data_dir=tiny_data,
        progress=False,
        log=lambda s: None,
    )
    assert [(p.size, p.n_train, p.seed) for p in points] == [
        (50, 50, 0),
        (50, 50, 1),
        (600, 600, 0),
        (600, 600, 1),
    ]
    assert all(0.0 <= p.test_acc <= 1.0 for p in points)
    # the blocks are easy: every image beats a few per class
    assert sum(p.test_acc for p in points[2:]) > sum(p.test_acc for p in points[:2])


def test_sweep_command_writes_table_and_plot(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    assert (
        main(
            [
                "sweep",
                "subset",
                "--nets",
                "mlp-8,lenet5_small",
                "--sizes",
                "60,120",
                "--seeds",
                "2",
                "--epochs",
                "1",
                "--data_dir",
                str(tiny_data),
                "--out",
                str(out),
                "--no_progress",
            ]
        )
        == 0
    )
    md = (out / "sweep.md").read_text()
    assert md.count("| mlp-8 |") == 2 and md.count("| lenet5_small |") == 2 and "±" in md
    runs = json.loads((out / "sweep.json").read_text())["runs"]
    assert len(runs) == 2 * 2 * 2
    assert len((out / "sweep.csv").read_text().splitlines()) == 1 + 8
    with Image.open(out / "sweep.png") as im:
        assert im.size == (900, 500)
    assert "[sweep 8/8]" in capsys.readouterr().out


def test_sweep_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "subset", "--nets", "vgg", "--out", str(tmp_path)]) == 2
    assert "unknown net 'vgg'" in capsys.readouterr().err
    assert (
        main(["sweep", "subset", "--nets", "mlp", "--sizes", "0,10", "--out", str(tmp_path)]) == 2
    )
    assert "--sizes" in capsys.readouterr().err
    missing = tmp_path / "no_data"
    assert (
        main(
            ["sweep", "subset", "--nets", "mlp", "--data_dir", str(missing), "--out", str(tmp_path)]
        )
        == 2
    )
    assert str(missing) in capsys.readouterr().err
