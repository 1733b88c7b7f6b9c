"""Tests of the serving runtime (``imgcls.deploy``: idx, images, framing, classifier) and
``imgcls infer``.

The runtime must work without torch: checked by importing it in a fresh interpreter, and by
running ``imgcls infer`` in a subprocess where ``import torch`` fails. Predictions are checked
against the PyTorch model they were exported from; every bad input must raise an error that
says what was expected. ``gpu`` tests need a CUDA device and fail unless the session really
runs on the CUDA provider.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

import imgcls.deploy.classifier as classifier
from imgcls.__main__ import main
from imgcls.data import get_datamodule
from imgcls.data.transforms import normalize
from imgcls.deploy.classifier import OnnxClassifier, cuda_device_count, read_metadata
from imgcls.deploy.framing import frame_like_fashion, frame_like_mnist, framing_for
from imgcls.deploy.idx import read_idx
from imgcls.deploy.images import decode_image, load_images
from imgcls.deploy.photos import render_photos
from imgcls.errors import ConfigError, ImageFileError, InputError, ModelLoadError, ProviderError
from imgcls.training.checkpoint_io import load_classifier
from tests.helpers import ROOT, write_idx_images, write_idx_labels

real_data = pytest.mark.real_data
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers() and cuda_device_count() > 0


@pytest.fixture(scope="module")
def test_set(real_data_root: Path) -> tuple[np.ndarray, np.ndarray]:
    dm = get_datamodule("mnist", data_dir=str(real_data_root))
    dm.setup("test")
    assert dm.test_set is not None
    return dm.test_set.images.numpy(), dm.test_set.labels.numpy()  # (N, 1, 28, 28) uint8, (N,)


@pytest.fixture(scope="module")
def model_path(exported_lenet: Path) -> Path:
    return exported_lenet / "model.onnx"


@pytest.fixture(scope="module")
def torch_pred(trained_ckpt: Path, test_set: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The PyTorch model's predicted labels on the first 500 test images."""
    model = load_classifier(trained_ckpt)
    with torch.inference_mode():
        x = normalize(torch.from_numpy(test_set[0][:500]), model.hparams.mean, model.hparams.std)
        return model(x).argmax(1).numpy()


@pytest.fixture(scope="module")
def clf(model_path: Path) -> OnnxClassifier:
    return OnnxClassifier(model_path, device="cpu")


# ----------------------------------------------------------------------------- no torch
def test_runtime_imports_without_torch() -> None:
    code = (
        "import sys, imgcls.deploy.classifier, imgcls.deploy.images, imgcls.commands.infer; "
        "bad = [m for m in ('torch', 'lightning', 'torchvision') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------------- predictions
@real_data
def test_predictions_match_torch(
    clf: OnnxClassifier, test_set: tuple[np.ndarray, np.ndarray], torch_pred: np.ndarray
) -> None:
    images = test_set[0][:500]
    labels, probs = clf.predict(images)
    assert labels.dtype == np.int64 and probs.shape == (500, 10) and probs.dtype == np.float32
    np.testing.assert_array_equal(labels, torch_pred)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # (N, H, W), float32 in [0, 1] and a {name: array} feed are the same input.
    np.testing.assert_array_equal(clf.predict(images[:, 0])[0], labels)
    np.testing.assert_allclose(clf.predict(images.astype(np.float32) / 255)[1], probs, atol=1e-6)
    np.testing.assert_allclose(clf.predict({"pixels": images})[1], probs, atol=1e-6)
    assert clf.class_names == [str(i) for i in range(10)] and clf.input_shape == (1, 28, 28)


@real_data
def test_batches_larger_than_batch_size_are_split(
    model_path: Path, clf: OnnxClassifier, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    small = OnnxClassifier(model_path, device="cpu", batch_size=7, intra_op_threads=1)
    images = test_set[0][:50]
    np.testing.assert_allclose(small.logits(images), clf.logits(images), atol=1e-5)


# ----------------------------------------------------------------------------- bad inputs
BAD_INPUTS = {
    "rank 2": (
        lambda x: x[0, 0],
        r"got rank 2 shape \(28, 28\); for a single image add a batch axis",
    ),
    "rank 5": (
        lambda x: x[None],
        r"expected images of shape \(N, 1, 28, 28\) or \(N, 28, 28\), got rank 5",
    ),
    "wrong size": (
        lambda x: np.zeros((2, 1, 32, 32), np.uint8),
        r"expected images of shape \(N, 1, 28, 28\), got \(2, 1, 32, 32\)",
    ),
    "colour": (
        lambda x: np.zeros((2, 3, 28, 28), np.uint8),
        r"got \(2, 3, 28, 28\); resize them to 28x28 greyscale",
    ),
    "empty": (lambda x: x[:0], "empty batch"),
    "float64": (lambda x: x.astype(np.float64) / 255, "got float64; convert with images.astype"),
    "int64": (
        lambda x: x.astype(np.int64),
        "uint8 pixels .* or float32 pixels in \\[0, 1\\], got int64",
    ),
    "nan": (
        lambda x: np.where(np.arange(x.size).reshape(x.shape) == 800, np.nan, x / 255).astype(
            np.float32
        ),
        r"1 NaN or inf pixel\(s\) in the batch \(first in image 1\)",
    ),
    "inf": (lambda x: np.full(x.shape, np.inf, np.float32), "NaN or inf pixel"),
    "0..255 floats": (
        lambda x: x.astype(np.float32),
        r"float32 pixels must lie in \[0, 1\], got \[0, 255\]",
    ),
    "normalised": (
        lambda x: ((x / 255 - 0.1307) / 0.3081).astype(np.float32),
        "not normalised ones",
    ),
    "wrong name": (
        lambda x: {"input": x},
        r"input names \['input'\] do not match the model's single input 'pixels'",
    ),
    "extra name": (
        lambda x: {"pixels": x, "mask": x},
        "do not match the model's single input 'pixels'",
    ),
}


@real_data
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_an_error_saying_what_was_expected(
    case: str, clf: OnnxClassifier, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    make, message = BAD_INPUTS[case]
    with pytest.raises(InputError, match=message):
        clf.predict(make(test_set[0][:3]))


# ----------------------------------------------------------------------------- model files
def test_missing_or_damaged_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="nothere.onnx: no such ONNX file"):
        OnnxClassifier(tmp_path / "nothere.onnx", device="cpu")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelLoadError, match="junk.onnx: onnxruntime cannot load it"):
        OnnxClassifier(junk, device="cpu")


@real_data
def test_onnx_without_imgcls_metadata_is_refused(model_path: Path, tmp_path: Path) -> None:
    model = onnx.load(model_path)
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, bare)
    with pytest.raises(ModelLoadError, match="bare.onnx: not an imgcls export"):
        OnnxClassifier(bare, device="cpu")
    onnx.helper.set_model_props(
        model, {k: json.dumps(v) for k, v in read_metadata(model_path).items()}
    )
    model.metadata_props[
        [p.key for p in model.metadata_props].index("normalization")
    ].value = '"caller"'
    onnx.save(model, bare)
    with pytest.raises(ModelLoadError, match="normalization 'caller' is not supported"):
        OnnxClassifier(bare, device="cpu")


# ----------------------------------------------------------------------------- providers
@real_data
def test_cpu_device_uses_cpu_provider_only(clf: OnnxClassifier) -> None:
    assert clf.providers_in_use == ["CPUExecutionProvider"] and clf.device == "cpu"


@real_data
def test_unknown_device(model_path: Path) -> None:
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, tensorrt"):
        OnnxClassifier(model_path, device="gpu")


@real_data
@pytest.mark.skipif(HAS_CUDA, reason="needs a machine without a usable CUDA device")
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_gpu_device_without_gpu_is_an_error_not_a_cpu_fallback(
    device: str, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    if hasattr(ort, "preload_dlls"):  # CUDA 13 / cuDNN 9 must be loaded before the session is made
        monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: calls.append(1))
    with pytest.raises(ProviderError, match=f"{classifier._EP[device]} could not"):
        OnnxClassifier(model_path, device=device)
    assert calls == ([1] if hasattr(ort, "preload_dlls") else [])


@real_data
def test_provider_missing_from_the_build(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(
        ProviderError, match="has no CUDAExecutionProvider .* install onnxruntime-gpu"
    ):
        OnnxClassifier(model_path, device="cuda")
    assert OnnxClassifier(model_path, device="auto").providers_in_use == ["CPUExecutionProvider"]


@real_data
def test_tensorrt_profile_covers_the_batch_axis(model_path: Path) -> None:
    providers = classifier._provider_list("tensorrt", None, "pixels", (1, 28, 28))
    assert [p[0] if isinstance(p, tuple) else p for p in providers] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    trt = providers[0][1]
    assert trt["trt_profile_min_shapes"] == "pixels:1x1x28x28"
    assert trt["trt_profile_opt_shapes"] == "pixels:64x1x28x28"
    assert trt["trt_profile_max_shapes"] == "pixels:1024x1x28x28"


@real_data
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and onnxruntime-gpu")
def test_cuda_provider_runs_the_model(
    model_path: Path, clf: OnnxClassifier, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    gpu = OnnxClassifier(model_path, device="cuda")
    assert gpu.providers_in_use[0] == "CUDAExecutionProvider", gpu.providers_in_use
    assert OnnxClassifier(model_path, device="auto").providers_in_use[0] == "CUDAExecutionProvider"
    images = test_set[0][:256]
    np.testing.assert_allclose(gpu.logits(images), clf.logits(images), atol=1e-3)
    np.testing.assert_array_equal(gpu.predict(images)[0], clf.predict(images)[0])


@real_data
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and onnxruntime-gpu")
def test_infer_command_on_cuda(
    model_path: Path, tmp_path: Path, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    Image.fromarray(test_set[0][0, 0]).save(tmp_path / "a.png")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "imgcls",
            "infer",
            "--model",
            str(model_path),
            "--device",
            "cuda",
            str(tmp_path / "a.png"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "provider: CUDAExecutionProvider" in proc.stderr


# ----------------------------------------------------------------------------- image files
def _digit(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)


def test_png_jpeg_colour_and_resize(tmp_path: Path) -> None:
    grey = _digit()
    Image.fromarray(grey).save(tmp_path / "a.png")
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "b.png")  # RGB with equal channels
    Image.fromarray(grey).save(tmp_path / "c.jpg", quality=95)
    Image.fromarray(grey).resize((56, 56), Image.Resampling.NEAREST).save(tmp_path / "d.png")
    names, images = load_images([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.jpg"])
    assert names == [str(tmp_path / n) for n in ("a.png", "b.png", "c.jpg")]
    assert images.shape == (3, 1, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[0, 0], grey)
    np.testing.assert_array_equal(images[1, 0], grey)  # colour -> greyscale
    assert np.abs(images[2, 0].astype(int) - grey).mean() < 20  # lossy, but the same picture
    with pytest.warns(UserWarning, match=r"d.png: resized from 56x56 to 28x28"):
        _, big = load_images([tmp_path / "d.png"])
    assert big.shape == (1, 1, 28, 28) and np.abs(big[0, 0].astype(int) - grey).mean() < 40


def test_folder_is_read_in_name_order(tmp_path: Path) -> None:
    for i in (2, 0, 1):
        Image.fromarray(_digit(i)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("skipped: not an image suffix")
    (tmp_path / ".hidden.png").write_text("skipped: hidden")
    names, images = load_images([tmp_path])
    assert [Path(n).name for n in names] == ["0.png", "1.png", "2.png"]
    np.testing.assert_array_equal(images[2, 0], _digit(2))


def test_idx_files(tmp_path: Path) -> None:
    imgs = np.stack([_digit(i) for i in range(4)])
    write_idx_images(tmp_path / "imgs-idx3-ubyte", imgs)
    names, images = load_images([tmp_path / "imgs-idx3-ubyte"])
    assert names == [f"{tmp_path / 'imgs-idx3-ubyte'}[{i}]" for i in range(4)]
    np.testing.assert_array_equal(images[:, 0], imgs)
    (tmp_path / "imgs.gz").write_bytes(gzip.compress((tmp_path / "imgs-idx3-ubyte").read_bytes()))
    np.testing.assert_array_equal(read_idx(tmp_path / "imgs.gz"), imgs)
    write_idx_images(tmp_path / "small", np.zeros((2, 14, 14), np.uint8))
    with pytest.warns(UserWarning, match="resized from 14x14 to 28x28"):
        assert load_images([tmp_path / "small"])[1].shape == (2, 1, 28, 28)


def test_bad_files_are_errors_naming_them(tmp_path: Path) -> None:
    text = tmp_path / "fake.png"
    text.write_text("not a picture")
    with pytest.raises(ImageFileError, match=f"{text}: not a readable image file"):
        load_images([text])
    other = tmp_path / "data.bin"
    other.write_bytes(b"\x01\x02\x03\x04\x05")
    with pytest.raises(ImageFileError, match=f"{other}: not a readable image file"):
        load_images([other])
    with pytest.raises(ImageFileError, match=f"{tmp_path / 'nothere.png'}: no such file or folder"):
        load_images([tmp_path / "nothere.png"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageFileError, match=f"{empty}: folder holds no image files"):
        load_images([empty])
    write_idx_labels(tmp_path / "labels-idx1-ubyte", np.arange(5))
    with pytest.raises(ImageFileError, match="an IDX file of labels, not of uint8 images"):
        load_images([tmp_path / "labels-idx1-ubyte"])
    write_idx_images(tmp_path / "cut-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    data = (tmp_path / "cut-idx3-ubyte").read_bytes()
    (tmp_path / "cut-idx3-ubyte").write_bytes(data[:-100])
    with pytest.raises(
        ImageFileError, match="cut-idx3-ubyte: IDX header says 3x28x28 .* truncated"
    ):
        load_images([tmp_path / "cut-idx3-ubyte"])
    with pytest.raises(ImageFileError, match="not an IDX file"):
        read_idx(text)


# ----------------------------------------------------------------------------- imgcls infer
def _infer_without_torch(*args: str) -> subprocess.CompletedProcess[str]:
    """``imgcls infer`` in a fresh interpreter.

    There ``import torch`` and ``import lightning`` fail.
    """
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['lightning'] = None; "
        "from imgcls.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "infer", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


@real_data
def test_infer_on_png_files_with_known_labels(
    model_path: Path,
    tmp_path: Path,
    torch_pred: np.ndarray,
    test_set: tuple[np.ndarray, np.ndarray],
) -> None:
    images, labels = test_set
    chosen = np.flatnonzero(torch_pred == labels[:500])[:20]  # test images the model gets right
    assert len(chosen) == 20
    for i in chosen:
        Image.fromarray(images[i, 0]).save(tmp_path / f"{i:04d}.png")
    proc = _infer_without_torch("--model", str(model_path), "--device", "cpu", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "provider: CPUExecutionProvider" in proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [Path(r["input"]).name for r in rows] == [f"{i:04d}.png" for i in chosen]
    assert [int(r["label"]) for r in rows] == labels[chosen].tolist()
    assert [r["class_name"] for r in rows] == [str(k) for k in labels[chosen]]
    assert all(0.1 < float(r["probability"]) <= 1.0 for r in rows)


@real_data
def test_infer_json_to_file(
    model_path: Path,
    tmp_path: Path,
    test_set: tuple[np.ndarray, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_idx_images(tmp_path / "few-idx3-ubyte", test_set[0][:5, 0])
    out = tmp_path / "pred.json"
    rc = main(
        [
            "infer",
            "--model",
            str(model_path),
            "--device",
            "cpu",
            "--format",
            "json",
            "--out",
            str(out),
            str(tmp_path / "few-idx3-ubyte"),
        ]
    )
    assert rc == 0 and capsys.readouterr().out == ""
    rows = json.loads(out.read_text())
    expected = OnnxClassifier(model_path, device="cpu").predict(test_set[0][:5])
    assert [r["label"] for r in rows] == expected[0].tolist()
    assert [r["probability"] for r in rows] == pytest.approx(expected[1].max(1).tolist(), abs=1e-6)
    assert set(rows[0]) == {"input", "label", "class_name", "probability"}


@real_data
def test_infer_errors(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("hello")
    assert main(["infer", "--model", str(model_path), "--device", "cpu", str(bad)]) == 2
    assert f"imgcls: error: {bad}: not a readable image file" in capsys.readouterr().err
    assert main(["infer", "--model", str(tmp_path / "none.onnx"), str(bad)]) == 2
    assert "none.onnx: no such ONNX file" in capsys.readouterr().err
    if not HAS_CUDA:
        assert main(["infer", "--model", str(model_path), "--device", "cuda", str(bad)]) == 2
        assert "imgcls: error: CUDAExecutionProvider" in capsys.readouterr().err


# ----------------------------------------------------------------------------- framing
def test_framing_puts_the_ink_where_mnist_has_it() -> None:
    """A light square drawn anywhere: framed to fit 20x20, its centre of mass at the centre."""
    canvas = np.full((300, 200), 230, np.uint8)  # light paper
    canvas[40:160, 120:180] = 20  # dark ink: 120 tall, 60 wide, off centre
    out = frame_like_mnist(canvas)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
    assert rows[-1] - rows[0] + 1 in (20, 21) and cols[-1] - cols[0] + 1 in (10, 11, 12)
    mass = out.astype(float)
    cy = (mass.sum(1) * np.arange(28)).sum() / mass.sum()
    cx = (mass.sum(0) * np.arange(28)).sum() / mass.sum()
    assert abs(cy - 13.5) <= 0.75 and abs(cx - 13.5) <= 0.75
    assert out.max() == 255 and out[0].max() == 0  # inverted: white ink on black
    assert not frame_like_mnist(np.full((50, 50), 200, np.uint8)).any()  # blank paper


def test_preprocess_option_is_checked() -> None:
    with pytest.raises(ConfigError, match="preprocess must be one of"):
        framing_for("squash", "mnist")
    assert framing_for("auto", "fashion_mnist") == "fashion_mnist"
    assert framing_for("auto", "mnist") == "mnist"
    # a folder model's metadata records its training framing, and auto follows it
    assert framing_for("auto", "folder") == "mnist"
    assert framing_for("auto", "folder", "fashion_mnist") == "fashion_mnist"
    assert framing_for("auto", "folder", "none") == "none"
    assert framing_for("mnist", "folder", "fashion_mnist") == "mnist"  # asked for: as asked


@real_data
def test_model_sized_images_are_unchanged_and_photos_are_framed(
    clf: OnnxClassifier, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    """28x28 test images as PNG come out bit-identical with preprocess auto (the accuracy
    cannot change); the same digits photographed (``imgcls.deploy.photos``: grey and colour JPEGs,
    transparent PNGs) are recognised only thanks to the framing."""
    images, labels = test_set
    pngs = []
    for im in images[:1000, 0]:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "PNG")
        pngs.append(buf.getvalue())
    auto = np.stack([decode_image(b, preprocess="auto", dataset="mnist") for b in pngs])
    np.testing.assert_array_equal(auto, images[:1000])

    photos = [b for _, b in render_photos(images[:300, 0], seed=0)]
    framed = np.stack([decode_image(p, preprocess="auto", dataset="mnist") for p in photos])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "resized": what none does
        squashed = np.stack([decode_image(p, preprocess="none") for p in photos])
    y = labels[:300]
    acc_framed = float((clf.predict(framed)[0] == y).mean())
    acc_squashed = float((clf.predict(squashed)[0] == y).mean())
    base = float((clf.predict(images[:300])[0] == y).mean())
    print(f"framed {acc_framed:.3f} squashed {acc_squashed:.3f} test images {base:.3f}")
    assert acc_framed >= base - 0.05, (acc_framed, base)  # the short-trained model: ~0.95
    assert acc_squashed < 0.4, acc_squashed  # what the runtime did before: chance-like


@real_data
def test_infer_frames_a_photo(
    model_path: Path, tmp_path: Path, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = test_set
    for i, (_, photo) in enumerate(render_photos(images[:3, 0], seed=1, kinds=("grey_jpeg",))):
        (tmp_path / f"{i}.jpg").write_bytes(photo)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "imgcls",
            "infer",
            "--model",
            str(model_path),
            "--device",
            "cpu",
            "--format",
            "json",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["label"] for r in rows] == labels[:3].tolist()
    assert "resized" not in proc.stderr  # framed, not squashed


@real_data
def test_evaluate_onnx_as_photos(model_path: Path, tmp_path: Path) -> None:
    """The deployment's figure on photos: framed by the same decoder as infer and serve."""
    figures = {}
    for preprocess in ("auto", "none"):
        proc = subprocess.run(
            [
                sys.executable, "-m", "imgcls", "evaluate-onnx", "--model", str(model_path),
                "--as_photos", "90", "--preprocess", preprocess,
            ],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        figures[preprocess] = json.loads(proc.stdout)
    auto, none = figures["auto"], figures["none"]
    assert auto["n_images"] == 90 and auto["as_photos"] == 90
    assert set(auto["accuracy_by_kind"]) == {"grey_jpeg", "colour_jpeg", "transparent_png"}
    assert auto["accuracy"] >= 0.85 and none["accuracy"] < 0.5, (auto, none)


def test_fashion_framing_trims_scales_centres_and_negates() -> None:
    """A product photographed on white: the margin of the corner colour trimmed, the longest
    edge scaled to 28, centred, negated to light-on-black (Xiao et al.'s procedure)."""
    photo = np.full((400, 300), 245, np.uint8)  # white backdrop
    photo[100:300, 120:220] = 60  # a dark item, 200 tall and 100 wide, off centre
    out = frame_like_fashion(photo)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    rows, cols = np.flatnonzero(out.max(1) > 64), np.flatnonzero(out.max(0) > 64)
    assert rows[0] == 0 and rows[-1] == 27  # the longest edge fills the frame
    assert 12 <= cols[-1] - cols[0] + 1 <= 16  # aspect kept: about 14 wide
    assert abs((cols[0] + cols[-1]) / 2 - 13.5) <= 1.0  # centred
    assert out[14, 14] > 150 and out[14, 0] == 0  # the item light, the backdrop black
    assert framing_for("auto", "fashion_mnist") == "fashion_mnist"
    decoded = decode_image(_png_bytes(photo), preprocess="auto", dataset="fashion_mnist")
    np.testing.assert_array_equal(decoded[0], out)


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()
