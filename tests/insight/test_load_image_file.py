"""``load_image_file`` (``imgcls visualize kernels --image``): decoded by the deployment's
decoder, at the image's own size, errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgcls.deploy.images import decode_image
from imgcls.insight import InsightError
from imgcls.insight.visualize import load_image_file


def test_any_size_keeps_its_own_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    got = load_image_file(tmp_path / "c.png")
    want = np.asarray(Image.fromarray(rgb).convert("L"))
    assert got.shape == (37, 53)
    assert np.array_equal(got.numpy(), want)


def test_transparency_is_composited_as_the_runtime_does(tmp_path: Path) -> None:
    rgba = np.zeros((30, 30, 4), dtype=np.uint8)
    rgba[8:22, 13:17] = (0, 0, 0, 255)  # a black stroke on a transparent ground
    Image.fromarray(rgba).save(tmp_path / "a.png")
    got = load_image_file(tmp_path / "a.png").numpy()
    want = decode_image(tmp_path / "a.png", size=(30, 30), preprocess="none")[0]
    assert np.array_equal(got, want)
    # not Pillow's plain luma, which reads the transparent ground and the stroke alike as 0
    assert not np.array_equal(got, np.asarray(Image.fromarray(rgba).convert("L")))


def test_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    with pytest.raises(InsightError, match="missing.png"):
        load_image_file(missing)
    text = tmp_path / "text.png"
    text.write_text("hello")
    with pytest.raises(InsightError, match="text.png: not a readable image"):
        load_image_file(text)
