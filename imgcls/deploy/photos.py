"""MNIST test digits re-rendered the way people really photograph or scan a digit, to measure
what a deployed model does on such pictures (``imgcls evaluate-onnx --as_photos``).

Each digit becomes dark ink on light, grey-ish, unevenly lit paper; 4-10x larger; off centre
on a canvas of another aspect ratio; with a thicker or thinner stroke, a mild blur, and saved
as JPEG; some as colour photos (tinted paper, a blue or black pen) and some as transparent
PNGs (ink on an alpha channel, as drawing programs save). Only numpy and Pillow: it runs in
the torch-free deployment install.
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["KINDS", "render_photo", "render_photos"]

KINDS = ("grey_jpeg", "colour_jpeg", "transparent_png")


def _paper(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w) float32 paper brightness: a level, a lighting gradient, fine grain."""
    level = rng.uniform(165, 240)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    slope = rng.uniform(-25, 25, size=2) / np.array([max(h, 1), max(w, 1)], np.float32)
    light = level + slope[0] * (gy - h / 2) + slope[1] * (gx - w / 2)
    return np.clip(light + rng.normal(0, 3, size=(h, w)), 0, 255).astype(np.float32)


def render_photo(digit: np.ndarray, rng: np.random.Generator, kind: str = "grey_jpeg") -> bytes:
    """One 28x28 uint8 MNIST digit (white on black) -> the bytes of a photo of it.

    Args:
        kind: ``grey_jpeg``, ``colour_jpeg`` or ``transparent_png``.
    """
    from PIL import Image, ImageFilter

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    side = int(round(28 * rng.uniform(4.0, 10.0)))
    # The stroke is made thinner or thicker at 4x MNIST's size, where filtering is cheap, then
    # scaled up: each 3x3 min / max pass moves the edge by a quarter of an MNIST pixel, so
    # strokes range from half a pixel thinner to two pixels thicker than written.
    ink = Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC)
    stroke = int(rng.integers(-2, 5))
    for _ in range(abs(stroke)):
        ink = ink.filter(ImageFilter.MaxFilter(3) if stroke > 0 else ImageFilter.MinFilter(3))
    ink = ink.resize((side, side), Image.Resampling.BICUBIC)
    w = int(side * rng.uniform(1.1, 2.2))
    h = int(side * rng.uniform(1.1, 2.2))
    left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    alpha = np.zeros((h, w), np.float32)
    alpha[top : top + side, left : left + side] = np.asarray(ink, np.float32) / 255.0
    if kind == "transparent_png":
        pen = np.array([rng.uniform(0, 60)] * 3, np.float32)
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[..., :3] = pen.astype(np.uint8)
        rgba[..., 3] = np.rint(alpha * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(buf, "PNG")
        return buf.getvalue()
    paper = _paper(w, h, rng)
    if kind == "colour_jpeg":
        tint = rng.uniform(0.85, 1.0, size=3).astype(np.float32)
        pen = np.array([20, 30, rng.uniform(60, 140)], np.float32)  # a blue or black pen
        page = paper[..., None] * tint
        rgb = page * (1 - alpha[..., None]) + pen * alpha[..., None]
    else:
        pen_level = rng.uniform(10, 70)
        rgb = (paper * (1 - alpha) + pen_level * alpha)[..., None].repeat(3, axis=2)
    im = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")
    im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 0.3 * side / 28))))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(55, 90)))
    return buf.getvalue()


def render_photos(
    digits: np.ndarray, seed: int = 0, kinds: tuple[str, ...] = KINDS
) -> list[tuple[str, bytes]]:
    """Digits (N, 28, 28) uint8 -> N (kind, bytes), the kinds taken in turn."""
    rng = np.random.default_rng(seed)
    out = []
    for i, digit in enumerate(digits):
        kind = kinds[i % len(kinds)]
        out.append((kind, render_photo(digit, rng, kind)))
    return out
