"""Image files into model-sized uint8 batches: ``decode_image`` (one file or upload) and
``load_images`` (files, folders of them and IDX files).

Colour images become greyscale; other sizes are framed like the training images
(``imgcls.deploy.framing``) or resized with a warning. In a transparent image the alpha channel
is the ink, composited white-on-black; an animated image is read as its first frame, with a
warning. An image that declares more than ``MAX_PIXELS`` pixels is refused before decoding
(``ImageTooLargeError``). Of an image given as bytes (an upload), a PNG's metadata chunks are
dropped unread and a JPEG of more than ``MAX_JPEG_SCANS`` scans is refused
(``imgcls.deploy.image_costs``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.deploy.framing import FRAMINGS, framing_for
from imgcls.deploy.idx import is_idx_file, read_idx
from imgcls.deploy.image_costs import MAX_JPEG_SCANS, jpeg_scans, pixel_chunks
from imgcls.errors import ImageFileError, ImageTooLargeError, ImgclsError

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "decode_file", "decode_image", "load_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# A photo from a phone is 12-50 megapixels; a PNG that declares more is refused before decoding
# (Pillow's own bomb guard only warns below 179 megapixels).
MAX_PIXELS = 64_000_000
# A model's input is 28x28 (or so): an image whose longest side is over twice this is reduced by
# an integer factor (area average) to a longest side of at least this before it is framed, so
# that the framing's float copies stay a few megabytes (a 20x20 digit box shows no difference).
WORK_SIDE = 1024
_STRIP_PIXELS = 1 << 20  # source pixels converted and reduced at a time


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


def _to_8bit(a: np.ndarray, mode: str) -> np.ndarray:
    """A greyscale image of more than 8 bits (Pillow's I;16, I;16B, I or F) -> uint8, scaled by
    the range its mode spans, not clipped: I;16 and integers within 0..65535 are divided by 257
    (65535 -> 255), integers within 0..255 kept, floats within [0, 1] multiplied by 255; any
    other range (negative values, 32-bit counts) is stretched from its minimum to its maximum.
    """
    g = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(g.min()), float(g.max())) if g.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        g = g * (255.0 / 65535.0)
    elif mode == "F" and lo >= 0.0 and hi <= 1.0:
        g = g * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        pass
    elif lo >= 0.0 and hi <= 65535.0:
        g = g * (255.0 / 65535.0)
    else:
        g = (g - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)


def _working_mode(im: Any) -> str:
    """The mode an image is reduced and read in: one that ``Image.reduce`` averages correctly.

    Anything transparent becomes RGBA (``reduce`` averages it premultiplied, so what is composited
    later is the area average of what would have been composited at full size), more than 8 bits
    of grey becomes I (32-bit, nothing clipped), 1-bit becomes L, palettes and other colour
    spaces RGB.
    """
    mode = str(im.mode)
    if _has_alpha(im):
        return "RGBA"
    if mode in ("L", "RGB", "I", "F"):
        return mode
    if mode.startswith("I;16"):
        return "I"
    if mode == "1":
        return "L"
    return "RGB"


def _reduction(width: int, height: int, size: tuple[int, int]) -> int:
    """The integer factor an image of width x height is reduced by before anything else is done
    with it: as large as keeps its longest side at least ``WORK_SIDE`` and both sides at least the
    asked ``size``; 1 for an image that is not much larger than that."""
    h, w = size
    return max(1, min(max(width, height) // max(WORK_SIDE, 1), width // w, height // h))


def _working_image(src: Any, size: tuple[int, int]) -> Any:
    """The decoded image in its working mode (``_working_mode``), reduced by ``_reduction``.

    A JPEG much larger than needed is decoded at 1/2, 1/4 or 1/8 scale (``Image.draft``). Other
    formats are decoded whole (at most ``MAX_PIXELS`` pixels, 1 byte a pixel for grey, 2 for
    16-bit, 4 for colour), then converted and reduced in strips of at most ``_STRIP_PIXELS``
    pixels, so that no full-size copy (a float, RGBA or converted one) is ever made.
    """
    from PIL import Image

    mode = _working_mode(src)
    k = _reduction(src.width, src.height, size)
    if k > 1 and src.format == "JPEG":
        src.draft(src.mode, (-(-src.width // k), -(-src.height // k)))
        k = _reduction(src.width, src.height, size)
    src.load()
    if k == 1:
        return src.convert(mode) if src.mode != mode else src.copy()
    width, height = src.width // k, src.height // k
    out = Image.new(mode, (width, height))
    rows = max(1, _STRIP_PIXELS // (src.width * k))  # output rows per strip
    for y in range(0, height, rows):
        n = min(rows, height - y)
        strip = src.crop((0, y * k, width * k, (y + n) * k))
        if strip.mode != mode:
            strip = strip.convert(mode)
        out.paste(strip.reduce(k), (0, y))
    return out


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
        ImageFileError: not a readable image.
        ImageTooLargeError: it declares more than ``max_pixels`` pixels (refused before its
            pixels are decoded), Pillow refuses it as a decompression bomb, or (bytes) it is a
            JPEG of more than ``MAX_JPEG_SCANS`` scans.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    label = name or ("<bytes>" if isinstance(source, bytes | bytearray) else str(source))
    framing = framing_for(preprocess, dataset)
    h, w = size
    if isinstance(source, bytes | bytearray):
        # what a body costs to decode is bounded by its pixels, not by its metadata or scans
        source = pixel_chunks(bytes(source))
        scans = jpeg_scans(source)
        if scans > MAX_JPEG_SCANS:
            raise ImageTooLargeError(
                f"{label}: refused, a JPEG of {scans:,} scans (more than {MAX_JPEG_SCANS}; an "
                "ordinary one has 1 to about 10), each of which makes the decoder go over the "
                "whole image again; save it again as an ordinary JPEG or a PNG"
            )
    opened = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    try:
        with Image.open(opened) as src:
            if src.width * src.height > max_pixels:
                raise ImageTooLargeError(
                    f"{label}: refused, it declares {src.width}x{src.height} pixels, more than "
                    f"the {max_pixels:,} allowed; shrink the image or check where it came from"
                )
            frames = int(getattr(src, "n_frames", 1))
            if frames > 1:
                warnings.warn(
                    f"{label}: animated ({frames} frames); only the first frame is used",
                    stacklevel=3,
                )
            declared = f"{src.width}x{src.height}"
            source_mode = str(src.mode)
            work = _working_image(src, size)
        if work.mode in ("I", "F"):  # more than 8 bits of grey: scaled, not clipped
            work = Image.fromarray(_to_8bit(np.asarray(work), source_mode))
        ink = _composite_alpha(work, channels) if _has_alpha(work) else None
        if ink is not None:
            im = Image.fromarray(ink[..., 0] if channels == 1 else ink)
        else:
            im = work.convert("L" if channels == 1 else "RGB")  # colour -> ITU-R 601 luma
        if im.size == (w, h):
            arr = np.asarray(im, dtype=np.uint8).reshape(h, w, channels)
        elif framing != "none" and channels == 1 and h == w:
            arr = FRAMINGS[framing](np.asarray(im, dtype=np.uint8), h)[..., None]
        else:
            warnings.warn(
                f"{label}: resized from {declared} to {w}x{h} (the model's input size)",
                stacklevel=3,
            )
            im = im.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8).reshape(h, w, channels)
    except ImgclsError:
        raise  # ours, already saying what was wrong (an ImageFileError is a ValueError too)
    except (MemoryError, Warning):
        raise  # not the file's fault (a Warning is raised only where warnings are made errors)
    except Image.DecompressionBombError as e:
        # Pillow refuses to decode it (a small file that would expand to gigabytes).
        raise ImageTooLargeError(
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
    except Exception as e:
        # A malformed GIF or TIFF makes Pillow's plug-ins fail in many ways (IndexError,
        # KeyError, TypeError, struct.error, ...): each is a damaged file, not a bug of ours.
        raise ImageFileError(
            f"{label}: not a readable image file (damaged: {type(e).__name__}: {e})"
        ) from e
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def decode_file(path: str | os.PathLike[str], **opts: Any) -> np.ndarray:
    """``decode_image`` of a file, whose warnings all name it: Pillow's own ("Truncated File
    Read", "Corrupt EXIF data", ...) say nothing of which file, and a folder of images would
    leave the reader guessing. Each distinct message once per file, in order; the caller's
    warning filters then apply as usual. Not for threads (``warnings.catch_warnings`` is
    process-wide): the service calls ``decode_image``."""
    label = str(path)
    seen: dict[tuple[str, type[Warning]], None] = {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            return decode_image(path, **opts)
    finally:
        for w in caught:
            text = str(w.message)
            seen.setdefault(
                (text if text.startswith(f"{label}: ") else f"{label}: {text}", w.category)
            )
        for text, category in seen:
            warnings.warn(text, category, stacklevel=2)


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
                    image = decode_file(f, **opts)
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
            if path.suffix.lower() not in IMAGE_SUFFIXES and is_idx_file(path):
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
                batches.append(decode_file(path, **opts)[None])
        else:
            raise ImageFileError(f"{path}: no such file or folder")
    if not batches:
        raise ImageFileError("no inputs given")
    return names, np.concatenate(batches)
