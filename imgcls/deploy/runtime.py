"""The serving side: run an exported imgcls ONNX model with onnxruntime, without torch.

It runs the ONNX files that ``imgcls.export.pipeline`` writes from a checkpoint. This module imports
only onnxruntime, numpy, Pillow and the standard library, so a deployment needs neither torch
nor Lightning (``tests/test_runtime.py`` checks this in a fresh interpreter).

The model file describes itself: ``imgcls export`` writes its metadata (class names, input
name / shape / dtype, normalisation, ...) into the ONNX ``metadata_props``, one key per
entry, each value JSON-encoded. Normalisation is baked into the graph
(``"normalization": "in_graph"``): the model takes float32 pixels in [0, 1], shape
(N, C, H, W). ``OnnxClassifier`` turns uint8 images into such pixels itself and refuses
floats outside [0, 1], so an already-normalised batch cannot be fed by mistake.

Devices: ``cpu``, ``cuda`` (CUDAExecutionProvider), ``tensorrt`` (TensorrtExecutionProvider,
with CUDA then CPU for the nodes TensorRT does not take) and ``auto`` (CUDA when a GPU and
the CUDA provider are there, else CPU, with a warning). Asking for ``cuda`` or ``tensorrt``
when that provider cannot load raises ``ProviderError``; there is no silent fall-back to the
CPU. onnxruntime-gpu 1.2x+ is built against CUDA 13 / cuDNN 9; those libraries come with the
CUDA build of torch as the ``nvidia-*`` pip packages, and ``onnxruntime.preload_dlls()``
(called here before any CUDA / TensorRT session) loads them from there, so neither
``LD_LIBRARY_PATH`` nor ``import torch`` is needed.

Images: PNG / JPEG / ... files, folders of them, and IDX files (MNIST's format, read with
numpy). Colour images become greyscale; other sizes are resized with a warning. In a
transparent image the alpha channel is the ink, composited white-on-black; an animated image
is read as its first frame, with a warning.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import math
import os
import struct
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from imgcls.deploy import metadata
from imgcls.errors import ConfigError, ImageFileError, InputError, ModelLoadError, ProviderError

__all__ = [
    "DEVICES",
    "IMAGE_SUFFIXES",
    "TRT_PROFILE",
    "ImageFileError",
    "InputError",
    "ModelLoadError",
    "OnnxClassifier",
    "ProviderError",
    "cuda_device_count",
    "load_image_file",
    "load_images",
    "read_idx",
    "read_metadata",
]

Device = Literal["auto", "cpu", "cuda", "tensorrt"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "tensorrt")
_EP = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# TensorRT optimisation profile for the batch axis: (min, opt, max). Larger batches are split.
TRT_PROFILE: tuple[int, int, int] = (1, 64, 1024)

# onnxruntime's Python errors derive from Exception only; these are the ones loading can raise.
_ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(_ort_state, n)
    for n in (
        "Fail",
        "InvalidArgument",
        "NoSuchFile",
        "InvalidProtobuf",
        "InvalidGraph",
        "RuntimeException",
        "NotImplemented",
        "EPFail",
    )
    if hasattr(_ort_state, n)
)


# ----------------------------------------------------------------------------- IDX files
# IDX (LeCun's MNIST format): 2 zero bytes, a type code, the number of dimensions, then one
# big-endian uint32 per dimension, then the data, row-major, big-endian.
_IDX_TYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip, as the files come from the web (train-images-idx3-ubyte.gz)
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ImageFileError(f"{path}: a damaged gzip file ({e})") from e
    return data


def _is_idx_header(head: bytes) -> bool:
    return (
        len(head) >= 4
        and head[0] == 0
        and head[1] == 0
        and head[2] in _IDX_TYPES
        and 1 <= head[3] <= 4
    )


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array of its shape and type.

    Raises:
        ImageFileError: the file is missing, its magic number is not IDX's, or its size does
            not match its header (truncated or trailing bytes).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    data = _read_bytes(path)
    if not _is_idx_header(data[:4]):
        raise ImageFileError(
            f"{path}: not an IDX file (magic bytes {data[:4].hex() or 'none'}; expected 0000 08xx)"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ImageFileError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(data) - header != expected:
        raise ImageFileError(
            f"{path}: IDX header says {'x'.join(map(str, dims))} items ({expected} bytes) "
            f"but the file holds {len(data) - header} bytes of data: it is truncated or damaged"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(dims)
        .astype(dtype.newbyteorder("="))
    )


def _file_is_idx(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4)
    if head[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError), gzip.open(path, "rb") as gz:
            head = gz.read(4)
    return _is_idx_header(head)


# ----------------------------------------------------------------------------- image files
def _fit_images(
    images: np.ndarray, channels: int, size: tuple[int, int], source: str
) -> np.ndarray:
    """(N, H, W) uint8 from an IDX file -> (N, C, H', W') at the model's size.

    Other sizes are resized, with a warning.
    """
    from PIL import Image

    n, h, w = images.shape
    if (h, w) != size:
        warnings.warn(
            f"{source}: resized from {w}x{h} to {size[1]}x{size[0]} (the model's input size)",
            stacklevel=3,
        )
        images = (
            np.stack(
                [
                    np.asarray(
                        Image.fromarray(im).resize((size[1], size[0]), Image.Resampling.BILINEAR)
                    )
                    for im in images
                ]
            )
            if n
            else np.zeros((0, *size), np.uint8)
        )
    out = images[:, None]  # (N, 1, H, W)
    return np.repeat(out, channels, axis=1) if channels != 1 else out


def _has_alpha(im: Any) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info


def _composite_alpha(im: Any, channels: int) -> np.ndarray | None:
    """A transparent image -> (H, W, C) uint8, ink bright on a black background.

    The alpha channel is the ink: where it is 0 there is background, whatever colour the
    invisible pixels hold. Dark ink (black on transparent, the usual drawing) is inverted
    before compositing onto black, so both dark and light ink come out white-on-black, as
    MNIST digits are. Returns None when every pixel is opaque: then the alpha channel says
    nothing and the colours are read as they are.
    """
    rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
    if (rgba[..., 3] == 255).all():
        return None
    alpha = rgba[..., 3:] / 255.0
    colour = rgba[..., :3]
    if channels == 1:  # ITU-R 601 luma, as Pillow's convert("L")
        colour = colour @ np.array([[0.299], [0.587], [0.114]], np.float32)
    weight = float(alpha.sum())
    ink = float((colour * alpha).sum() / (weight * colour.shape[-1])) if weight else 255.0
    if ink < 128.0:
        colour = 255.0 - colour
    return np.clip(np.rint(colour * alpha), 0, 255).astype(np.uint8)


PREPROCESS: tuple[str, ...] = ("auto", "mnist", "fashion_mnist", "none")
# A photo from a phone is 12-50 megapixels; a PNG that declares more is refused before decoding
# (Pillow's own bomb guard only warns below 179 megapixels).
MAX_PIXELS = 64_000_000
_MNIST_BOX = 20  # LeCun et al.: the digit's bounding box is scaled to fit 20x20 ...
_INK_FRACTION = 0.2  # pixels darker than this fraction of the ink's peak are paper, not ink
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


def _ink(grey: np.ndarray) -> np.ndarray:
    """White-on-black ink in [0, 255] float32: inverted if the background is light, the
    background level (uneven, grey-ish paper) subtracted, the peak stretched to 255."""
    g = grey.astype(np.float32)
    if _background_light(g):
        g = 255.0 - g
    border = np.concatenate([g[0], g[-1], g[1:-1, 0], g[1:-1, -1]])
    g = np.clip(g - float(np.percentile(border, 90)), 0.0, None)
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


_FRAMING = {"mnist": frame_like_mnist, "fashion_mnist": frame_like_fashion}


def framing_for(preprocess: str, dataset: str | None) -> str:
    """The framing ``preprocess`` means for a model trained on ``dataset``: ``mnist``,
    ``fashion_mnist`` or ``none``. ``auto`` takes the model's dataset (digits otherwise)."""
    if preprocess not in PREPROCESS:
        raise ConfigError(f"preprocess must be one of {', '.join(PREPROCESS)}, got {preprocess!r}")
    if preprocess == "auto":
        return "fashion_mnist" if dataset == "fashion_mnist" else "mnist"
    return preprocess


def decode_image(
    source: str | os.PathLike[str] | bytes,
    *,
    name: str | None = None,
    channels: int = 1,
    size: tuple[int, int] = (28, 28),
    preprocess: str = "none",
    dataset: str | None = None,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """One image (a file, or its bytes as uploaded) -> (C, H, W) uint8 at the model's size.

    The one decoder that ``imgcls infer``, ``imgcls serve`` and the data modules'
    ``predict_dir`` share. Greyscale (or RGB) conversion, transparency composited
    (``_composite_alpha``), the first frame of an animation (with a warning). An image already
    at the model's size is taken as a model input, unchanged. Any other size is framed the way
    the model's training images were (``preprocess``: ``auto`` picks by ``dataset``;
    ``mnist``; ``fashion_mnist``), or with ``none`` squashed to the model's size (a warning).

    Raises:
        ImageFileError: not a readable image, or it declares more than ``max_pixels`` pixels
            (refused before its pixels are decoded).
    """
    import io

    from PIL import Image, UnidentifiedImageError

    label = name or ("<bytes>" if isinstance(source, bytes | bytearray) else str(source))
    framing = framing_for(preprocess, dataset)
    h, w = size
    opened = io.BytesIO(source) if isinstance(source, bytes | bytearray) else Path(source)
    try:
        with Image.open(opened) as src:
            if src.width * src.height > max_pixels:
                raise ImageFileError(
                    f"{label}: refused, it declares {src.width}x{src.height} pixels, more than "
                    f"the {max_pixels:,} allowed; shrink the image or check where it came from"
                )
            frames = int(getattr(src, "n_frames", 1))
            if frames > 1:
                warnings.warn(
                    f"{label}: animated ({frames} frames); only the first frame is used",
                    stacklevel=3,
                )
            ink = _composite_alpha(src, channels) if _has_alpha(src) else None
            if ink is not None:
                im = Image.fromarray(ink[..., 0] if channels == 1 else ink)
            else:
                im = src.convert("L" if channels == 1 else "RGB")  # colour -> ITU-R 601 luma
        if im.size == (w, h):
            arr = np.asarray(im, dtype=np.uint8).reshape(h, w, channels)
        elif framing != "none" and channels == 1 and h == w:
            arr = _FRAMING[framing](np.asarray(im, dtype=np.uint8), h)[..., None]
        else:
            warnings.warn(
                f"{label}: resized from {im.size[0]}x{im.size[1]} to {w}x{h} "
                "(the model's input size)",
                stacklevel=3,
            )
            im = im.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8).reshape(h, w, channels)
    except Image.DecompressionBombError as e:
        # Pillow refuses to decode it (a small file that would expand to gigabytes).
        raise ImageFileError(
            f"{label}: refused, too many pixels to decode safely ({e}); "
            "shrink the image or check where it came from"
        ) from e
    except UnidentifiedImageError as e:
        raise ImageFileError(
            f"{label}: not a readable image file (not in a format Pillow reads: PNG, JPEG, "
            "GIF, WebP, BMP, TIFF, ...)"
        ) from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageFileError(f"{label}: not a readable image file ({e})") from e
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_image_file(
    path: str | os.PathLike[str],
    *,
    channels: int = 1,
    size: tuple[int, int] = (28, 28),
    preprocess: str = "none",
    dataset: str | None = None,
) -> np.ndarray:
    """One image file (PNG, JPEG, ...) -> (C, H, W) uint8 at the model's size (``decode_image``).

    Raises:
        ImageFileError: the file is not a readable image or is too large to decode safely.
    """
    return decode_image(path, channels=channels, size=size, preprocess=preprocess, dataset=dataset)


def load_images(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    channels: int = 1,
    size: tuple[int, int] = (28, 28),
    skipped: list[ImageFileError] | None = None,
    preprocess: str = "none",
    dataset: str | None = None,
) -> tuple[list[str], np.ndarray]:
    """Read image files, folders of image files and IDX image files into one uint8 batch.

    A folder contributes its image files (``IMAGE_SUFFIXES``, not recursive) in name order;
    an IDX file contributes every image, named ``file[i]``.

    Args:
        skipped: when given, an unreadable file inside a folder is appended here and left
            out, so the good files of a folder are still read; files named directly always
            raise.
        preprocess, dataset: how image files of another size are framed (``decode_image``);
            IDX images are the model's own kind and are only resized.

    Returns:
        (names, images): one name per image, images (N, C, H, W) uint8.

    Raises:
        ImageFileError: a path does not exist, a folder holds no image file (or, with
            ``skipped``, no readable one), a file is not an image (the message names it), or
            an IDX file is damaged or holds labels.
    """
    opts: dict[str, Any] = {
        "channels": channels,
        "size": size,
        "preprocess": preprocess,
        "dataset": dataset,
    }
    framing_for(preprocess, dataset)  # a bad value is refused before any file is read
    names: list[str] = []
    batches: list[np.ndarray] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise ImageFileError(
                    f"{path}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                )
            read = 0
            for f in files:
                try:
                    image = decode_image(f, **opts)
                except ImageFileError as e:
                    if skipped is None:
                        raise
                    skipped.append(e)
                    continue
                names.append(str(f))
                batches.append(image[None])
                read += 1
            if not read and skipped:
                raise ImageFileError(
                    f"{path}: none of its {len(files)} image file(s) is readable "
                    f"(first: {skipped[-len(files)]})"
                )
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES and _file_is_idx(path):
                arr = read_idx(path)
                if arr.ndim != 3 or arr.dtype != np.uint8:
                    kind = "labels" if arr.ndim == 1 else f"{arr.ndim}-d {arr.dtype} data"
                    raise ImageFileError(
                        f"{path}: an IDX file of {kind}, not of uint8 images (N, H, W)"
                    )
                names += [f"{path}[{i}]" for i in range(len(arr))]
                batches.append(_fit_images(arr, channels, size, str(path)))
            else:
                names.append(str(path))
                batches.append(decode_image(path, **opts)[None])
        else:
            raise ImageFileError(f"{path}: no such file or folder")
    if not batches:
        raise ImageFileError("no inputs given")
    return names, np.concatenate(batches)


# ----------------------------------------------------------------------------- providers
def cuda_device_count() -> int:
    """Number of CUDA devices the driver reports (0 without a driver), without torch."""
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    return 0


def _preload_cuda_libraries() -> None:
    """Load CUDA 13 / cuDNN 9 from the ``nvidia-*`` wheels (torch's) before a CUDA session.

    ``onnxruntime.preload_dlls`` exists from onnxruntime 1.21; older builds need the
    libraries on ``LD_LIBRARY_PATH`` or ``import torch`` first. It reports on stdout, which
    is kept clean for results, so its messages go to stderr.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        with contextlib.redirect_stdout(sys.stderr):
            preload()


def _provider_list(
    device: str,
    provider_options: Mapping[str, Mapping[str, Any]] | None,
    input_name: str,
    chw: tuple[int, int, int],
) -> list[Any]:
    opts = {k: dict(v) for k, v in (provider_options or {}).items()}
    if device == "cpu":
        return ["CPUExecutionProvider"]
    cuda: list[Any] = [
        ("CUDAExecutionProvider", opts.get("CUDAExecutionProvider", {})),
        "CPUExecutionProvider",
    ]
    if device == "cuda":
        return cuda
    c, h, w = chw
    lo, opt, hi = TRT_PROFILE
    trt = {  # an explicit profile: one engine for batches 1..1024, tuned for 64
        "trt_profile_min_shapes": f"{input_name}:{lo}x{c}x{h}x{w}",
        "trt_profile_opt_shapes": f"{input_name}:{opt}x{c}x{h}x{w}",
        "trt_profile_max_shapes": f"{input_name}:{hi}x{c}x{h}x{w}",
        **opts.get("TensorrtExecutionProvider", {}),
    }
    return [("TensorrtExecutionProvider", trt), *cuda]


# ----------------------------------------------------------------------------- metadata
def read_metadata(model: str | os.PathLike[str]) -> dict[str, Any]:
    """The imgcls metadata of an exported ONNX file, decoded from its ``metadata_props``.

    Raises:
        ModelLoadError: the file is missing, not ONNX, or carries no imgcls metadata.
    """
    path = Path(model)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such ONNX file")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except _ORT_ERRORS as e:
        raise ModelLoadError(f"{path}: onnxruntime cannot load it ({str(e).strip()[:300]})") from e
    return metadata.decode(sess.get_modelmeta().custom_metadata_map, str(path))


# ----------------------------------------------------------------------------- inputs
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


# ----------------------------------------------------------------------------- the classifier
class OnnxClassifier:
    """An exported imgcls model in an onnxruntime session.

    Args:
        model: path of ``model.onnx`` / ``model.fp16.onnx``, or the serialised model bytes.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``tensorrt`` (see the module docstring).
        intra_op_threads: onnxruntime's intra-op threads (None: one per core). 1 is fastest
            for batch-1 latency.
        batch_size: largest batch sent to the session in one run; larger inputs are split.
        provider_options: per-provider option overrides, e.g.
            ``{"TensorrtExecutionProvider": {"trt_fp16_enable": "1"}}``.
        session_config: onnxruntime session config entries, e.g.
            ``{"session.intra_op.allow_spinning": "0"}`` where other processes share the cores.

    Raises:
        ModelLoadError: missing or damaged file, or no imgcls metadata.
        ProviderError: ``cuda`` / ``tensorrt`` asked for and that provider cannot load.
        ValueError: unknown ``device``.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        device: Device | str = "auto",
        *,
        intra_op_threads: int | None = None,
        batch_size: int = 1024,
        provider_options: Mapping[str, Mapping[str, Any]] | None = None,
        session_config: Mapping[str, str] | None = None,
    ) -> None:
        if device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.source = "<bytes>" if isinstance(model, bytes | bytearray) else str(model)
        if not isinstance(model, bytes | bytearray) and not Path(model).is_file():
            raise ModelLoadError(f"{model}: no such ONNX file (export one with `imgcls export`)")
        self._model = bytes(model) if isinstance(model, bytes | bytearray) else str(model)
        self._options = ort.SessionOptions()
        self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._options.log_severity_level = (
            3  # errors only; the provider actually used is reported by us
        )
        if intra_op_threads is not None:
            self._options.intra_op_num_threads = intra_op_threads
            self._options.inter_op_num_threads = 1
        for key, value in (session_config or {}).items():
            self._options.add_session_config_entry(key, value)
        self.batch_size = batch_size

        self.requested_device = device
        self.device = self._pick_device(device)
        if self.device == "cpu":
            self.session = self._session(["CPUExecutionProvider"])
        else:
            # TensorRT's optimisation profile needs the input name and shape: read them first.
            meta = (
                self._metadata_of(self._session(["CPUExecutionProvider"]))
                if self.device == "tensorrt"
                else None
            )
            self.session = self._gpu_session(self.device, provider_options, meta)
        self.metadata: dict[str, Any] = self._metadata_of(self.session)
        self._check_graph()

    # -------------------------------------------------------------- construction helpers
    def _session(self, providers: list[Any]) -> ort.InferenceSession:
        try:
            # The Python wrapper prints provider fall-backs on stdout: keep stdout for results.
            with contextlib.redirect_stdout(sys.stderr):
                return ort.InferenceSession(self._model, self._options, providers=providers)
        except _ORT_ERRORS as e:
            raise ModelLoadError(
                f"{self.source}: onnxruntime cannot load it ({str(e).strip()[:300]})"
            ) from e

    def _pick_device(self, device: str) -> str:
        if device != "auto":
            return device
        if "CUDAExecutionProvider" in ort.get_available_providers() and cuda_device_count() > 0:
            return "cuda"
        return "cpu"

    def _metadata_of(self, session: ort.InferenceSession) -> dict[str, Any]:
        return metadata.decode(session.get_modelmeta().custom_metadata_map, self.source)

    def _gpu_session(
        self,
        device: str,
        provider_options: Mapping[str, Mapping[str, Any]] | None,
        meta: dict[str, Any] | None,
    ) -> ort.InferenceSession:
        wanted = _EP[device]
        if wanted not in ort.get_available_providers():
            raise ProviderError(
                f"this onnxruntime build has no {wanted} (it has {ort.get_available_providers()}); "
                "install onnxruntime-gpu (and not the plain onnxruntime package beside it)"
            )
        _preload_cuda_libraries()
        input_name, chw = (
            ("pixels", (1, 28, 28))
            if meta is None
            else (meta["input"]["name"], meta["input"]["shape"][1:])
        )
        try:
            sess = self._session(_provider_list(device, provider_options, input_name, tuple(chw)))
        except ModelLoadError as e:
            if self.requested_device == "auto":
                return self._auto_fallback(f"{wanted} failed: {e}")
            raise ProviderError(
                f"{wanted} could not create a session for {self.source}: {e}"
            ) from e
        if sess.get_providers()[0] != wanted:
            if self.requested_device == "auto":
                return self._auto_fallback(f"{wanted} did not load")
            raise ProviderError(
                f"{wanted} could not be loaded (session providers: {sess.get_providers()}; "
                f"CUDA devices seen by the driver: {cuda_device_count()}). "
                "It needs an NVIDIA GPU and driver, CUDA 13 and cuDNN 9 (the nvidia-* wheels of "
                "torch's CUDA build, loaded by onnxruntime.preload_dlls()), and for TensorRT "
                "the TensorRT libraries on LD_LIBRARY_PATH; see the onnxruntime log above. "
                "Use --device cpu to run on the CPU."
            )
        return sess

    def _auto_fallback(self, why: str) -> ort.InferenceSession:
        warnings.warn(f"device auto: {why}; running on the CPU", RuntimeWarning, stacklevel=3)
        self.device = "cpu"
        return self._session(["CPUExecutionProvider"])

    def _check_graph(self) -> None:
        inputs = self.session.get_inputs()
        meta_in = self.metadata["input"]
        if len(inputs) != 1 or inputs[0].name != meta_in["name"]:
            raise ModelLoadError(
                f"{self.source}: graph inputs {[i.name for i in inputs]} do not match the metadata "
                f"({meta_in['name']!r})"
            )
        self.input_name: str = meta_in["name"]
        self.input_shape: tuple[int, int, int] = tuple(int(d) for d in meta_in["shape"][1:])  # type: ignore[assignment]
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        if self.output_names[:2] != ["logits", "probabilities"]:
            raise ModelLoadError(
                f"{self.source}: graph outputs {self.output_names}, expected logits, probabilities"
            )
        self.class_names: list[str] = list(self.metadata["class_names"])
        self._check_shapes(inputs[0].shape, self.session.get_outputs())

    def _check_shapes(self, graph_in: Sequence[Any], outputs: Sequence[Any]) -> None:
        """The metadata must describe the graph: a mismatch would feed the wrong pixels or
        name the wrong classes without any error at run time."""
        meta_shape = list(self.metadata["input"]["shape"])
        # Symbolic axes (the batch) are strings or None in the graph; only fixed sizes count.
        fixed = [(i, g) for i, g in enumerate(graph_in) if isinstance(g, int)]
        if len(graph_in) != len(meta_shape) or any(
            not isinstance(meta_shape[i], int) or meta_shape[i] != g for i, g in fixed
        ):
            raise ModelLoadError(
                f"{self.source}: its metadata says input shape {meta_shape} but the graph takes "
                f"{list(graph_in)}; the file was altered after export: export it again"
            )
        n = len(self.class_names)
        declared = self.metadata.get("num_classes", n)
        widths = {o.name: o.shape[-1] for o in outputs[:2] if o.shape}
        bad = {k: v for k, v in widths.items() if isinstance(v, int) and v != n}
        if declared != n or bad:
            raise ModelLoadError(
                f"{self.source}: its metadata names {n} classes (num_classes {declared}) but "
                f"the graph outputs {widths}; the file was altered after export: "
                "export it again"
            )

    # -------------------------------------------------------------- properties
    @property
    def providers_in_use(self) -> list[str]:
        """The session's providers, highest priority first (what actually runs the graph)."""
        return list(self.session.get_providers())

    # -------------------------------------------------------------- inputs
    def to_pixels(self, images: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """Check a batch and turn it into the model input (module function ``to_pixels``)."""
        return to_pixels(images, self.input_shape, self.input_name)

    # -------------------------------------------------------------- inference
    def run(self, images: np.ndarray | Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(logits, probabilities), each (N, num_classes) float32."""
        x = self.to_pixels(images)
        logits, probs = [], []
        step = (
            min(self.batch_size, TRT_PROFILE[2]) if self.device == "tensorrt" else self.batch_size
        )
        for i in range(0, len(x), step):
            lg, pr = self.session.run(
                ["logits", "probabilities"], {self.input_name: x[i : i + step]}
            )
            logits.append(lg)
            probs.append(pr)
        return np.concatenate(logits), np.concatenate(probs)

    def logits(self, images: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """Logits (N, num_classes) float32."""
        return self.run(images)[0]

    def predict(
        self, images: np.ndarray | Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predicted labels (N,) int64 and class probabilities (N, num_classes) float32.

        Raises:
            InputError: see ``to_pixels``.
        """
        probs = self.run(images)[1]
        return probs.argmax(axis=1).astype(np.int64), probs

    def __repr__(self) -> str:
        return (
            f"OnnxClassifier({self.source!r}, device={self.device!r}, "
            f"providers={self.providers_in_use}, input={self.input_name}{list(self.input_shape)})"
        )
