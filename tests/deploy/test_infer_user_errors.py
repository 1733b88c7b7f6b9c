"""``imgcls infer`` on a user's mistake or a hostile environment: an ONNX file whose metadata
entries have the wrong shape, a standard output on a full device, a reader that leaves early.
Each is refused (exit 2, one ``imgcls: error:`` line, no traceback) or ends quietly, the way a
user runs the command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from imgcls.__main__ import EXIT_BROKEN_PIPE, main
from imgcls.deploy.classifier import OnnxClassifier, read_metadata
from imgcls.errors import ModelLoadError
from tests.helpers import ROOT, write_idx_images

pytestmark = pytest.mark.real_data


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("imgcls: error:")]


def _with_entry(src: Path, dst: Path, key: str, value: Any) -> Path:
    """A copy of the exported model ``src`` whose metadata entry ``key`` is ``value``."""
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    props[key] = json.dumps(value)
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="module")
def model_path(exported_lenet: Path) -> Path:
    return exported_lenet / "model.onnx"


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    path = tmp_path / "digits.idx3"
    write_idx_images(path, np.random.default_rng(0).integers(0, 255, (3, 28, 28), dtype="uint8"))
    return path


def _good_input(model_path: Path) -> dict[str, Any]:
    return dict(read_metadata(model_path)["input"])


BAD_ENTRIES = [
    ("input", "pixels", 'entry input is "pixels"'),
    ("input", ["pixels"], "entry input is"),
    ("input.name", None, "entry input.name"),
    ("input.name", 7, "entry input.name"),
    ("input.shape", "batch,1,28,28", "entry input.shape"),
    ("input.shape", ["batch", 1, 28], "entry input.shape"),
    ("input.shape", ["batch", 1, 0, 28], "entry input.shape"),
    ("input.shape", ["batch", 1, "28", 28], "entry input.shape"),
    ("input.shape", ["batch", True, 28, 28], "entry input.shape"),
    ("class_names", "0123456789", "entry class_names"),
    ("class_names", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "entry class_names"),
    ("class_names", [], "entry class_names"),
    ("num_classes", "10", "entry num_classes"),
    ("dataset", ["mnist"], "entry dataset"),
    ("framing", "squash", "entry framing"),
    ("normalization", ["in_graph"], "normalization ['in_graph'] is not supported"),
]


@pytest.mark.parametrize(
    ("entry", "value", "message"), BAD_ENTRIES, ids=[f"{e}={v!r}" for e, v, _ in BAD_ENTRIES]
)
def test_infer_refuses_a_metadata_entry_of_the_wrong_shape(
    model_path: Path,
    image: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    entry: str,
    value: Any,
    message: str,
) -> None:
    if entry.startswith("input."):
        key, value = "input", {**_good_input(model_path), entry.split(".")[1]: value}
    else:
        key = entry
    bad = _with_entry(model_path, tmp_path / "bad model.onnx", key, value)
    capsys.readouterr()
    assert main(["infer", "--model", str(bad), "--device", "cpu", str(image)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no row from a model that could not be read
    lines = _error_lines(err)
    assert len(lines) == 1, err
    assert str(bad) in lines[0] and message in lines[0], lines[0]
    assert "Traceback" not in err
    # The library refuses it too, with the same error class the service turns into exit 2.
    with pytest.raises(ModelLoadError, match=re.escape(message)):
        OnnxClassifier(bad, device="cpu")


def test_the_exported_metadata_passes_the_checks(model_path: Path, tmp_path: Path) -> None:
    """The checks accept what export writes (a copy, rewritten entry by entry, still loads)."""
    copy = tmp_path / "model.onnx"
    shutil.copy(model_path, copy)
    meta = read_metadata(copy)
    clf = OnnxClassifier(copy, device="cpu")
    assert clf.input_shape == tuple(meta["input"]["shape"][1:]) == (1, 28, 28)
    assert clf.class_names == [str(k) for k in range(10)]


def _run(args: list[str], stdout: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgcls", *args],
        cwd=ROOT,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("n_images", [1, 20000], ids=["small", "over-the-buffer"])
def test_infer_to_a_full_device_is_one_line_and_exit_2(
    model_path: Path, tmp_path: Path, n_images: int
) -> None:
    """``imgcls infer ... > /dev/full``: writing (a large output) or flushing (a small one)
    fails with ENOSPC; that is one line naming the way out, not a traceback."""
    idx = tmp_path / "images.idx3"
    write_idx_images(idx, np.zeros((n_images, 28, 28), dtype="uint8"))
    with open("/dev/full", "w") as full:
        proc = _run(["infer", "--model", str(model_path), "--device", "cpu", str(idx)], full)
    assert proc.returncode == 2, proc.stderr
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "No space left on device" in lines[0] and "--out FILE" in lines[0]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def test_infer_into_a_closed_pipe_exits_quietly(model_path: Path, tmp_path: Path) -> None:
    """``imgcls infer ... | head -1`` where the reader has gone before the rows are written:
    no traceback and no error line, status 141 (128 + SIGPIPE) as a Unix tool's."""
    idx = tmp_path / "images.idx3"
    write_idx_images(idx, np.zeros((5000, 28, 28), dtype="uint8"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imgcls",
            "infer",
            "--model",
            str(model_path),
            "--device",
            "cpu",
            str(idx),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader leaves before anything is written
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_BROKEN_PIPE == 141, err
    assert _error_lines(err) == []
    assert "Traceback" not in err and "Exception ignored" not in err
    assert "BrokenPipe" not in err


EVALUATE_REFUSED = [
    (["--as_photos", "0"], "--as_photos must be >= 1"),
    (["--as_photos", "-3"], "--as_photos must be >= 1"),
    (["--as_photos", "5", "--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--seed", "3"], "--seed seeds the photo rendering of --as_photos N"),
]


@pytest.mark.parametrize(
    ("options", "message"), EVALUATE_REFUSED, ids=[" ".join(o) for o, _ in EVALUATE_REFUSED]
)
def test_evaluate_onnx_refuses_options_it_would_not_honour(
    model_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    """``--as_photos 0`` used to print the plain test set's accuracy with exit 0 (a wrong answer
    to the question asked); ``--seed -1`` was numpy's traceback. Both are refused, with nothing
    on stdout."""
    capsys.readouterr()
    assert main(["evaluate-onnx", "--model", str(model_path), "--device", "cpu", *options]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no accuracy printed
    lines = _error_lines(err)
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_evaluate_onnx_as_photos_with_a_seed_still_runs(
    model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    args = ["evaluate-onnx", "--model", str(model_path), "--device", "cpu", "--as_photos", "4"]
    assert main([*args, "--seed", "2"]) == 0
    seeded = json.loads(capsys.readouterr().out)
    assert seeded["n_images"] == 4 and seeded["as_photos"] == 4 and seeded["seed"] == 2
    assert main(args) == 0
    default = json.loads(capsys.readouterr().out)
    assert default["n_images"] == 4 and default["seed"] == 0


def _tiff_with_a_tag_past_its_end(tag: int = 315) -> bytes:
    """A 28x28 TIFF whose Artist tag points 10 bytes before the end of the file for 50 bytes:
    Pillow reads the image and warns "Truncated File Read", a message that names no file."""
    import io
    import struct

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(buf, "TIFF", tiffinfo={tag: "d" * 50})
    data = bytearray(buf.getvalue())
    (ifd,) = struct.unpack_from("<L", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    for i in range(entries):
        at = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, at)[0] == tag:
            struct.pack_into("<L", data, at + 8, len(data) - 10)
    return bytes(data)


def test_pillows_warnings_name_the_file_once_each(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("a.tif", "c.tif"):
        (folder / name).write_bytes(_tiff_with_a_tag_past_its_end())
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / "b.png")
    assert main(["infer", "--model", str(model_path), str(folder)]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 4  # the header and one row per image
    warned = [line for line in err.splitlines() if "warning" in line]
    assert warned == [
        f"[imgcls infer] warning: {folder / 'a.tif'}: Truncated File Read",
        f"[imgcls infer] warning: {folder / 'c.tif'}: Truncated File Read",
    ]
