"""Framing a picture of any size the way the model's training images were framed.

``frame_like_mnist`` (LeCun et al.: the ink's bounding box scaled to 20x20, centred by its
centre of mass, a pen's stroke brought to MNIST's width) and ``frame_like_fashion`` (Xiao et
al.: trimmed, scaled, sharpened, negated); ``framing_for`` says which one a ``--preprocess``
value means for a model's data set. numpy and Pillow only.
"""

from __future__ import annotations

import numpy as np

from imgcls.errors import ConfigError

__all__ = ["FRAMINGS", "PREPROCESS", "frame_like_fashion", "frame_like_mnist", "framing_for"]

PREPROCESS: tuple[str, ...] = ("auto", "mnist", "fashion_mnist", "none")
_MNIST_BOX = 20  # LeCun et al.: the digit's bounding box is scaled to fit 20x20 ...
_INK_FRACTION = 0.2  # pixels darker than this fraction of the ink's peak are paper, not ink
# Two grey levels whose means lie this far apart are ink and paper; closer, they are one paper's
# grain and lighting.
_LEVELS_APART = 64.0
# MNIST's stroke half-width at 4x (median, and the 10-90 % range), ``_stroke_half_width`` over
# 2,000 training digits.
_STROKE_MEDIAN = 1.94
_STROKE_RANGE = (1.43, 2.86)


def _background_light(grey: np.ndarray) -> bool:
    """Paper (light background, dark ink) or MNIST-like (dark background, light ink)?

    Judged on the border, where a framed drawing or a photo of a page shows background.
    """
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    return float(np.median(border)) > 127.5


def _two_levels(g: np.ndarray) -> tuple[float, float]:
    """Otsu's threshold between the picture's two grey levels (ink and paper), and how far
    apart the two levels' means are. One level (blank paper, a flat colour) gives a gap of 0."""
    hist = np.bincount(np.clip(np.rint(g), 0, 255).astype(np.int64).ravel(), minlength=256)
    p = hist.astype(np.float64) / max(int(hist.sum()), 1)
    below = np.cumsum(p)  # share of the pixels at or below each level
    mass = np.cumsum(p * np.arange(256))
    above = 1.0 - below
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(
            (below > 0) & (above > 1e-12), (mass[-1] * below - mass) ** 2 / (below * above), 0.0
        )
    t = int(np.argmax(spread))
    if spread[t] <= 0.0:
        return 255.0, 0.0
    low, high = mass[t] / below[t], (mass[-1] - mass[t]) / above[t]
    return float(t), float(high - low)


def _paper_level(g: np.ndarray) -> float:
    """The paper's level in white-on-black ``g``: the 90th percentile of the border's paper.

    A photo or a drawing shows paper all round, and the border is all paper. A digit cropped to
    its ink (no margin) has ink on all four sides of the border; that ink is not paper. When
    the picture has two distinct levels, only the border pixels on the paper side of the
    threshold between them count; taking the whole border there raised the "paper" to the
    ink's level and wiped out all but the core of the stroke.
    """
    border = np.concatenate([g[0], g[-1], g[1:-1, 0], g[1:-1, -1]])
    threshold, gap = _two_levels(g)
    if gap >= _LEVELS_APART:
        paper = border[border <= threshold]
        if len(paper):
            border = paper
    return float(np.percentile(border, 90))


def _ink(grey: np.ndarray) -> np.ndarray:
    """White-on-black ink in [0, 255] float32: inverted if the background is light, the
    background level (uneven, grey-ish paper) subtracted, the peak stretched to 255."""
    g = grey.astype(np.float32)
    if _background_light(g):
        g = 255.0 - g
    g = np.clip(g - _paper_level(g), 0.0, None)
    peak = float(g.max())
    if peak <= 0.0:
        return np.zeros_like(g)
    g *= 255.0 / peak
    g[g < _INK_FRACTION * 255.0] = 0.0
    return g


def _resize_float(a: np.ndarray, width: int, height: int) -> np.ndarray:
    """Anti-aliased resize of a float image (Pillow's area-weighted Lanczos)."""
    from PIL import Image

    im = Image.fromarray(a.astype(np.float32), mode="F")
    return np.asarray(im.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32)


def _stroke_half_width(fine: np.ndarray) -> float:
    """The ink's median half-width in pixels: how many 3x3 erosions remove half its area."""
    from PIL import Image, ImageFilter

    mask = Image.fromarray(np.where(fine >= 128.0, 255, 0).astype(np.uint8))
    area = previous = int((np.asarray(mask) > 0).sum())
    for k in range(1, 41):
        mask = mask.filter(ImageFilter.MinFilter(3))
        left = int((np.asarray(mask) > 0).sum())
        if left <= area / 2:
            return k - 1 + (previous - area / 2) / max(previous - left, 1)
        previous = left
    return 40.0


def _normalise_stroke(fine: np.ndarray) -> np.ndarray:
    """Bring a pen's stroke to MNIST's width when it lies outside what MNIST has.

    ``fine`` is the framed digit at 4x (an 80-pixel box). At that scale MNIST's training
    digits measure 1.94 (median; 10-90 % range 1.43-2.86) by ``_stroke_half_width``. A much
    thinner or thicker pen (a fine-liner, a marker) is dilated or eroded towards the median;
    a stroke within MNIST's range is left as it is. This goes beyond LeCun et al.'s framing,
    whose writers all used the same kind of pen.
    """
    from PIL import Image, ImageFilter

    width = _stroke_half_width(fine)
    if _STROKE_RANGE[0] <= width <= _STROKE_RANGE[1]:
        return fine
    passes = round(abs(width - _STROKE_MEDIAN))
    im = Image.fromarray(np.clip(np.rint(fine), 0, 255).astype(np.uint8))
    grow = width < _STROKE_MEDIAN
    for _ in range(passes):
        im = im.filter(ImageFilter.MaxFilter(3) if grow else ImageFilter.MinFilter(3))
    return np.asarray(im, dtype=np.float32)


def frame_like_mnist(grey: np.ndarray, size: int = 28) -> np.ndarray:
    """Frame a picture of a digit the way MNIST's digits were framed (LeCun et al.).

    Grey, light background inverted to white-on-black, the ink's bounding box scaled (aspect
    kept, anti-aliased) to fit 20x20, then placed in ``size`` x ``size`` so that the ink's
    centre of mass is at the centre. A picture with no ink comes out black. A stroke much
    thinner or thicker than MNIST's is brought to MNIST's width (``_normalise_stroke``).

    Args:
        grey: (H, W) uint8.

    Returns:
        (size, size) uint8.
    """
    ink = _ink(grey)
    out = np.zeros((size, size), np.float32)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if not len(rows):
        return out.astype(np.uint8)
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box = _MNIST_BOX * size / 28.0
    scale = box / max(crop.shape)
    h, w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    fine = _normalise_stroke(np.clip(_resize_float(crop, 4 * w, 4 * h), 0.0, 255.0))
    digit = np.clip(_resize_float(fine, w, h), 0.0, 255.0)
    mass = float(digit.sum())
    if mass <= 0.0:
        return out.astype(np.uint8)
    cy = float((digit.sum(axis=1) * np.arange(h)).sum()) / mass
    cx = float((digit.sum(axis=0) * np.arange(w)).sum()) / mass
    # ... and translated so that the centre of mass sits at the centre, kept inside the frame.
    top = min(max(round(size / 2 - cy - 0.5), 0), size - h)
    left = min(max(round(size / 2 - cx - 0.5), 0), size - w)
    out[top : top + h, left : left + w] = digit
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def frame_like_fashion(grey: np.ndarray, size: int = 28) -> np.ndarray:
    """Frame a product photo the way Fashion-MNIST's were (Xiao et al., 2017): edges close to
    the corner colour trimmed, the longest edge resized to ``size``, sharpened, centred on a
    square canvas, intensities negated (a light background becomes black).

    Args:
        grey: (H, W) uint8.

    Returns:
        (size, size) uint8.
    """
    from PIL import Image, ImageFilter

    g = grey.astype(np.float32)
    if _background_light(g):
        g = 255.0 - g
    corner = float(np.median([g[0, 0], g[0, -1], g[-1, 0], g[-1, -1]]))
    keep = np.abs(g - corner) > 0.1 * 255.0
    rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    out = np.zeros((size, size), np.float32)
    if not len(rows):
        return out.astype(np.uint8)
    crop = np.clip(g[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] - corner, 0.0, 255.0)
    scale = size / max(crop.shape)
    h, w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    small = Image.fromarray(np.clip(_resize_float(crop, w, h), 0, 255).astype(np.uint8))
    small = small.filter(ImageFilter.UnsharpMask(radius=1, percent=100, threshold=0))
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = np.asarray(small, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# The framing function of each ``framing_for`` answer but ``none``.
FRAMINGS = {"mnist": frame_like_mnist, "fashion_mnist": frame_like_fashion}


def framing_for(preprocess: str, dataset: str | None, trained: str | None = None) -> str:
    """The framing ``preprocess`` means for a model trained on ``dataset``: ``mnist``,
    ``fashion_mnist`` or ``none``. ``auto`` takes ``trained``, the framing the model's training
    images had (its metadata's ``framing``, written for a folder of images) when known, else
    the model's dataset (digits otherwise)."""
    if preprocess not in PREPROCESS:
        raise ConfigError(f"preprocess must be one of {', '.join(PREPROCESS)}, got {preprocess!r}")
    if preprocess == "auto":
        if trained in ("mnist", "fashion_mnist", "none"):
            return trained
        return "fashion_mnist" if dataset == "fashion_mnist" else "mnist"
    return preprocess
