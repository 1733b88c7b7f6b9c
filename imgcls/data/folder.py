"""Your own MNIST-like data: a folder of images per class.

Layout (``root``)::

    root/train/<class>/*.png   the training images of each class (required)
    root/val/<class>/...       the validation images (optional: else a seeded split of train/)
    root/test/<class>/...      the held-out test images (optional: without it ``imgcls test``
                               and the export's parity gate refuse to run)

Class names are the folder names of ``train/``, sorted by Python's ``sorted`` (code-point order:
``"10"`` before ``"2"``, upper case before lower case); class ``k`` is the k-th of them. ``val/``
and ``test/`` may leave a class out, never add one.

Every image goes through the deployment's decoder (``imgcls.deploy.images.decode_image``) with
the chosen framing, so the net trains on exactly the pixels ``imgcls infer``, the service and
the page feed it: grey, 1x28x28 uint8; an image already 28x28 is taken as it is. The decoded
tensors are cached in ``root/.imgcls-cache/`` (``$XDG_CACHE_HOME/imgcls/folders/`` when the
root is read-only), keyed by every file's path and content (sha256), the framing and the
decoder's version: the first run decodes, later runs load one file, and a changed, added or
removed image makes a new cache. From there on a folder trains on the same uint8 fast path as
MNIST (``ImageDataModule``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

import imgcls
from imgcls.data.datamodule import ImageDataModule, _balanced_subset
from imgcls.deploy.framing import PREPROCESS, framing_for
from imgcls.errors import ConfigError, DataError, ImageFileError
from imgcls.utils import atomic_path, sha256_file

__all__ = [
    "CACHE_FOLDER",
    "FOLDER_FRAMINGS",
    "FolderData",
    "FolderLayout",
    "ImageFolderDataModule",
    "load_folder",
    "scan_folder",
]

SPLITS = ("train", "val", "test")
# A folder is framed with the values, and the rule, of the deployment's --preprocess.
FOLDER_FRAMINGS = PREPROCESS
CACHE_FOLDER = ".imgcls-cache"
# What the cache holds depends on the decoder and the framing: a change to either that alters
# the pixels bumps this, so an old cache is never read as a new one.
DECODER_VERSION = 1
_CACHE_NAME = re.compile(r"^[0-9a-f]{64}\.pt$")


@dataclass(frozen=True)
class FolderLayout:
    """What ``scan_folder`` found: the classes (sorted) and each split's files with labels."""

    root: Path
    class_names: tuple[str, ...]
    files: dict[str, list[tuple[Path, int]]]  # split -> [(file, label)], absent split: no key

    def has(self, split: str) -> bool:
        return split in self.files

    def count(self, split: str) -> int:
        return len(self.files.get(split, []))


@dataclass
class FolderData:
    """The decoded images of each split present: uint8 (N, 1, 28, 28) and int64 (N,) labels."""

    images: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    mean: float
    std: float
    duplicates: int  # test images whose pixels equal a training (or validation) image's
    from_cache: bool
    cache_file: Path | None


def _split_classes(root: Path, split: str) -> dict[str, list[Path]] | None:
    folder = root / split
    if not folder.exists():
        return None
    if not folder.is_dir():
        raise DataError(f"{folder}: a file, not a folder; {split}/ holds one folder per class")
    classes: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            raise DataError(
                f"{entry}: a file directly in {split}/; put each image in the folder of its "
                f"class, {split}/<class>/"
            )
        files = sorted(p for p in entry.iterdir() if not p.name.startswith("."))
        nested = [p for p in files if p.is_dir()]
        if nested:
            raise DataError(
                f"{nested[0]}: a folder inside the class folder {split}/{entry.name}/; a class "
                "folder holds image files only (one level: <split>/<class>/<image>)"
            )
        if not files:
            raise DataError(
                f"{entry}: the class folder is empty; put the images of class {entry.name!r} "
                "in it, or remove it"
            )
        for f in files:
            if not f.exists():  # a symlink to nothing, or one that loops: stat follows it
                raise DataError(
                    f"{f}: a symlink to {os.readlink(f)!r}, which "
                    f"{'loops' if _loops(f) else 'does not exist'}; fix the link or remove it "
                    "(nothing was written)"
                )
        classes[entry.name] = files
    if not classes:
        raise DataError(
            f"{folder}: holds no class folders; put the images in {split}/<class>/"
            + ("" if split == "train" else f", or remove {split}/")
        )
    return classes


def _loops(link: Path) -> bool:
    try:
        link.stat()
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def scan_folder(root: str | os.PathLike[str]) -> FolderLayout:
    """The classes and files of a folder data set, checked before any image is read.

    Raises:
        DataError: no such folder, no ``train/``, fewer than two classes, an empty class folder,
            a file or folder out of place, a symlink to nothing (or one that loops), or a class
            in ``val/`` or ``test/`` that ``train/`` lacks.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "a file" if root.exists() else "no such folder"
        raise DataError(
            f"root {root}: {what}; pass the folder that holds train/<class>/ (and optionally "
            "val/<class>/, test/<class>/)"
        )
    found = {split: _split_classes(root, split) for split in SPLITS}
    train = found["train"]
    if train is None:
        raise DataError(
            f"{root}: no train/ folder; a folder data set holds train/<class>/ with the images "
            "of each class (and optionally val/<class>/ and test/<class>/)"
        )
    class_names = tuple(sorted(train))
    if len(class_names) < 2:
        raise DataError(
            f"{root / 'train'}: one class only ({class_names[0]!r}); a classifier needs at "
            "least two class folders in train/"
        )
    for split in ("val", "test"):
        extra = sorted(set(found[split] or ()) - set(class_names))
        if extra:
            raise DataError(
                f"{root / split}: class folder(s) {', '.join(extra)} not in train/ "
                f"({', '.join(class_names)}); a model cannot learn a class it never trains "
                "on: add its images to train/, or rename or remove the folder"
            )
    label = {name: k for k, name in enumerate(class_names)}
    files = {
        split: [(f, label[name]) for name in sorted(classes) for f in classes[name]]
        for split, classes in found.items()
        if classes is not None
    }
    return FolderLayout(root, class_names, files)


def resolve_framing(framing: str) -> str:
    """The framing ``framing`` means for a folder: the deployment's rule (``framing_for``) for
    a data set that is not Fashion-MNIST, so ``auto`` is ``mnist`` (strokes on paper)."""
    if framing not in FOLDER_FRAMINGS:
        raise ConfigError(f"framing must be one of {', '.join(FOLDER_FRAMINGS)}, got {framing!r}")
    return framing_for(framing, "folder")


def cache_key(layout: FolderLayout, framing: str) -> str:
    """sha256 of every file's relative path and content, the framing, the decoder's version and
    imgcls's: any change to one makes another key. Contents, not sizes and times: a file
    replaced by another of the same size with its time put back is still seen."""
    entries = []
    for split in SPLITS:
        for f, label in layout.files.get(split, []):
            try:
                digest = sha256_file(f)
            except OSError as e:  # unreadable (permissions), or gone since the scan
                raise DataError(
                    f"{f}: cannot be read ({e.strerror or e}); fix its permissions or remove it "
                    "(nothing was written)"
                ) from e
            entries.append([str(f.relative_to(layout.root)), label, digest])
    blob = json.dumps(
        {
            "files": entries,
            "classes": list(layout.class_names),
            "framing": framing,
            "decoder": DECODER_VERSION,
            "imgcls": imgcls.__version__,
            "shape": list(ImageFolderDataModule.image_shape),
        },
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_folders(root: Path) -> list[Path]:
    """Where a root's cache may be: in the root, then under ``$XDG_CACHE_HOME`` (for a root
    that cannot be written)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return [root / CACHE_FOLDER, base / "imgcls" / "folders" / f"{root.name}-{digest}"]


def _writable(folder: Path) -> bool:
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def _decode_split(files: list[tuple[Path, int]], framing: str, where: Path) -> np.ndarray:
    """(N, 1, 28, 28) uint8 through the deployment's decoder; every unreadable file is counted
    and the first one named, before anything is written."""
    from imgcls.deploy.images import decode_file

    c, h, w = ImageFolderDataModule.image_shape
    out = np.empty((len(files), c, h, w), dtype=np.uint8)
    bad: list[ImageFileError] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, (f, _) in enumerate(files):
            try:
                out[i] = decode_file(f, channels=c, size=(h, w), preprocess=framing)
            except ImageFileError as e:
                bad.append(e)
    if bad:
        raise DataError(
            f"{bad[0]}; {len(bad)} of the {len(files)} files in {where} are not readable images "
            f"({len(files) - len(bad)} are good): fix or remove them (nothing was written)"
        )
    # The decoder's own warnings (an image squashed by framing none, an animation's first
    # frame) once for the whole folder, not once per image.
    said = [str(m.message) for m in caught if issubclass(m.category, UserWarning)]
    if said:
        kinds = Counter(re.sub(r"^.*?: ", "", text).split(" ")[0] for text in said)
        warnings.warn(
            f"{where}: {len(said)} of {len(files)} images warned while decoding "
            f"({', '.join(f'{n} {k}' for k, n in kinds.items())}); the first: {said[0]}",
            stacklevel=3,
        )
    return out


def _count_duplicates(test: np.ndarray, seen: list[np.ndarray]) -> int:
    """How many test images have exactly the pixels of an image in ``seen``."""
    if not len(test):
        return 0
    known = {bytes(a.tobytes()) for part in seen for a in part}
    return sum(a.tobytes() in known for a in test)


def _read_cache(path: Path, key: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged or foreign file: decode again, it is only a cache
        return None
    if not isinstance(blob, dict) or blob.get("key") != key:
        return None
    return blob


def _write_cache(folder: Path, key: str, blob: dict[str, Any]) -> Path | None:
    """Write ``<folder>/<key>.pt`` atomically and drop the root's older caches; None (with a
    warning) when it cannot be written: training goes on, the next run decodes again."""
    path = folder / f"{key}.pt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)
    except OSError as e:
        warnings.warn(
            f"{path}: could not write the decoded images' cache ({e}); the next run decodes "
            "them again",
            stacklevel=3,
        )
        return None
    for old in folder.iterdir():
        if old.name != path.name and _CACHE_NAME.match(old.name):
            with contextlib.suppress(OSError):
                old.unlink()
    return path


def load_folder(layout: FolderLayout, framing: str) -> FolderData:
    """The decoded splits of ``layout``, from the cache when it is current, else decoded (and
    cached). ``framing`` is resolved (``mnist``, ``fashion_mnist`` or ``none``).

    Raises:
        DataError: a file that is not a readable image (named, with the count of good ones).
    """
    key = cache_key(layout, framing)
    folders = cache_folders(layout.root)
    for folder in folders:
        blob = _read_cache(folder / f"{key}.pt", key)
        if blob is not None:
            return _folder_data(blob, True, folder / f"{key}.pt")
    images: dict[str, torch.Tensor] = {}
    labels: dict[str, torch.Tensor] = {}
    for split, files in layout.files.items():
        arr = _decode_split(files, framing, layout.root / split)
        images[split] = torch.from_numpy(arr)
        labels[split] = torch.tensor([k for _, k in files], dtype=torch.long)
    train = images["train"].double() / 255.0
    seen = [images[s].numpy() for s in ("train", "val") if s in images]
    blob = {
        "key": key,
        "class_names": list(layout.class_names),
        "framing": framing,
        "images": images,
        "labels": labels,
        "mean": float(train.mean()),
        "std": float(train.std()),
        "duplicates": _count_duplicates(images["test"].numpy(), seen) if "test" in images else 0,
    }
    target = next((f for f in folders if _writable(f)), None)
    written = _write_cache(target, key, blob) if target is not None else None
    return _folder_data(blob, False, written)


def _folder_data(blob: dict[str, Any], from_cache: bool, path: Path | None) -> FolderData:
    return FolderData(
        images=dict(blob["images"]),
        labels=dict(blob["labels"]),
        mean=float(blob["mean"]),
        std=float(blob["std"]),
        duplicates=int(blob["duplicates"]),
        from_cache=from_cache,
        cache_file=path,
    )


class ImageFolderDataModule(ImageDataModule):
    """Images in ``root/train/<class>/`` (and ``root/val/``, ``root/test/`` when present), grey
    1x28x28 like MNIST's, with the folder's classes; see the module's docstring for the layout.

    Everything else (the seeded stratified validation split when there is no ``val/``,
    ``train_subset``, the augmentations, normalisation on the device) is ``ImageDataModule``'s.
    """

    dataset_name = "folder"

    def __init__(
        self,
        root: str,
        framing: Literal["auto", "mnist", "fashion_mnist", "none"] = "auto",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int | float = 0.1,
        train_subset: int | None = None,
        seed: int = 42,
        num_workers: int = 0,
        shift_augment: int = 0,
        hflip: bool = False,
        random_erase: float = 0.0,
        predict_dir: str | None = None,
        keep_on_device: bool = True,
        rotate_augment: float = 0.0,
        scale_augment: float = 0.0,
    ) -> None:
        """
        Args:
            root: the folder holding ``train/<class>/`` (and optionally ``val/<class>/`` and
                ``test/<class>/``) with the image files (PNG, JPEG, anything Pillow reads).
            framing: how an image that is not 28x28 becomes the net's input, as the deployment
                frames it: ``mnist`` (strokes on paper: the ink's box scaled to 20x20 and
                centred, as MNIST's digits), ``fashion_mnist`` (an object trimmed and scaled, as
                Fashion-MNIST's), ``none`` (squashed to 28x28, with a warning). ``auto`` is
                ``mnist``. The export records the framing in the model's metadata, so
                ``--preprocess auto`` of ``imgcls infer`` and the service frames other images
                as the training images were. A 28x28 image is taken as it is.
            val_size: with no ``val/`` folder, the validation images taken from ``train/``: a
                count, or a fraction in [0, 1) (stratified by class, seeded); a fraction that
                rounds to no image takes one (with a warning), and a split that would leave a
                class no training image is refused; 0: no validation. Ignored when ``val/``
                exists (its images are the validation set).
            batch_size, eval_batch_size, train_subset, seed, num_workers, shift_augment, hflip,
                random_erase, predict_dir, keep_on_device, rotate_augment, scale_augment: as
                ``ImageDataModule``'s.
        """
        self.framing = resolve_framing(framing)
        self._val_rounded_up = False
        self.layout = scan_folder(root)
        self.root = self.layout.root.resolve()
        self.class_names = self.layout.class_names
        super().__init__(
            data_dir=str(self.root),
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            val_size=val_size,
            train_subset=train_subset,
            seed=seed,
            num_workers=num_workers,
            shift_augment=shift_augment,
            hflip=hflip,
            random_erase=random_erase,
            predict_dir=predict_dir,
            keep_on_device=keep_on_device,
            rotate_augment=rotate_augment,
            scale_augment=scale_augment,
        )
        # An absolute root, so that the export finds the held-out set from another folder.
        self.hparams["root"] = str(self.root)
        self._check_split()  # before any image is decoded
        if self._val_rounded_up:
            warnings.warn(
                f"{self.root / 'train'}: val_size={val_size} of {self.train_total} images rounds "
                "to 0; 1 image is taken for validation instead (add a val/ folder, or pass "
                "val_size 0 to train without validation)",
                stacklevel=2,
            )
        self.decoded = load_folder(self.layout, self.framing)
        self.mean, self.std = self.decoded.mean, self.decoded.std
        if self.decoded.duplicates:
            warnings.warn(
                f"{self.root / 'test'}: {self.decoded.duplicates} test image(s) have the same "
                "pixels as a training or validation image; test accuracy on them is not "
                "held-out accuracy: remove them from one side",
                stacklevel=2,
            )

    @classmethod
    def classes_of(cls, init_args: Mapping[str, Any]) -> tuple[str, ...] | None:
        """The class folders of ``init_args["root"]``'s ``train/`` (``scan_folder``: no image
        is read).

        Raises:
            DataError: the folder is not a folder data set (as ``__init__`` would).
        """
        root = init_args.get("root")
        return scan_folder(root).class_names if root else None

    # ------------------------------------------------------------------ the base's hooks
    def _train_pool_size(self) -> int:
        """Images the split draws from: ``train/``, then ``val/`` when present."""
        return self.layout.count("train") + self.layout.count("val")

    def _resolve_val_size(self, val_size: int | float) -> int:
        if self.layout.has("val"):
            return self.layout.count("val")
        n = super()._resolve_val_size(val_size)
        # A fraction of a few images rounds to none: no validation, so no best.ckpt. One image
        # is taken instead (``__init__`` warns once the split is known to be possible).
        self._val_rounded_up = n == 0 and bool(val_size)
        return 1 if self._val_rounded_up else n

    def _check_split(self) -> None:
        """Every class keeps a training image after the validation split takes its share."""
        if self.layout.has("val") or not self.n_val:
            return
        labels = torch.tensor([k for _, k in self.layout.files["train"]], dtype=torch.long)
        pool, _ = self.split_indices(labels)
        left = np.bincount(labels.numpy()[pool], minlength=len(self.class_names))
        if left.min() == 0:
            k = int(left.argmin())
            name, have = self.class_names[k], int((labels == k).sum())
            raise DataError(
                f"{self.layout.root / 'train' / name}: {have} image(s), and the validation "
                f"split ({self.n_val} of {self.train_total} images, val_size) takes all of them, "
                "leaving none to train on. Without a val/ folder each class needs at least 2 "
                "images (one to train on, one to validate): add images, add val/<class>/ "
                "folders, or pass --data.init_args.val_size 0 to train without validation "
                "(then last.ckpt only, no best.ckpt)"
            )

    def prepare_data(self) -> None:
        """Nothing to fetch: the images were decoded (or read from the cache) in ``__init__``."""

    def has_held_out(self) -> bool:
        return self.layout.has("test")

    def check_held_out(self, command: str) -> None:
        """Refuse ``command`` (test, predict, export) when the folder has no ``test/``.

        Raises:
            DataError: no ``test/`` folder.
        """
        if not self.has_held_out():
            raise DataError(
                f"{self.root}: no test/ folder, so there is no held-out set to {command} on "
                "(imgcls does not evaluate on the images it trained on); add "
                f"{self.root / 'test'}/<class>/ with images the model never saw"
            )

    def _load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if not train:
            self.check_held_out("test")
            return self.decoded.images["test"], self.decoded.labels["test"]
        splits = [s for s in ("train", "val") if s in self.decoded.images]
        return (
            torch.cat([self.decoded.images[s] for s in splits]),
            torch.cat([self.decoded.labels[s] for s in splits]),
        )

    def split_indices(self, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(train indices, val indices); with ``val/``, the validation set is its images (after
        ``train/``'s in ``_load_split``) and ``train_subset`` draws from ``train/``'s."""
        if not self.layout.has("val"):
            return super().split_indices(labels)
        n_train = self.layout.count("train")
        pool, val = np.arange(n_train), np.arange(n_train, len(labels))
        if self.train_subset is not None:
            rng = np.random.default_rng(self.seed)
            pool = pool[_balanced_subset(labels.numpy()[:n_train], self.train_subset, rng)]
        return pool, val

    def info(self) -> dict[str, Any]:
        return {**super().info(), "root": str(self.root), "framing": self.framing}
