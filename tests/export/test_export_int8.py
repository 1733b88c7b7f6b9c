"""Tests of the int8 export (``imgcls.export.int8``, ``imgcls export --int8``).

One export of the session's trained LeNet-5 with ``int8=True`` (parity on 2,000 test images)
is read by most tests; a spy on ``imgcls.export.int8.calibration_set`` keeps the images the
calibration really used, so a leak of test images into calibration is caught, not just a
wrong label in the metadata.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import imgcls.export.gates as gates
import imgcls.export.int8 as quantize_mod
from imgcls.data import get_datamodule
from imgcls.deploy.classifier import OnnxClassifier, read_metadata
from imgcls.errors import GateError
from imgcls.export import export_checkpoint
from imgcls.export.int8 import INT8_FILE
from imgcls.training.checkpoint_io import load_checkpoint
from tests.helpers import run_imgcls

pytestmark = pytest.mark.real_data
SUBSET = 2000  # parity (= int8 gate) images
N_CALIB = 500


def quiet(_: str) -> None:
    pass


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def image_hashes(images: np.ndarray | torch.Tensor) -> set[str]:
    arr = images.numpy() if isinstance(images, torch.Tensor) else images
    return {hashlib.sha256(np.ascontiguousarray(im).tobytes()).hexdigest() for im in arr}


@pytest.fixture(scope="module")
def int8_export(
    trained_ckpt: Path, real_data_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[np.ndarray]]:
    """(export folder, [calibration images as export_checkpoint received them])."""
    out = tmp_path_factory.mktemp("int8") / "lenet5"
    seen: list[np.ndarray] = []
    real = quantize_mod.calibration_set

    def spy(*args: Any, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        images, info = real(*args, **kwargs)
        seen.append(images.copy())
        return images, info

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quantize_mod, "calibration_set", spy)
        export_checkpoint(
            trained_ckpt,
            out,
            int8=True,
            calibration_images=N_CALIB,
            features=False,
            data_dir=real_data_root,
            parity_subset=SUBSET,
            log=quiet,
        )
    return out, seen


@pytest.fixture(scope="module")
def mnist(real_data_root: Path) -> Any:
    dm = get_datamodule("mnist", data_dir=str(real_data_root), val_size=0)
    dm.setup("test")
    assert dm.test_set is not None
    return dm


def test_int8_file_is_a_qdq_model_with_per_channel_weights(
    int8_export: tuple[Path, list[np.ndarray]],
) -> None:
    out, _ = int8_export
    path = out / INT8_FILE
    assert path.is_file() and (out / "model.onnx").is_file()
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert [i.name for i in proto.graph.input] == ["pixels"]
    assert [o.name for o in proto.graph.output] == ["logits", "probabilities"]
    for value in (*proto.graph.input, *proto.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert "Softmax" in ops  # probabilities computed in float

    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:
        dq = producer[conv.input[1]]  # the weight comes out of a DequantizeLinear
        assert dq.op_type == "DequantizeLinear"
        weight, scale = inits[dq.input[0]], inits[dq.input[1]]
        assert weight.dtype == np.int8
        out_channels = weight.shape[0]
        assert scale.shape == (out_channels,) and out_channels > 1  # one scale per filter
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        assert axis == 0


def test_int8_metadata(int8_export: tuple[Path, list[np.ndarray]], trained_ckpt: Path) -> None:
    out, _ = int8_export
    meta, fp32 = read_metadata(out / INT8_FILE), read_metadata(out / "model.onnx")
    parity = json.loads((out / "parity.json").read_text())
    assert meta["precision"] == "int8" and fp32["precision"] == "fp32"
    q = meta["quantization"]
    assert q["format"] == "QDQ" and q["per_channel"] is True
    assert q["calibration"]["split"] == "validation"
    assert q["calibration"]["images"] == N_CALIB and q["calibration"]["method"] == "MinMax"
    assert meta["test_accuracy"] == parity["int8"]["onnx_accuracy"]
    same = {k for k in fp32 if k not in ("precision", "test_accuracy", "created_at")}
    assert {k: meta[k] for k in same} == {k: fp32[k] for k in same}
    assert meta["checkpoint"]["sha256"] == fp32["checkpoint"]["sha256"]
    assert str(trained_ckpt) == meta["checkpoint"]["path"]


def test_int8_gate_figures(int8_export: tuple[Path, list[np.ndarray]]) -> None:
    out, _ = int8_export
    parity = json.loads((out / "parity.json").read_text())
    int8 = parity["int8"]
    assert int8["n_images"] == parity["n_images"] == SUBSET
    assert int8["top1_agreement_with_fp32"] >= 0.995
    gap_images = round(abs(int8["onnx_accuracy"] - parity["fp32"]["onnx_accuracy"]) * SUBSET)
    assert gap_images <= 0.002 * SUBSET
    assert int8["fp32_onnx_accuracy"] == parity["fp32"]["onnx_accuracy"]
    assert int8["thresholds"] == {
        "min_top1_agreement_with_fp32": 0.995,
        "max_abs_accuracy_diff_vs_fp32": 0.002,
    }
    assert int8["quantization"]["calibration"]["split"] == "validation"
    assert parity["passed"] is True and INT8_FILE in parity["model_sha256"]
    digest = hashlib.sha256((out / INT8_FILE).read_bytes()).hexdigest()
    assert parity["model_sha256"][INT8_FILE] == digest


def test_calibration_used_validation_images_only(
    int8_export: tuple[Path, list[np.ndarray]],
    trained_ckpt: Path,
    real_data_root: Path,
    mnist: Any,
) -> None:
    _, seen = int8_export
    assert len(seen) == 1
    calib = seen[0]
    assert calib.shape == (N_CALIB, 1, 28, 28) and calib.dtype == np.uint8
    # independently: the checkpoint's training run's validation split
    dmh = load_checkpoint(trained_ckpt)["datamodule_hyper_parameters"]
    dm = get_datamodule(
        "mnist", data_dir=str(real_data_root), val_size=dmh["val_size"], seed=dmh["seed"]
    )
    dm.setup("fit")
    assert dm.val_set is not None and dm.train_set is not None
    val = image_hashes(dm.val_set.images)
    assert image_hashes(calib) <= val
    assert not image_hashes(calib) & image_hashes(mnist.test_set.images)  # no test image
    # nor a training image the net learnt from (train and val are disjoint by index)
    assert not image_hashes(calib) & (image_hashes(dm.train_set.images) - val)


def test_calibration_without_validation_split_uses_seeded_training_slice(
    trained_ckpt: Path, real_data_root: Path, mnist: Any
) -> None:
    ckpt = load_checkpoint(trained_ckpt)
    ckpt["datamodule_hyper_parameters"] = {**ckpt["datamodule_hyper_parameters"], "val_size": 0}
    images, info = quantize_mod.calibration_set(ckpt, "mnist", 64, str(real_data_root))
    again, _ = quantize_mod.calibration_set(ckpt, "mnist", 64, str(real_data_root))
    assert info["split"] == "train" and info["images"] == 64 and "val_size 0" in info["note"]
    assert np.array_equal(images, again)  # seeded
    assert not image_hashes(images) & image_hashes(mnist.test_set.images)

    del ckpt["datamodule_hyper_parameters"]  # an older checkpoint: the DataModule defaults
    images, info = quantize_mod.calibration_set(ckpt, "mnist", 32, str(real_data_root))
    assert info["split"] == "validation" and info["val_size"] == 5000 and info["seed"] == 42
    assert "defaults" in info["split_from"] and len(images) == 32


def test_int8_predictions_match_fp32(
    int8_export: tuple[Path, list[np.ndarray]], mnist: Any
) -> None:
    out, _ = int8_export
    images = mnist.test_set.images[:SUBSET].numpy()
    fp32 = OnnxClassifier(out / "model.onnx", device="cpu")
    int8 = OnnxClassifier(out / INT8_FILE, device="cpu")
    assert int8.metadata["precision"] == "int8"
    l32, l8 = fp32.logits(images), int8.logits(images)
    assert l8.dtype == np.float32 and l8.shape == l32.shape
    assert (l8.argmax(1) == l32.argmax(1)).mean() >= 0.995
    probs = int8.session.run(None, {"pixels": int8.to_pixels(images[:64])})[1]
    assert probs.dtype == np.float32 and np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_failed_int8_gate_writes_nothing_and_keeps_previous_export(
    trained_ckpt: Path, real_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    export_checkpoint(
        trained_ckpt, out, features=False, data_dir=real_data_root, parity_subset=300, log=quiet
    )
    before = snapshot(out)
    monkeypatch.setattr(gates, "MIN_INT8_AGREEMENT", 1.01)  # impossible
    with pytest.raises(GateError, match="int8 parity gate failed: top-1 agreement with fp32"):
        export_checkpoint(
            trained_ckpt,
            out,
            int8=True,
            calibration_images=100,
            features=False,
            data_dir=real_data_root,
            parity_subset=300,
            log=quiet,
        )
    assert snapshot(out) == before and INT8_FILE not in before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staged folder left behind

    monkeypatch.undo()
    monkeypatch.setattr(gates, "MAX_INT8_ACCURACY_DIFF", -1.0)  # impossible
    with pytest.raises(GateError, match="int8 parity gate failed: test accuracy"):
        export_checkpoint(
            trained_ckpt,
            tmp_path / "new",
            int8=True,
            calibration_images=100,
            features=False,
            data_dir=real_data_root,
            parity_subset=300,
            log=quiet,
        )
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


@pytest.mark.slow
def test_export_command_int8(trained_ckpt: Path, real_data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "export" / "lenet5"
    proc = run_imgcls(
        "export",
        "--ckpt",
        str(trained_ckpt),
        "--out",
        str(out),
        "--int8",
        "--calibration_images",
        "200",
        "--parity_subset",
        "1000",
        "--no-features",
        "--json",
        "--data_dir",
        str(real_data_root),
        cwd=tmp_path,
    )
    summary = json.loads(proc.stdout)
    assert str(out / INT8_FILE) in summary["files"]
    assert summary["int8_top1_agreement"] >= 0.995
    assert abs(summary["int8_onnx_accuracy"] - summary["onnx_accuracy"]) <= 0.002
    assert "calibration on 200 validation images" in proc.stderr
    meta = read_metadata(out / INT8_FILE)
    assert meta["quantization"]["calibration"]["images"] == 200

    bad = run_imgcls(
        "export",
        "--ckpt",
        str(trained_ckpt),
        "--out",
        str(tmp_path / "bad"),
        "--int8",
        "--calibration_images",
        "0",
        "--data_dir",
        str(real_data_root),
        cwd=tmp_path,
        check=False,
    )
    assert bad.returncode != 0 and "--calibration_images must be >= 1" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_accuracy_gap_of_exactly_the_limit_passes() -> None:
    # 0.2 points of 2,000 images is 4 images: 4 passes, 5 does not, in either direction.
    assert gates.accuracy_gap_allowed(1865, 1869, 2000)
    assert gates.accuracy_gap_allowed(1873, 1869, 2000)
    assert not gates.accuracy_gap_allowed(1864, 1869, 2000)
    assert not gates.accuracy_gap_allowed(1874, 1869, 2000)
    assert gates.accuracy_gap_allowed(500, 500, 500)
