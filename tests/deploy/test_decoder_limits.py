"""What the decoder costs and what it reads: 16-bit grey scaled, not clipped; every damaged file
an ImageFileError naming it (one bad file in a folder leaves the others classified); memory
and time bounded by what a 28x28 model needs, for image files and IDX files alike.

The memory checks decode in a fresh interpreter (numpy and Pillow, no onnxruntime) under
``RLIMIT_AS`` of 1 GiB and report its peak resident memory.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imgcls.deploy.idx import MAX_IDX_BYTES, read_idx
from imgcls.deploy.images import WORK_SIDE, decode_image, load_images
from imgcls.errors import ImageFileError
from tests.deploy.test_decoder_fuzz import IMAGE_SEEDS
from tests.helpers import ROOT, run_imgcls, write_idx_images

real_data = pytest.mark.real_data

# One byte changed in a valid file: each made Pillow raise something other than OSError
# (an IndexError in the GIF reader, a TypeError from the TIFF reader's tags).
DAMAGED = {
    "gif_index_error": ("gif_anim", 116, 1),
    "tiff_missing_dimensions": ("tiff", 8, 32),
    "tiff_16_bad_tag_type": ("tiff_16", 72, 2),
}


def _damaged(case: str) -> bytes:
    seed, at, value = DAMAGED[case]
    data = bytearray(IMAGE_SEEDS[seed])
    data[at] = value
    return bytes(data)


# ------------------------------------------------------------------------- 16-bit grey
def _mnist_digit(root: Path, index: int) -> np.ndarray:
    return read_idx(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte")[index]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    ink = np.full((120, 120), 235, np.uint8)  # light paper
    ink[20:100, 55:65] = 20  # dark ink
    as8 = decode_image(_png(ink), preprocess="mnist")
    as16 = decode_image(_png(ink.astype(np.uint16) * 257), preprocess="mnist")
    assert Image.open(io.BytesIO(_png(ink.astype(np.uint16) * 257))).mode == "I;16"
    assert as8.max() == 255  # the stroke was found ...
    assert np.abs(as8.astype(int) - as16).max() <= 1  # ... and the same in 16 bits
    # at the model's size no framing: the 16-bit values are divided by 257, not clipped at 255
    small = (np.arange(28 * 28, dtype=np.int64).reshape(28, 28) * 83) % 65536
    got = decode_image(_png(small.astype(np.uint16)), preprocess="none")[0]
    np.testing.assert_array_equal(got, np.rint(small / 257.0).astype(np.uint8))


def test_16_bit_tiff_big_endian_and_float_grey() -> None:
    ink = np.zeros((28, 28), np.uint8)
    ink[4:24, 12:16] = 200
    buf = io.BytesIO()
    big_endian = (ink.astype(np.uint16) * 257).astype(">u2").tobytes()
    Image.frombytes("I;16B", (28, 28), big_endian).save(buf, "TIFF")
    assert Image.open(io.BytesIO(buf.getvalue())).mode == "I;16B"
    np.testing.assert_array_equal(decode_image(buf.getvalue())[0], ink)
    buf = io.BytesIO()
    Image.fromarray(ink.astype(np.float32) / 255.0, mode="F").save(buf, "TIFF")  # [0, 1]
    np.testing.assert_array_equal(decode_image(buf.getvalue())[0], ink)


@real_data
def test_16_bit_scan_of_an_mnist_digit_reads_and_labels_like_its_8_bit_version(
    real_data_root: Path, exported_lenet: Path
) -> None:
    from imgcls.deploy.classifier import OnnxClassifier

    decoded8, decoded16 = [], []
    for index in range(8):
        digit = _mnist_digit(real_data_root, index)
        scan = 255 - np.kron(digit, np.ones((4, 4), np.uint8))  # dark ink on paper, 112x112
        decoded8.append(decode_image(_png(scan), preprocess="mnist"))
        decoded16.append(decode_image(_png(scan.astype(np.uint16) * 257), preprocess="mnist"))
    a8, a16 = np.stack(decoded8), np.stack(decoded16)
    assert np.abs(a8.astype(int) - a16).max() <= 1
    assert (a16.reshape(8, -1).max(axis=1) > 200).all()  # not blank
    clf = OnnxClassifier(exported_lenet / "model.onnx", device="cpu")
    labels8, _ = clf.predict(a8)
    labels16, _ = clf.predict(a16)
    want = read_idx(real_data_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte")[:8]
    np.testing.assert_array_equal(labels16, labels8)
    assert (labels16 == want).sum() >= 7


# ------------------------------------------------------------------------- damaged files
@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_gif_and_tiff_are_an_image_file_error_naming_them(
    case: str, tmp_path: Path
) -> None:
    path = tmp_path / f"{case}.{'gif' if case.startswith('gif') else 'tif'}"
    path.write_bytes(_damaged(case))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's notes on the damage
        with pytest.raises(ImageFileError, match=rf"{path.name}: not a readable image file"):
            decode_image(path)


def _folder_of_ten_and_one_bad(folder: Path) -> None:
    folder.mkdir()
    stroke = np.zeros((28, 28), np.uint8)
    stroke[4:24, 12:16] = 255
    for i in range(10):
        Image.fromarray(np.roll(stroke, i - 5, axis=1)).save(folder / f"good{i}.png")
    (folder / "bad.tif").write_bytes(_damaged("tiff_missing_dimensions"))


def test_one_damaged_file_in_a_folder_leaves_the_other_ten_read(tmp_path: Path) -> None:
    _folder_of_ten_and_one_bad(tmp_path / "in")
    skipped: list[ImageFileError] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names, images = load_images([tmp_path / "in"], skipped=skipped)
    assert [Path(n).name for n in names] == [f"good{i}.png" for i in range(10)]
    assert images.shape == (10, 1, 28, 28)
    assert images[3, 0, 10].argmax() == 12 + 3 - 5  # each file's own pixels
    assert len(skipped) == 1 and "bad.tif" in str(skipped[0])


@real_data
def test_infer_writes_the_ten_rows_and_lists_the_bad_file(
    exported_lenet: Path, tmp_path: Path
) -> None:
    _folder_of_ten_and_one_bad(tmp_path / "in")
    proc = run_imgcls(
        "infer",
        "--model",
        str(exported_lenet / "model.onnx"),
        "--device",
        "cpu",
        str(tmp_path / "in"),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [Path(r["input"]).name for r in rows] == [f"good{i}.png" for i in range(10)]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("imgcls: error:")]
    assert len(errors) == 2 and "bad.tif: not a readable image file" in errors[0]
    assert "1 of 11 files could not be read" in errors[1]
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------- memory and time
_MEASURE = """
import json, resource, sys, time, warnings
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
warnings.simplefilter("ignore")
from imgcls.deploy.images import load_images
from imgcls.errors import ImageFileError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    names, images = load_images([sys.argv[1]], preprocess="mnist")
    result = {"shape": list(images.shape), "max": int(images.max())}
except ImageFileError as e:
    result = {"error": str(e)}
result["seconds"] = time.perf_counter() - start
result["peak_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(result))
"""


def _decode_in_a_fresh_process(path: Path) -> dict[str, object]:
    """load_images(path) under a 1 GiB address space: its result and its peak memory (MB)."""
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


def _stroke(im: Image.Image, ink: object) -> Image.Image:
    w, h = im.size
    ImageDraw.Draw(im).line([(w // 2, h // 5), (w // 2, 4 * h // 5)], fill=ink, width=w // 15)
    return im


def test_a_small_1_bit_png_declaring_64_megapixels_decodes_in_little_memory(
    tmp_path: Path,
) -> None:
    path = tmp_path / "page.png"
    _stroke(Image.new("1", (7999, 7999), 1), 0).save(path, optimize=True)
    assert path.stat().st_size < 40_000
    got = _decode_in_a_fresh_process(path)
    assert got.get("shape") == [1, 1, 28, 28], got
    assert int(got["max"]) > 200  # the stroke, framed
    assert float(got["peak_mb"]) < 200, got  # it was 950 MB: the framing ran on 64 M floats
    assert float(got["seconds"]) < 3, got


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    _stroke(Image.new("L", (8000, 6000), 230), 20).save(path, quality=85)
    got = _decode_in_a_fresh_process(path)
    assert got.get("shape") == [1, 1, 28, 28], got
    assert int(got["max"]) > 200
    assert float(got["peak_mb"]) < 100, got  # 48 MB of pixels at full scale; 1/4 scale is 3 MB


def test_reduced_decoding_frames_a_large_image_as_the_full_size_one() -> None:
    """An image more than twice ``WORK_SIDE`` a side is area-reduced before framing; the 28x28
    result is the full-size framing's, within a grey level or two at the edges of the stroke."""
    from imgcls.deploy.framing import frame_like_mnist

    rng = np.random.default_rng(0)
    side = 2 * WORK_SIDE + 500  # reduced by 2
    page = np.clip(rng.normal(225, 3, (side, side)), 0, 255).astype(np.uint8)
    im = Image.fromarray(page)
    ImageDraw.Draw(im).line([(1200, 500), (1300, 2000)], fill=30, width=150)
    ImageDraw.Draw(im).line([(900, 600), (1250, 500)], fill=30, width=150)
    full = frame_like_mnist(np.asarray(im)).astype(int)
    got = decode_image(_png(np.asarray(im)), preprocess="mnist")[0]
    assert full.max() == 255 and got.max() == 255
    diff = np.abs(full - got)
    assert diff.mean() < 1.0, diff.mean()
    assert (diff <= 2).mean() > 0.97, np.sort(diff.ravel())[-20:]


def _idx_gz_declaring(path: Path, n: int, rows: int, cols: int, data_bytes: int) -> None:
    """A gzipped IDX file whose header declares n x rows x cols, with ``data_bytes`` zeros."""
    header = b"\0\0\x08\x03" + n.to_bytes(4, "big") + rows.to_bytes(4, "big")
    header += cols.to_bytes(4, "big")
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    chunk = bytes(1 << 24)
    parts = [packer.compress(header)]
    for start in range(0, data_bytes, len(chunk)):
        parts.append(packer.compress(chunk[: min(len(chunk), data_bytes - start)]))
    parts.append(packer.flush())
    path.write_bytes(b"".join(parts))


def test_a_gzipped_idx_declaring_gigabytes_is_refused_before_inflating(tmp_path: Path) -> None:
    path = tmp_path / "huge-images-idx3-ubyte.gz"
    _idx_gz_declaring(path, 1, 20_000, 20_000, 400_000_000)  # 400 MB of zeros in < 1 MB
    assert path.stat().st_size < 1_000_000
    got = _decode_in_a_fresh_process(path)
    assert "refused, its IDX header declares 1x20000x20000" in str(got.get("error")), got
    assert float(got["peak_mb"]) < 50, got
    assert float(got["seconds"]) < 1, got


def test_idx_limits_per_file_and_per_image(tmp_path: Path) -> None:
    one_big_image = tmp_path / "big-idx3-ubyte"
    one_big_image.write_bytes(
        b"\0\0\x08\x03" + b"".join(k.to_bytes(4, "big") for k in (1, 5000, 5000))
    )
    with pytest.raises(ImageFileError, match=r"refused, its IDX header declares 1x5000x5000"):
        read_idx(one_big_image)
    many = tmp_path / "many-idx3-ubyte"
    write_idx_images(many, np.zeros((4, 28, 28), np.uint8))
    assert read_idx(many).shape == (4, 28, 28)
    with pytest.raises(ImageFileError, match=r"at most 3,000 bytes of data"):
        read_idx(many, max_bytes=3000)
    assert MAX_IDX_BYTES >= 47_040_000  # MNIST's training images are read


def test_a_gzipped_idx_with_trailing_data_is_not_inflated_past_its_header(
    tmp_path: Path,
) -> None:
    good = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    plain = tmp_path / "plain"
    write_idx_images(plain, good)
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(plain.read_bytes() + bytes(1 << 20), mtime=0))
    with pytest.raises(ImageFileError, match=r"more bytes than that of data"):
        read_idx(path)
    path.write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
    np.testing.assert_array_equal(read_idx(path), good)


# ----------------------------------------------------------------------------- crafted bodies
def test_png_text_chunks_are_dropped_unread_and_the_pixels_kept() -> None:
    """A 63 KB 28x28 PNG with 60 zTXt (or iTXt) chunks made Pillow inflate 60 MiB of text
    (~150 ms) as it opened it. An upload's PNG is now given to Pillow with its pixel chunks
    only: the same pixels, no text, whatever the chunks hold; a palette PNG keeps its
    transparency (tRNS) and palette."""
    from imgcls.deploy.image_costs import cheap_to_decode, pixel_chunks
    from tests.helpers.crafted import png_with_text

    plain = _png(np.zeros((28, 28), np.uint8))
    for kind in ("zTXt", "iTXt"):
        crafted = png_with_text(kind)
        assert 60_000 < len(crafted) < 64 * 1024
        stripped = pixel_chunks(crafted)
        assert stripped == plain, kind
        with Image.open(io.BytesIO(stripped)) as im:
            assert not im.info and not im.text  # type: ignore[attr-defined]
        assert np.array_equal(decode_image(crafted), decode_image(plain))
        assert not cheap_to_decode(crafted)  # 63 chunks: not decoded inside a batch
    assert cheap_to_decode(plain)
    # a palette PNG with transparency and a text chunk: tRNS and PLTE are pixels
    im = Image.new("P", (40, 30), 0)
    im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    ImageDraw.Draw(im).line((5, 5, 35, 25), fill=1, width=3)
    buf = io.BytesIO()
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * 5000, zip=True)
    im.save(buf, "PNG", transparency=0, pnginfo=info)
    texty = buf.getvalue()
    assert b"zTXt" in texty and b"zTXt" not in pixel_chunks(texty)
    assert b"tRNS" in pixel_chunks(texty) and b"PLTE" in pixel_chunks(texty)
    framed = decode_image(texty, preprocess="mnist")
    assert np.array_equal(framed, decode_image(pixel_chunks(texty), preprocess="mnist"))
    assert framed.max() > 100  # the stroke, composited as ink


def test_a_jpeg_of_thousands_of_scans_is_refused_before_decoding() -> None:
    """A 63 KB progressive 1000x1000 JPEG repeating an empty scan 4,800 times made libjpeg
    walk the image 4,800 times (~256 ms). More than 500 scans is refused, from a count of the
    scan markers; an ordinary progressive JPEG (10 scans) decodes."""
    from imgcls.deploy.image_costs import MAX_JPEG_SCANS, cheap_to_decode, jpeg_scans
    from imgcls.errors import ImageTooLargeError
    from tests.helpers.crafted import jpeg_with_empty_scans

    crafted = jpeg_with_empty_scans()
    assert len(crafted) < 64 * 1024 and jpeg_scans(crafted) > 4_800
    with pytest.raises(ImageTooLargeError, match=r"4,80\d scans \(more than 500"):
        decode_image(crafted, name="scans.jpg")
    assert not cheap_to_decode(crafted)
    few = jpeg_with_empty_scans(scans=MAX_JPEG_SCANS - 20, side=64)
    assert decode_image(few, preprocess="mnist").shape == (1, 28, 28)
    buf = io.BytesIO()
    _stroke(Image.new("RGB", (300, 300), (255, 255, 255)), (0, 0, 0)).save(
        buf, "JPEG", progressive=True
    )
    photo = buf.getvalue()
    assert jpeg_scans(photo) == 10 and cheap_to_decode(photo)
    assert decode_image(photo, preprocess="mnist").max() > 100
