"""The lectures' hand-made filters, and "convolution" as deep learning means it.

As lecture 000 notes, what ML calls convolution is cross-correlation: the kernel slides over
the image unflipped, ``C[i, j] = Σ_pq W[p, q] · A[i + p, j + q]``. ``torch.nn.functional.conv2d``
computes exactly that, so these helpers are thin wrappers that fix the shapes and padding.

Kernels: lecture 002's Sobel (vertical / horizontal edges), Laplacian, outline, emboss and
sharpen, and lecture 000's 5×5 "prong" filter made to find the left-hand prongs of a 3.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from imgcls.insight import InsightError

__all__ = ["KERNELS", "apply_kernels", "cross_correlate1d", "cross_correlate2d", "max_pool2d"]

KERNELS: dict[str, tuple[tuple[float, ...], ...]] = {
    "Sobel vertical": ((-1, 0, 1), (-2, 0, 2), (-1, 0, 1)),
    "Sobel horizontal": ((1, 2, 1), (0, 0, 0), (-1, -2, -1)),
    "Laplacian": ((0, -1, 0), (-1, 4, -1), (0, -1, 0)),
    "outline": ((-1, -1, -1), (-1, 8, -1), (-1, -1, -1)),
    "emboss": ((-2, -1, 0), (-1, 1, 1), (0, 1, 2)),
    "sharpen": ((0, -1, 0), (-1, 5, -1), (0, -1, 0)),
    "prong (lecture 000)": (
        (0, 0, -1, 0, 0),
        (0, -1, -2, -1, 0),
        (-1, -2, 16, -2, -1),
        (0, -1, -2, -1, 0),
        (0, 0, -1, 0, 0),
    ),
}


def _as_float(x: Sequence | torch.Tensor) -> torch.Tensor:
    return (
        torch.as_tensor(x, dtype=torch.float64)
        if not isinstance(x, torch.Tensor)
        else x.to(torch.float64)
    )


def cross_correlate1d(
    x: Sequence[float] | torch.Tensor, w: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Valid 1-D cross-correlation: [1,2,3,4,5,6] ⊛ [1,2] = [5,8,11,14,17] (length n − k + 1)."""
    xt, wt = _as_float(x), _as_float(w)
    return F.conv1d(xt.view(1, 1, -1), wt.view(1, 1, -1)).view(-1)


def cross_correlate2d(
    image: Sequence | torch.Tensor, kernel: Sequence | torch.Tensor, padding: str = "valid"
) -> torch.Tensor:
    """2-D cross-correlation of an (H, W) image with a (K, K') kernel.

    ``padding="valid"`` gives (H − K + 1) × (W − K' + 1); ``"same"`` zero-pads so the output
    is H × W (odd kernels, as lecture 000 recommends). Returns float64 for exact arithmetic.
    """
    img, ker = _as_float(image), _as_float(kernel)
    if img.ndim != 2 or ker.ndim != 2:
        raise InsightError(
            "cross_correlate2d needs a 2-D image and kernel, "
            f"got shapes {tuple(img.shape)} and {tuple(ker.shape)}"
        )
    if padding not in ("valid", "same"):
        raise InsightError(f"padding must be 'valid' or 'same', got {padding!r}")
    if padding == "same" and (ker.shape[0] % 2 == 0 or ker.shape[1] % 2 == 0):
        raise InsightError(f"'same' padding needs an odd kernel, got {tuple(ker.shape)}")
    out = F.conv2d(img[None, None], ker[None, None], padding=padding)  # (1, 1, H', W')
    return out[0, 0]


def max_pool2d(
    x: Sequence | torch.Tensor, kernel_size: int, stride: int | None = None
) -> torch.Tensor:
    """Max-pool an (H, W) array: 2×2, stride 1, of [[1,2,3],[4,5,6],[7,8,9]] is [[5,6],[8,9]]."""
    xt = _as_float(x)
    return F.max_pool2d(xt[None, None], kernel_size, stride=stride or kernel_size)[0, 0]


def apply_kernels(
    image: torch.Tensor, kernels: dict[str, tuple[tuple[float, ...], ...]] | None = None
) -> dict[str, torch.Tensor]:
    """Cross-correlate an (H, W) image (uint8 or float in [0, 1]) with each kernel, 'same' size.

    Returns {kernel name: (H, W) float64 response}, in the order of ``kernels``.
    """
    img = image.double() / 255.0 if image.dtype == torch.uint8 else image.double()
    return {
        name: cross_correlate2d(img, k, padding="same") for name, k in (kernels or KERNELS).items()
    }
