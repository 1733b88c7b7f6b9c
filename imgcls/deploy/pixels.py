"""The model input of an exported imgcls classifier: ``to_pixels``.

Normalisation is baked into the exported graph, so the model takes float32 pixels in [0, 1],
(N, C, H, W). ``to_pixels`` turns uint8 images into such pixels and refuses floats outside
[0, 1], so that an already-normalised batch cannot be fed by mistake. It needs numpy only:
the service checks JSON pixels with it without touching onnxruntime.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from imgcls.errors import InputError

__all__ = ["to_pixels"]


def to_pixels(
    images: np.ndarray | Mapping[str, np.ndarray],
    input_shape: tuple[int, int, int],
    input_name: str = "pixels",
) -> np.ndarray:
    """Check a batch and turn it into the model input: float32 pixels in [0, 1], (N, C, H, W).

    Accepts uint8 (0..255) or float32 in [0, 1], shaped (N, C, H, W) or (N, H, W) for
    one-channel models; or ``{input_name: array}``.

    Raises:
        InputError: wrong input name, rank, size, dtype, an empty batch, NaN/inf, or
            floats outside [0, 1] (e.g. already-normalised pixels).
    """
    if isinstance(images, Mapping):
        if set(images) != {input_name}:
            raise InputError(
                f"input names {sorted(images)} do not match the model's single input {input_name!r}"
            )
        images = images[input_name]
    x = np.asarray(images)
    c, h, w = input_shape
    if x.ndim == 3 and c == 1:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    if x.ndim != 4:
        expected = f"(N, {c}, {h}, {w})" + (f" or (N, {h}, {w})" if c == 1 else "")
        hint = (
            "; for a single image add a batch axis: images[None]"
            if x.ndim == (2 if c == 1 else 3)
            else ""
        )
        raise InputError(
            f"expected images of shape {expected}, got rank {x.ndim} shape {x.shape}{hint}"
        )
    if x.shape[1:] != (c, h, w):
        raise InputError(
            f"expected images of shape (N, {c}, {h}, {w}), got {x.shape}; "
            f"resize them to {h}x{w} {'greyscale' if c == 1 else 'RGB'} (load_images does this)"
        )
    if x.shape[0] == 0:
        raise InputError("empty batch: no images given")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if x.dtype != np.float32:
        raise InputError(
            f"expected uint8 pixels (0..255) or float32 pixels in [0, 1], got {x.dtype}; "
            "convert with images.astype(np.float32) after scaling to [0, 1]"
        )
    finite = np.isfinite(x)
    if not finite.all():
        bad = int((~finite).sum())
        first = int(np.flatnonzero(~finite.reshape(len(x), -1).all(axis=1))[0])
        raise InputError(
            f"{bad} NaN or inf pixel(s) in the batch (first in image {first}); "
            "pixels must be finite"
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(
            f"float32 pixels must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]. "
            "The model normalises its input itself (normalization: in_graph): "
            "pass raw pixels/255 or uint8 images, not normalised ones"
        )
    return np.ascontiguousarray(x)
