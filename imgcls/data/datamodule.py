"""LightningDataModules for MNIST and Fashion-MNIST, served from uint8 tensors in memory.

The IDX files come verified from ``imgcls.data.provision`` and are read by the deployment's
own reader (``imgcls.deploy.idx.read_idx``, numpy): one reader of the format for training,
``imgcls infer`` and the service, whose checks of the header and size a file meets wherever it
is read. The 60,000 training images are 47 MB of uint8: they stay a tensor (on the GPU when
training on one) and batches are built by indexing it, never by a PIL conversion per image.
Normalisation and the optional random shift run batched on the device in
``on_after_batch_transfer``.

Splits: a seeded, class-stratified validation set is drawn from the 60,000 training images;
``train_subset`` then draws a seeded, class-balanced subset of the rest. The official
10,000-image test set is never split and is served in its original order, each image once;
under DDP each process evaluates its own shard of it (``EvalShardSampler``), so every image
is counted exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from imgcls.data.provision import (
    check_data_root,
    ensure_dataset,
    fetch_command,
    get_spec,
    raw_dir,
    verify,
)
from imgcls.data.transforms import (
    normalize,
    random_affine,
    random_erase,
    random_hflip,
    random_shift,
)
from imgcls.deploy.idx import read_idx
from imgcls.errors import ConfigError, DataError, ImageFileError

__all__ = [
    "EvalShardSampler",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "MNISTDataModule",
    "TensorImageDataset",
]


class TensorImageDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Images (N, C, H, W) uint8 and labels (N,) int64, batched by tensor indexing.

    ``__getitems__`` lets the DataLoader fetch a whole batch with one index op; the
    collate function is then the identity (``collate_batch``).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        assert images.ndim == 4 and len(images) == len(labels)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.images.device)
        # index_select, not images[idx]: on a CPU it gathers a uint8 batch much faster than
        # fancy indexing does.
        return self.images.index_select(0, idx), self.labels.index_select(0, idx)

    def to(self, device: torch.device | str) -> TensorImageDataset:
        return TensorImageDataset(self.images.to(device), self.labels.to(device))


def collate_batch(batch: Any) -> Any:
    """Identity collate: ``TensorImageDataset.__getitems__`` already returns a batch."""
    return batch


class EvalShardSampler(DistributedSampler[int]):
    """Evaluation under DDP: process ``rank`` of ``num_replicas`` takes images ``rank``,
    ``rank + num_replicas``, ... in order, so every image is evaluated exactly once.

    torch's ``DistributedSampler`` pads the shards to one length by repeating images (or drops
    the tail), which would count some images twice (or never) in a test accuracy; here the
    shards differ in length by at most one. Safe for evaluation only: DDP's training steps need
    as many batches on every process. A ``DistributedSampler`` so that Lightning, which wraps a
    loader's sampler for DDP, keeps this one as it is.
    """

    def __init__(self, dataset: TensorImageDataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        n = len(dataset)
        if 0 < n < num_replicas:
            # A process with no batch at all would wait for the others at their first
            # collective and never return.
            raise ConfigError(
                f"{n} image(s) to evaluate on {num_replicas} processes: every process needs "
                "at least one; evaluate on fewer devices"
            )
        self.total_size = n
        self.num_samples = len(range(rank, n, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))


def _stratified_split(
    labels: np.ndarray, n_take: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Take ``n_take`` indices with class proportions kept (largest remainder).

    Returns:
        (taken, rest).
    """
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (n_take / len(labels))
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: n_take - quota.sum()]:
        quota[i] += 1
    taken = []
    for c, q in zip(classes, quota, strict=True):
        idx = np.flatnonzero(labels == c)
        taken.append(rng.permutation(idx)[:q])
    t = np.sort(np.concatenate(taken)) if taken else np.empty(0, dtype=int)
    rest = np.setdiff1d(np.arange(len(labels)), t, assume_unique=True)
    return t, rest


def _balanced_subset(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices with the same count per class (±1), seeded; indices into ``labels``."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.full(len(classes), n // len(classes))
    quota[rng.permutation(len(classes))[: n % len(classes)]] += 1
    # A class with too few images gives its shortfall to the others, so the total is exact.
    while (short := np.maximum(quota - counts, 0)).any():
        quota -= short
        room = np.flatnonzero(quota < counts)
        for i in rng.permutation(room)[: short.sum()]:
            quota[i] += 1
    parts = [
        rng.permutation(np.flatnonzero(labels == c))[:q]
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(parts))


class ImageDataModule(L.LightningDataModule):
    """Shared base of the data modules; subclasses set the facts of their data set (class-level
    for the IDX data sets, per instance for a folder of images, ``imgcls.data.folder``)."""

    dataset_name: str
    class_names: tuple[str, ...]
    mean: float  # of the training pixels in [0, 1] (MNIST's: all 60,000 training images)
    std: float
    image_shape: ClassVar[tuple[int, int, int]] = (1, 28, 28)

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int | float = 5000,
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
            data_dir: root holding ``MNIST/raw`` / ``FashionMNIST/raw``; default ``$IMGCLS_DATA``
                or ``~/.cache/imgcls/data``.
            batch_size: training batch size (per process under DDP).
            eval_batch_size: batch size for validation, test and predict.
            val_size: validation images taken from the 60,000 training images: a count, or a
                fraction in [0, 1). Stratified by class and seeded; 0 disables validation.
            train_subset: train on this many images (class-balanced, seeded) of the rest.
            seed: seed of the splits (not of training; that is ``seed_everything``).
            num_workers: DataLoader workers; 0 is fastest for in-memory tensors.
            shift_augment: random translation of training images by up to ±k pixels (0: off).
            hflip: random horizontal flips of training images (for Fashion-MNIST; not digits).
            random_erase: probability of erasing a random rectangle (2-33 % of the image, set to
                the mean pixel) of each training image (Zhong et al. 2017; 0: off).
            predict_dir: a folder of image files to predict on (default: the test set).
            keep_on_device: move the uint8 tensors to the GPU when training on one.
            rotate_augment: random rotation of training images by up to ±this many degrees
                about their centre (bilinear; 0: off). Digits take about 10; past ~45 a 6
                starts to look like a 9.
            scale_augment: random magnification of training images by a factor in
                [1 - s, 1 + s] about their centre (0: off; e.g. 0.1).
        """
        super().__init__()
        self.save_hyperparameters()
        from imgcls.data.provision import default_root

        self.data_dir = Path(data_dir).expanduser() if data_dir else default_root()
        check_data_root(self.data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.num_workers, self.shift_augment, self.hflip = (
            seed,
            num_workers,
            shift_augment,
            hflip,
        )
        self.predict_dir = Path(predict_dir) if predict_dir else None
        self.keep_on_device = keep_on_device
        self.random_erase = random_erase
        self.rotate_augment, self.scale_augment = rotate_augment, scale_augment
        self.train_total = self._train_pool_size()  # 60,000 for the IDX data sets
        self.n_val = self._resolve_val_size(val_size)
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError(
                f"batch_size and eval_batch_size must be >= 1, got {batch_size} / {eval_batch_size}"
            )
        if num_workers < 0:
            raise ConfigError(
                f"num_workers must be >= 0, got {num_workers}; 0 loads batches in the main "
                "process (fastest for these in-memory tensors)"
            )
        if shift_augment < 0:
            raise ConfigError(f"shift_augment must be >= 0 pixels, got {shift_augment}")
        if not 0.0 <= rotate_augment < 180.0:
            raise ConfigError(
                f"rotate_augment is a largest angle in degrees in [0, 180), got {rotate_augment}"
            )
        if not 0.0 <= scale_augment < 1.0:
            raise ConfigError(
                f"scale_augment is a largest relative change in [0, 1) (0.1: 90-110 %), "
                f"got {scale_augment}"
            )
        if not 0.0 <= random_erase <= 1.0:
            raise ConfigError(f"random_erase is a probability in [0, 1], got {random_erase}")
        pool = self.train_total - self.n_val
        if train_subset is not None and not 1 <= train_subset <= pool:
            raise ConfigError(
                f"train_subset={train_subset} is out of range: it must be between 1 and {pool} "
                f"({self.train_total} training images minus val_size={self.n_val})."
            )
        self.train_subset = train_subset
        self.train_set: TensorImageDataset | None = None
        self.val_set: TensorImageDataset | None = None
        self.test_set: TensorImageDataset | None = None
        self.predict_files: list[Path] = []

    # ------------------------------------------------------------------ facts for the model
    @classmethod
    def classes_of(cls, init_args: Mapping[str, Any]) -> tuple[str, ...] | None:
        """The class names a data module built with ``init_args`` would have, without loading
        any data (None: cannot tell). The IDX data sets' are fixed."""
        return getattr(cls, "class_names", None)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return self.image_shape[0]

    @property
    def image_size(self) -> int:
        return self.image_shape[1]

    def _train_pool_size(self) -> int:
        """How many images the validation split and ``train_subset`` draw from."""
        return get_spec(self.dataset_name).files[0].count

    def check_held_out(self, command: str) -> None:
        """Raise ``DataError`` when there is no held-out set to ``command`` on (the IDX data
        sets always have their official test set)."""

    def _resolve_val_size(self, val_size: int | float) -> int:
        if isinstance(val_size, float) and not isinstance(val_size, bool):
            if not 0.0 <= val_size < 1.0:
                raise ConfigError(f"val_size as a fraction must be in [0, 1), got {val_size}")
            return round(val_size * self.train_total)
        if not 0 <= int(val_size) < self.train_total:
            raise ConfigError(
                f"val_size must be between 0 and {self.train_total - 1} images, got {val_size}"
            )
        return int(val_size)

    # ------------------------------------------------------------------ loading
    def prepare_data(self) -> None:
        ensure_dataset(self.dataset_name, self.data_dir)

    def _read(self, path: Path, ndim: int) -> torch.Tensor:
        """An IDX file of uint8 values with ``ndim`` dimensions, as a tensor (no copy)."""
        fix = f"replace it, e.g. with: {fetch_command(self.dataset_name, self.data_dir)}"
        try:
            array = read_idx(path)
        except ImageFileError as e:
            raise DataError(f"{e}; {fix}") from e
        if array.dtype != np.uint8 or array.ndim != ndim:
            raise DataError(
                f"{path}: IDX file of {array.ndim}-D {array.dtype} values, expected {ndim}-D "
                f"uint8; the file does not belong to {self.dataset_name}: {fix}"
            )
        return torch.from_numpy(array)

    def _load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        verify(self.data_dir, self.dataset_name)  # cheap when the files were hashed before
        raw = raw_dir(self.data_dir, self.dataset_name)
        prefix = "train" if train else "t10k"
        images = self._read(raw / f"{prefix}-images-idx3-ubyte", 3)
        label_file = raw / f"{prefix}-labels-idx1-ubyte"
        labels = self._read(label_file, 1)
        if len(images) != len(labels):
            raise DataError(
                f"{label_file}: {len(labels)} labels for {len(images)} images; "
                f"replace it, e.g. with: {fetch_command(self.dataset_name, self.data_dir)}"
            )
        # A label outside the classes would pass the hash pinned for it and fail only deep in
        # training (an index error in the loss, or a device-side assert on a GPU).
        if len(labels) and int(labels.max()) >= self.num_classes:
            bad = labels >= self.num_classes
            raise DataError(
                f"{label_file}: {int(bad.sum())} label(s) outside the {self.num_classes} classes "
                f"0..{self.num_classes - 1} (first: {int(labels[bad][0])} at index "
                f"{int(bad.nonzero()[0, 0])}); the file does not belong to {self.dataset_name}: "
                f"replace it, e.g. with: {fetch_command(self.dataset_name, self.data_dir)}"
            )
        return images.unsqueeze(1).contiguous(), labels.long()  # (N, 1, 28, 28) uint8, (N,)

    def split_indices(self, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(train indices, val indices) into the 60,000 training images; seeded."""
        y = labels.numpy()
        rng = np.random.default_rng(self.seed)
        val, pool = _stratified_split(y, self.n_val, rng)
        if self.train_subset is not None:
            pool = pool[_balanced_subset(y[pool], self.train_subset, rng)]
        return pool, val

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and self.train_set is None:
            images, labels = self._load_split(train=True)
            tr, va = self.split_indices(labels)
            self.train_set = TensorImageDataset(images[tr], labels[tr])
            self.val_set = TensorImageDataset(images[va], labels[va])
        if stage in ("test", "predict", None) and self.test_set is None:
            self.test_set = TensorImageDataset(*self._load_split(train=False))
        if stage == "predict" and self.predict_dir is not None:
            self._load_predict_dir()
        device = self._target_device()
        if device is not None:
            for name in ("train_set", "val_set", "test_set"):
                ds = getattr(self, name)
                if ds is not None and ds.images.device != device:
                    setattr(self, name, ds.to(device))

    def _target_device(self) -> torch.device | None:
        trainer = getattr(self, "trainer", None)
        if not self.keep_on_device or self.num_workers > 0 or trainer is None:
            return None
        device = trainer.strategy.root_device
        return device if device.type == "cuda" else None

    def _load_predict_dir(self) -> None:
        # The runtime's decoder, so that predict sees the same pixels as `imgcls infer`.
        from imgcls.deploy.images import load_images
        from imgcls.errors import ImageFileError

        assert self.predict_dir is not None
        if not self.predict_dir.is_dir():
            raise DataError(f"predict_dir {self.predict_dir} does not exist or is not a folder")
        c, h, w = self.image_shape
        try:
            names, arrays = load_images([self.predict_dir], channels=c, size=(h, w))
        except ImageFileError as e:
            raise DataError(f"predict_dir: {e}") from e
        images = torch.from_numpy(arrays).contiguous()
        self.predict_files = [Path(n) for n in names]
        self.predict_set = TensorImageDataset(
            images, torch.full((len(names),), -1, dtype=torch.long)
        )

    # ------------------------------------------------------------------ loaders
    def _loader(
        self, ds: TensorImageDataset | None, batch_size: int, shuffle: bool, sampler: Any = None
    ) -> DataLoader:
        if ds is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        on_cpu = ds.images.device.type == "cpu"
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle if sampler is None else None,
            sampler=sampler,
            num_workers=self.num_workers if on_cpu else 0,
            collate_fn=collate_batch,
            pin_memory=on_cpu and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0 and on_cpu,
            drop_last=False,
        )

    def _eval_sampler(self, ds: TensorImageDataset | None) -> Any:
        """Under DDP, shard evaluation so that every image counts exactly once (no padding)."""
        trainer = getattr(self, "trainer", None)
        if ds is None or trainer is None or trainer.world_size <= 1:
            return None
        return EvalShardSampler(ds, num_replicas=trainer.world_size, rank=trainer.global_rank)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list[Any]:
        if self.n_val == 0:
            return []
        return self._loader(
            self.val_set, self.eval_batch_size, False, self._eval_sampler(self.val_set)
        )

    def test_dataloader(self) -> DataLoader:
        return self._loader(
            self.test_set, self.eval_batch_size, False, self._eval_sampler(self.test_set)
        )

    def predict_dataloader(self) -> DataLoader:
        ds = getattr(self, "predict_set", None) if self.predict_dir is not None else self.test_set
        return self._loader(ds, self.eval_batch_size, False, self._eval_sampler(ds))

    # ------------------------------------------------------------------ on-device transforms
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not isinstance(batch, tuple | list):  # e.g. the model summary's example input
            return batch
        x, y = batch
        trainer = getattr(self, "trainer", None)
        training = trainer is not None and trainer.training
        if training and self.hflip:
            x = random_hflip(x)
        if training and (self.rotate_augment or self.scale_augment):
            x = random_affine(x, self.rotate_augment, self.scale_augment)  # floats in [0, 1]
        if training and self.shift_augment:
            x = random_shift(x, self.shift_augment)
        x = normalize(x, self.mean, self.std)
        if training and self.random_erase:  # after normalising: the erased pixels become the mean
            x = random_erase(x, self.random_erase)
        return x, y

    def info(self) -> dict[str, Any]:
        """What a model needs to know of the data set (linked into ImageClassifier by the CLI)."""
        return {
            "dataset": self.dataset_name,
            "class_names": list(self.class_names),
            "mean": self.mean,
            "std": self.std,
            "image_shape": list(self.image_shape),
        }


class MNISTDataModule(ImageDataModule):
    """MNIST handwritten digits: 60,000 train / 10,000 test, 28×28 grey."""

    dataset_name = "mnist"
    class_names = tuple(str(i) for i in range(10))
    mean, std = 0.1307, 0.3081


class FashionMNISTDataModule(ImageDataModule):
    """Zalando's Fashion-MNIST: 60,000 train / 10,000 test, 28×28 grey, 10 clothing classes."""

    dataset_name = "fashion_mnist"
    class_names = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )
    mean, std = 0.2860, 0.3530
