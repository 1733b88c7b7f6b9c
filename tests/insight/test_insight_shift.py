"""Tests of the shift evaluation (``imgcls.insight.shift``, ``imgcls evaluate shift``).

The translation is checked pixel by pixel; the bookkeeping of distances and directions on a
predictor whose accuracy per direction is known exactly; the real thing on the session's
short-trained LeNet-5, whose accuracy must fall with distance.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from imgcls.__main__ import main
from imgcls.data.transforms import DIRECTIONS, translate
from imgcls.insight import InsightError
from imgcls.insight.shift import (
    AXIS_DIRECTIONS,
    DIRECTION_NAMES,
    OnnxPredictor,
    ShiftResult,
    check_dataset,
    evaluate_shift,
    load_predictor,
    split_named,
    summary_table,
    write_shift_outputs,
)
from imgcls.runs import net_label
from tests.helpers import run_imgcls
from tests.helpers.training import make_checkpoint


# ----------------------------------------------------------------------------- the shift itself
def test_one_pixel_right_shift_moves_every_pixel_and_fills_zero() -> None:
    x = torch.arange(1, 26, dtype=torch.uint8).reshape(
        1, 1, 5, 5
    )  # every pixel distinct and non-zero
    out = translate(x, 0, 1)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out[0, 0, :, 0], torch.zeros(5, dtype=torch.uint8))  # vacated column is zero
    assert torch.equal(
        out[0, 0, :, 1:], x[0, 0, :, :-1]
    )  # every other pixel moved one to the right
    expected = torch.tensor(
        [
            [0, 1, 2, 3, 4],
            [0, 6, 7, 8, 9],
            [0, 11, 12, 13, 14],
            [0, 16, 17, 18, 19],
            [0, 21, 22, 23, 24],
        ],
        dtype=torch.uint8,
    )
    assert torch.equal(out[0, 0], expected)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_every_direction_matches_the_per_image_path_and_keeps_the_pixel_sum(d: int) -> None:
    x = torch.zeros(len(DIRECTIONS), 1, 9, 9)
    x[:, 0, 4, 4] = 1.0  # one bright pixel in the centre of every image
    dy = torch.tensor([d * uy for uy, _ in DIRECTIONS])
    dx = torch.tensor([d * ux for _, ux in DIRECTIONS])
    batched = translate(x, dy, dx)  # one shift per image
    for j, (uy, ux) in enumerate(DIRECTIONS):
        single = translate(x[j : j + 1], d * uy, d * ux)
        assert torch.equal(batched[j : j + 1], single)
        assert single[0, 0, 4 + d * uy, 4 + d * ux] == 1.0 and single.sum() == 1.0


def test_direction_names_follow_the_compass() -> None:
    assert dict(zip(DIRECTION_NAMES, DIRECTIONS, strict=True)) == {
        "N": (-1, 0),
        "NE": (-1, 1),
        "E": (0, 1),
        "SE": (1, 1),
        "S": (1, 0),
        "SW": (1, -1),
        "W": (0, -1),
        "NW": (-1, -1),
    }


# ----------------------------------------------------------------------------- bookkeeping
class RowPredictor:
    """Predicts the row of the brightest pixel minus 9: right for any horizontal shift only."""

    name, dataset, class_names = "row", "mnist", [str(i) for i in range(10)]

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.reshape(len(images), -1).float()
        return flat.argmax(dim=1) // images.shape[-1] - 9


def _row_images() -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(10).repeat(3)  # 30 images
    images = torch.zeros(len(labels), 1, 28, 28, dtype=torch.uint8)
    images[torch.arange(len(labels)), 0, labels + 9, 14] = 255
    return images, labels


def test_shift_accuracy_per_direction_is_exact() -> None:
    images, labels = _row_images()
    r = evaluate_shift(RowPredictor(), images, labels, max_shift=3, batch_size=7, progress=False)
    assert r.accuracy.shape == (4, 8) and r.n_images == 30
    assert np.all(r.accuracy[0] == 1.0)
    for d in (1, 2, 3):
        for j, name in enumerate(DIRECTION_NAMES):
            assert r.accuracy[d, j] == (1.0 if name in ("E", "W") else 0.0), (d, name)
    assert np.allclose(r.mean, [1.0, 0.25, 0.25, 0.25]) and np.allclose(
        r.worst, [1.0, 0.0, 0.0, 0.0]
    )
    as_dict = r.to_dict()
    assert as_dict["per_direction"][2]["E"] == 1.0 and as_dict["per_direction"][2]["SE"] == 0.0


def test_axis_aligned_moves_are_summarised_apart_from_the_diagonals() -> None:
    # Columns in DIRECTION_NAMES order: N, NE, E, SE, S, SW, W, NW.
    acc = np.array(
        [
            [0.9] * 8,
            [0.8, 0.1, 0.6, 0.2, 0.4, 0.3, 0.2, 0.5],
            [0.5, 0.0, 0.3, 0.0, 0.1, 0.0, 0.3, 0.0],
        ]
    )
    r = ShiftResult("cnn", "mnist", 10, acc)
    assert AXIS_DIRECTIONS == ("N", "E", "S", "W")
    assert np.allclose(r.axis_mean, [0.9, (0.8 + 0.6 + 0.4 + 0.2) / 4, (0.5 + 0.3 + 0.1 + 0.3) / 4])
    assert np.allclose(r.axis_worst, [0.9, 0.2, 0.1])
    assert np.allclose(r.mean, [0.9, 3.1 / 8, 1.2 / 8])  # the 8-direction figures are unchanged
    assert np.allclose(r.worst, [0.9, 0.1, 0.0])
    per = r.per_direction()
    assert list(per) == list(DIRECTION_NAMES)
    assert per["N"] == [0.9, 0.8, 0.5] and per["NE"] == [0.9, 0.1, 0.0]
    assert per["W"] == [0.9, 0.2, 0.3]
    d = json.loads(json.dumps(r.to_dict()))  # JSON-ready: plain floats
    assert d["axis_mean"] == pytest.approx([0.9, 0.5, 0.3])
    assert d["axis_worst"] == pytest.approx([0.9, 0.2, 0.1])
    assert d["per_direction"][1]["SE"] == 0.2  # the existing per-distance layout is kept


def test_summary_table_puts_models_and_lecture_side_by_side() -> None:
    acc = np.array([[0.99] * 8, [0.9] * 7 + [0.5], [0.6] * 8])
    cols, rows = summary_table(
        [ShiftResult("cnn", "mnist", 10, acc)], {"lecture CNN": (99.04, 98.07, 92.06, 75.0)}
    )
    assert cols == [
        "model",
        "0 px",
        "1 px mean / worst",
        "2 px mean / worst",
    ]  # as far as the models were shifted
    assert rows[0] == ["cnn", "99.00", "85.00 / 50.00", "60.00 / 60.00"]
    assert rows[1] == ["lecture CNN", "99.04", "98.07", "92.06"]


def test_outputs_are_written(tmp_path: Path) -> None:
    from PIL import Image

    images, labels = _row_images()
    r = evaluate_shift(RowPredictor(), images, labels, max_shift=2, progress=False)
    paths = write_shift_outputs(
        [r], tmp_path, {"lecture CNN": (99.04, 98.07, 92.06, 75.0)}, "mnist"
    )
    assert set(paths) == {"md", "summary_csv", "csv", "json", "png"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    assert "| row | 100.00 | 25.00 / 0.00 | 25.00 / 0.00 |" in paths["md"].read_text()
    lines = paths["csv"].read_text().splitlines()
    assert len(lines) == 1 + 1 + 8 * 2  # header, 0 px, 8 directions × 2 distances
    assert json.loads(paths["json"].read_text())["models"][0]["mean"] == [1.0, 0.25, 0.25]
    with Image.open(paths["png"]) as im:
        assert im.size == (900, 500)


def test_names_and_specs() -> None:
    assert net_label("mlp", {"hidden": [32]}) == "mlp-32"
    assert net_label("lenet5", {}) == "lenet5"
    assert split_named("cnn=runs/a.ckpt") == ("cnn", "runs/a.ckpt")
    assert split_named("runs/a.ckpt") == (None, "runs/a.ckpt")


# ----------------------------------------------------------------------------- bad input
def test_missing_paths_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.ckpt"
    assert main(["evaluate", "shift", "--ckpt", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err
    onnx = tmp_path / "nope.onnx"
    assert main(["evaluate", "shift", "--onnx", str(onnx), "--out", str(tmp_path / "o")]) == 2
    assert str(onnx) in capsys.readouterr().err
    ckpt = make_checkpoint(tmp_path / "m.ckpt")
    data = tmp_path / "no_data_here"
    assert (
        main(
            [
                "evaluate",
                "shift",
                "--ckpt",
                str(ckpt),
                "--data_dir",
                str(data),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert str(data) in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_dataset_mismatch_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fashion = make_checkpoint(tmp_path / "fashion.ckpt", dataset="fashion_mnist")
    digits = make_checkpoint(tmp_path / "digits.ckpt", dataset="mnist")
    assert (
        main(
            [
                "evaluate",
                "shift",
                "--ckpt",
                str(fashion),
                "--dataset",
                "mnist",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "fashion_mnist" in err and "mnist" in err and str(fashion) in err
    with pytest.raises(InsightError, match="trained on 'fashion_mnist'"):
        check_dataset([load_predictor(str(digits)), load_predictor(str(fashion))], None)
    assert check_dataset([load_predictor(f"a={digits}")], "mnist") == "mnist"


def test_onnx_models_go_through_imgcls_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ONNX path, against the runtime's interface.

    The runtime is a stand-in, so this runs without an export.
    """

    class FakeOnnxClassifier:
        def __init__(self, path: str, device: str = "auto") -> None:
            assert device == "cpu"
            self.metadata = {
                "dataset": "mnist",
                "class_names": [str(i) for i in range(10)],
                "net": "mlp",
                "net_args": {"hidden": [10]},
            }

        def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            assert isinstance(images, np.ndarray) and images.dtype == np.uint8
            labels = RowPredictor().predict(torch.from_numpy(images)).numpy()
            return labels, np.zeros((len(images), 10), np.float32)

    monkeypatch.setitem(
        sys.modules,
        "imgcls.deploy.classifier",
        types.SimpleNamespace(OnnxClassifier=FakeOnnxClassifier),
    )
    model = tmp_path / "model.onnx"
    model.write_bytes(b"stand-in")
    p = load_predictor(str(model), "onnx")
    assert isinstance(p, OnnxPredictor) and p.dataset == "mnist" and p.name == "mlp-10 (onnx)"
    images, labels = _row_images()
    r = evaluate_shift(p, images, labels, max_shift=1, progress=False)
    assert np.allclose(r.mean, [1.0, 0.25])


# ----------------------------------------------------------------------------- a real model
@pytest.mark.real_data
def test_accuracy_falls_with_distance(trained_ckpt: Path, real_data_root: Path) -> None:
    from imgcls.insight.testset import load_test_set

    test = load_test_set("mnist", real_data_root, limit=2000)
    r = evaluate_shift(
        load_predictor(str(trained_ckpt)), test.images, test.labels, max_shift=3, progress=False
    )
    mean, worst = r.mean, r.worst
    print("shift accuracy (mean):", np.round(100 * mean, 2), "worst:", np.round(100 * worst, 2))
    assert mean[0] > 0.75  # the fixture's LeNet-5 reaches roughly 80-90 %
    assert mean[0] > mean[1] > mean[2] > mean[3]
    assert mean[3] < mean[0] - 0.2  # 3 px costs a lot for a net trained without shifts
    assert np.all(worst <= mean + 1e-12)


@pytest.mark.real_data
def test_evaluate_shift_command(trained_ckpt: Path, real_data_root: Path, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "shift"
    proc = run_imgcls(
        "evaluate",
        "shift",
        "--ckpt",
        f"lenet={trained_ckpt}",
        "--ckpt",
        str(trained_ckpt),
        "--max_shift",
        "2",
        "--limit",
        "300",
        "--data_dir",
        str(real_data_root),
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert "| lenet |" in proc.stdout and "| lecture CNN | 99.04 | 98.07 | 92.06 |" in proc.stdout
    report = json.loads((out / "shift.json").read_text())
    names = [m["name"] for m in report["models"]]
    assert names == ["lenet", "lenet5"]
    assert report["models"][0]["mean"] == report["models"][1]["mean"]  # the same checkpoint twice
    assert report["models"][0]["n_images"] == 300
    with Image.open(out / "shift.png") as im:
        assert im.size == (900, 500)


@pytest.mark.real_data
def test_onnx_export_gives_the_same_shift_accuracy(
    trained_ckpt: Path, real_data_root: Path, tmp_path: Path
) -> None:
    """``imgcls.deploy.classifier`` on a real export: the same numbers as the checkpoint."""
    export = pytest.importorskip("imgcls.export")
    pytest.importorskip("imgcls.deploy.classifier")
    from imgcls.insight.testset import load_test_set

    result = export.export_checkpoint(
        trained_ckpt,
        tmp_path / "export",
        data_dir=real_data_root,
        parity_subset=200,
        log=lambda s: None,
    )
    onnx_file = result.out_dir / "model.onnx"
    test = load_test_set("mnist", real_data_root, limit=300)
    torch_r = evaluate_shift(
        load_predictor(str(trained_ckpt)), test.images, test.labels, 2, progress=False
    )
    onnx_p = load_predictor(str(onnx_file), "onnx")
    assert onnx_p.dataset == "mnist" and onnx_p.name == "lenet5 (onnx)"
    onnx_r = evaluate_shift(onnx_p, test.images, test.labels, 2, progress=False)
    assert (
        np.abs(onnx_r.accuracy - torch_r.accuracy).max() <= 2 / 300
    )  # float differences flip at most 2 images
