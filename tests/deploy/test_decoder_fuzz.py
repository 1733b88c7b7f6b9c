"""The decoder fuzzed: mutated bytes of small valid PNG, GIF, TIFF, JPEG, BMP and WebP files and
of IDX files each end in an image of the asked size or in the project's own ImageFileError,
never in another exception (Pillow's plug-ins raise IndexError, KeyError, TypeError,
struct.error, ... on damaged files).

Bounded and reproducible for CI (derandomized, a few hundred examples); set
``IMGCLS_FUZZ_EXAMPLES`` to run it longer by hand.
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imgcls.deploy.images import decode_image, load_images
from imgcls.errors import ImageFileError
from tests.helpers import write_idx_images

EXAMPLES = int(os.environ.get("IMGCLS_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _digit(size: int = 24) -> np.ndarray:
    """A light stroke on black: something for the framing to find."""
    a = np.zeros((size, size), np.uint8)
    a[4:20, 10:14] = 255
    a[4:8, 6:14] = 200
    return a


def _encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _image_seeds() -> dict[str, bytes]:
    grey = Image.fromarray(_digit())
    rgb = Image.merge("RGB", [grey, grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT), grey])
    rgba = rgb.copy()
    rgba.putalpha(grey)
    palette = grey.convert("P")
    palette.info["transparency"] = 0
    frames = [grey, grey.transpose(Image.Transpose.ROTATE_90)]
    big = Image.fromarray(np.kron(_digit(), np.ones((3, 3), np.uint8)))
    return {
        "png_l": _encode(grey, "PNG"),
        "png_rgba": _encode(rgba, "PNG"),
        "png_p_trns": _encode(palette, "PNG"),
        "png_1": _encode(grey.convert("1"), "PNG"),
        "png_16": _encode(Image.fromarray(_digit().astype(np.uint16) * 257), "PNG"),
        "png_big": _encode(big, "PNG"),
        "gif": _encode(grey, "GIF"),
        "gif_anim": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "tiff": _encode(grey, "TIFF"),
        "tiff_lzw": _encode(rgb, "TIFF", compression="tiff_lzw"),
        "tiff_16": _encode(Image.fromarray(_digit().astype(np.uint16) * 257), "TIFF"),
        "tiff_multi": _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "jpeg": _encode(rgb, "JPEG", quality=80),
        "jpeg_big": _encode(big, "JPEG", quality=80),
        "bmp": _encode(rgb, "BMP"),
        "bmp_p": _encode(palette, "BMP"),
        "webp": _encode(rgba, "WEBP", quality=80),
        "webp_lossless": _encode(grey, "WEBP", lossless=True),
    }


def _idx_seeds() -> dict[str, bytes]:
    path = Path(tempfile.mkdtemp()) / "seed"
    write_idx_images(path, np.stack([_digit(28), _digit(28)[::-1]]))
    plain = path.read_bytes()
    return {"idx": plain, "idx_gz": gzip.compress(plain, mtime=0)}


IMAGE_SEEDS = _image_seeds()
IDX_SEEDS = _idx_seeds()


@st.composite
def mutated(draw: st.DrawFn, seeds: dict[str, bytes]) -> tuple[str, bytes]:
    """A seed file with some bytes overwritten, a run inserted or deleted, or its tail cut."""
    name = draw(st.sampled_from(sorted(seeds)))
    data = bytearray(seeds[name])
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["set", "set", "set", "insert", "delete", "cut"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        # the headers are where the parsers go wrong: favour the first 64 bytes
        if draw(st.booleans()):
            at = min(at, draw(st.integers(0, min(63, len(data) - 1))))
        if kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            del data[at:]
    return name, bytes(data)


@FUZZ
@given(case=mutated(IMAGE_SEEDS), framing=st.sampled_from(["none", "mnist", "fashion_mnist"]))
def test_mutated_image_files_decode_or_are_an_image_file_error(
    case: tuple[str, bytes], framing: str
) -> None:
    _, data = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's notes on damaged files, our resize notes
        try:
            image = decode_image(data, name="fuzzed", preprocess=framing)
        except ImageFileError as e:
            assert str(e).startswith("fuzzed: ")  # names what it read
            return
    assert image.shape == (1, 28, 28)
    assert image.dtype == np.uint8


@FUZZ
@given(case=mutated(IDX_SEEDS))
def test_mutated_idx_files_load_or_are_an_image_file_error(case: tuple[str, bytes]) -> None:
    _, data = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images-idx3-ubyte"
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                names, images = load_images([path])
            except ImageFileError as e:
                assert str(path) in str(e)
                return
    assert images.dtype == np.uint8
    assert images.shape == (len(names), 1, 28, 28)


@pytest.mark.parametrize("name", sorted(IMAGE_SEEDS))
def test_every_seed_decodes(name: str) -> None:
    """The fuzzer starts from files that are good: each decodes to its digit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = decode_image(IMAGE_SEEDS[name], preprocess="mnist")
    assert image.shape == (1, 28, 28)
    assert image.max() >= 200  # the stroke was found and framed, not lost
