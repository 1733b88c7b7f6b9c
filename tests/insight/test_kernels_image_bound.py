"""``imgcls visualize kernels --image``: a small file that declares thousands of pixels a side is
scaled down to ``KERNELS_MAX_SIDE`` before the convolutions, so it cannot cost gigabytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imgcls.insight.visualize import KERNELS_MAX_SIDE, load_image_file


def test_a_large_image_is_scaled_down_to_the_stated_side(tmp_path: Path) -> None:
    path = tmp_path / "page.png"
    page = Image.new("1", (7999, 3999), 1)
    ImageDraw.Draw(page).line([(4000, 500), (4000, 3500)], fill=0, width=400)
    page.save(path, optimize=True)
    assert path.stat().st_size < 40_000
    with pytest.warns(UserWarning, match=r"scaled down from 7999x3999 to 1024x512"):
        image = load_image_file(path)
    assert KERNELS_MAX_SIDE == 1024
    assert tuple(image.shape) == (512, 1024)  # aspect kept
    pixels = image.numpy()
    assert pixels[:, :400].min() == 255  # the paper stays white ...
    assert pixels[256, 512] == 0  # ... and the stroke black


def test_an_image_within_the_side_keeps_its_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (KERNELS_MAX_SIDE, 300), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert np.array_equal(load_image_file(tmp_path / "g.png").numpy(), grey)
