"""Batched, on-device image ops: translation with zero fill, random shifts, rotations and
scalings, flips, erasing, normalisation.

These run on whole batches (B, C, H, W) on the batch's device, so the training loop has no
per-sample Python. They are used by the DataModule (augmentation) and by the shift
evaluation (``imgcls.insight.shift``), which needs the exact same translation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "DIRECTIONS",
    "DIRECTION_NAMES",
    "affine",
    "normalize",
    "random_affine",
    "random_erase",
    "random_hflip",
    "random_shift",
    "translate",
]

# The 8 compass directions as (dy, dx) unit steps: N, NE, E, SE, S, SW, W, NW.
DIRECTIONS: tuple[tuple[int, int], ...] = (
    (-1, 0),
    (-1, 1),
    (0, 1),
    (1, 1),
    (1, 0),
    (1, -1),
    (0, -1),
    (-1, -1),
)
DIRECTION_NAMES: tuple[str, ...] = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")


def translate(x: torch.Tensor, dy: torch.Tensor | int, dx: torch.Tensor | int) -> torch.Tensor:
    """Shift every image of ``x`` (B, C, H, W) down by ``dy`` and right by ``dx`` pixels.

    ``dy`` / ``dx`` are ints or (B,) integer tensors (one shift per image); vacated pixels
    are zero. Pixels shifted past the border are lost. Works for any dtype (uint8 too).
    """
    b, c, h, w = x.shape
    if isinstance(dy, int) and isinstance(dx, int):
        if dy == 0 and dx == 0:
            return x
        out = torch.zeros_like(x)
        if abs(dy) >= h or abs(dx) >= w:
            return out
        src_y, dst_y = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
        src_x, dst_x = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
        out[:, :, dst_y, dst_x] = x[:, :, src_y, src_x]
        return out
    dy_t = torch.as_tensor(dy, device=x.device).expand(b)
    dx_t = torch.as_tensor(dx, device=x.device).expand(b)
    k = int(max(dy_t.abs().max().item(), dx_t.abs().max().item()))
    if k == 0:
        return x
    padded = F.pad(x, (k, k, k, k))  # (B, C, H+2k, W+2k), zero fill
    rows = (k - dy_t)[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = (k - dx_t)[:, None] + torch.arange(w, device=x.device)  # (B, W)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def random_shift(
    x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Translate each image by an independent random (dy, dx) in [-max_shift, max_shift]²."""
    if max_shift <= 0:
        return x
    b = x.shape[0]
    d = torch.randint(-max_shift, max_shift + 1, (2, b), generator=generator, device="cpu")
    return translate(x, d[0].to(x.device), d[1].to(x.device))


def affine(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Rotate each image of ``x`` (B, C, H, W) by ``angle[i]`` radians (counter-clockwise as
    displayed, rows running down) and magnify it by ``scale[i]`` about its centre.

    Bilinear, zero fill. uint8 input becomes floats in [0, 1] (what ``normalize`` takes);
    float input keeps its range. One ``grid_sample`` for the whole batch, each image with its
    own matrix (torchvision's ``RandomAffine`` draws one transform per call, for all of them).
    """
    xf = x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x
    angle = angle.to(device=x.device, dtype=xf.dtype)
    inv = 1.0 / scale.to(device=x.device, dtype=xf.dtype)
    # affine_grid maps each output pixel to the input point it samples: the inverse of the
    # wanted motion, hence the 1/scale; with rows running down, this matrix turns the
    # picture counter-clockwise, as torchvision's ``rotate`` and ``torch.rot90`` do.
    cos, sin = angle.cos() * inv, angle.sin() * inv
    zero = torch.zeros_like(cos)
    theta = torch.stack(
        (torch.stack((cos, -sin, zero), -1), torch.stack((sin, cos, zero), -1)), -2
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(xf.shape), align_corners=False)
    return F.grid_sample(xf, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(
    x: torch.Tensor,
    degrees: float,
    scale: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rotate each image by an independent uniform angle in [-degrees, degrees] and magnify it
    by a uniform factor in [1 - scale, 1 + scale] (``affine``); both 0 returns ``x`` as is.

    Draws on the CPU, like ``random_shift``, so a seed gives the same images on any device.
    """
    if degrees <= 0 and scale <= 0:
        return x
    b = x.shape[0]
    u = torch.rand(2, b, generator=generator, device="cpu") * 2 - 1
    return affine(x, u[0] * math.radians(degrees), 1 + u[1] * scale)


def random_hflip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Flip each image left-right with probability ``p`` (one draw per image)."""
    flip = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_erase(
    x: torch.Tensor,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float = 0.0,
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017), batched: with probability ``p`` per image, set one
    rectangle to ``value``.

    The rectangle covers a uniform fraction in ``scale`` of the image, has an aspect ratio
    (h/w) log-uniform in ``ratio``, is clipped to the image and placed uniformly. Same
    choices as torchvision's ``RandomErasing``, but one vectorised op for the whole batch
    (B, C, H, W); applied after normalisation, ``value`` 0 is the data set's mean pixel.
    """
    if p <= 0:
        return x
    b, _, h, w = x.shape
    dev = x.device
    area = torch.empty(b, device=dev).uniform_(*scale) * (h * w)
    log_r = torch.empty(b, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    eh = (area * log_r.exp()).sqrt().round().clamp(1, h)  # (B,) rectangle heights
    ew = (area / log_r.exp()).sqrt().round().clamp(1, w)  # (B,) rectangle widths
    y0 = (torch.rand(b, device=dev) * (h - eh + 1)).floor()  # top row in [0, h - eh]
    x0 = (torch.rand(b, device=dev) * (w - ew + 1)).floor()
    rows = torch.arange(h, device=dev)[None, :]  # (1, H)
    cols = torch.arange(w, device=dev)[None, :]
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + eh)[:, None])  # (B, H)
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + ew)[:, None])  # (B, W)
    on = torch.rand(b, device=dev) < p  # (B,)
    mask = in_rows[:, :, None] & in_cols[:, None, :] & on[:, None, None]  # (B, H, W)
    return x.masked_fill(mask[:, None], value)


def shift_into(
    out: torch.Tensor, x: torch.Tensor, dy: int, dx: int, fill: float = 0.0
) -> torch.Tensor:
    """``translate(x, dy, dx)`` written into ``out`` (same shape, any dtype and memory format),
    vacated pixels set to ``fill``: no allocation, so one buffer serves every shift of a batch
    (evaluation shifts normalised images, whose "zero" pixel is ``fill``)."""
    h, w = x.shape[-2:]
    out.fill_(fill)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y, dst_y = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    out[:, :, dst_y, dst_x] = x[:, :, src_y, src_x]
    return out


def normalize(
    x: torch.Tensor,
    mean: float,
    std: float,
    memory_format: torch.memory_format = torch.preserve_format,
) -> torch.Tensor:
    """uint8 pixels (or floats in [0, 1]) -> float32 ``(x/255 - mean) / std``, in
    ``memory_format`` (NHWC strides even for one channel, where ``contiguous`` keeps NCHW's)."""
    if x.dtype == torch.uint8:  # in place on the fresh float copy: x * (1/(255 std)) - mean/std
        return (
            x.to(torch.float32, memory_format=memory_format)
            .mul_(1.0 / (255.0 * std))
            .sub_(mean / std)
        )
    return ((x - mean) / std).to(memory_format=memory_format)
