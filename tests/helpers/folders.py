"""Folder data sets for the tests: images written as PNG files, one folder per class."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_split(
    root: Path,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    start: int = 0,
) -> list[Path]:
    """``images`` (N, 28, 28) or (N, 1, 28, 28) uint8 as ``root/<split>/<class>/<i>.png``
    (``i`` from ``start``, zero-padded so that name order is the images' order); the paths."""
    from PIL import Image

    images = np.asarray(images, dtype=np.uint8).reshape(len(images), *np.shape(images)[-2:])
    written = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / split / class_names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{start + i:06d}.png"
        Image.fromarray(image, mode="L").save(path)
        written.append(path)
    return written


def write_folder_dataset(
    root: Path,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    class_names: Sequence[str],
) -> Path:
    """``{split: (images, labels)}`` as a folder data set under ``root``; returns ``root``."""
    for split, (images, labels) in splits.items():
        write_split(root, split, images, labels, class_names)
    return root


def stripes(n: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Small learnable images: class k is a bright horizontal bar at row 3 + 5k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, k in enumerate(labels):
        images[i, 3 + 5 * k : 6 + 5 * k, 4:24] = 255
    return images, labels
