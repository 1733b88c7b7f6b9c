"""A folder of PNG files against the built-in MNIST module: the same images, the same training.

MNIST's training images are written once as PNG files, ``train/<digit>/<index>.png``, into a
folder under ``--workdir`` (kept between runs). Then, in ONE run on ONE machine, with the same
net (LeNet-5), batch size, optimiser and epochs:

  folder, first run   ``ImageFolderDataModule`` with no cache: every PNG through the
                      deployment's decoder, the tensors cached (setup seconds), then epochs;
  folder, cached      the same module again: the cache read (setup seconds), then epochs;
  mnist               ``MNISTDataModule`` on the IDX files: setup seconds, then epochs.

Seconds per training epoch exclude validation and checkpointing (``EpochTimer``); the first
epoch of each is a warm-up and is printed apart. Each later-epoch figure is the fastest (noise
only slows an epoch down), with the median beside it. The ratio printed is folder (cached) /
mnist, of the fastest later epochs measured in this run (target <= 1.1).

    python benchmarks/folder_speed.py           # all 60,000 training images, 3 epochs each
    python benchmarks/folder_speed.py --quick   # smoke test: 2,000 images, 2 epochs each
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imgcls.data import ImageFolderDataModule, MNISTDataModule  # noqa: E402
from imgcls.data.datamodule import ImageDataModule, TensorImageDataset  # noqa: E402
from imgcls.data.folder import CACHE_FOLDER  # noqa: E402
from imgcls.data.provision import default_root, ensure_dataset  # noqa: E402
from imgcls.deploy.idx import read_idx  # noqa: E402
from imgcls.training.callbacks import EpochTimer  # noqa: E402
from imgcls.training.lightning_module import ImageClassifier  # noqa: E402


def write_pngs(data_dir: Path, n: int, folder: Path) -> Path:
    """``n`` MNIST training images (all 60,000, or the class-balanced subset that the MNIST
    module's ``train_subset`` takes) as PNG files under ``folder`` (once: a marker file
    says the folder is complete)."""
    from PIL import Image

    done = folder / "COMPLETE"
    if done.is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    raw = data_dir / "MNIST" / "raw"
    images = read_idx(raw / "train-images-idx3-ubyte")
    labels = read_idx(raw / "train-labels-idx1-ubyte")
    if n < len(labels):  # the images MNISTDataModule's train_subset=n takes
        mnist = MNISTDataModule(data_dir=str(data_dir), val_size=0, train_subset=n)
        take, _ = mnist.split_indices(torch.from_numpy(labels.astype(np.int64)))
        images, labels = images[take], labels[take]
    t0 = time.perf_counter()
    for k in range(10):
        (folder / "train" / str(k)).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image, mode="L").save(folder / "train" / str(int(label)) / f"{i:05d}.png")
    done.write_text(f"{n} images\n")
    print(f"wrote {n:,} PNG files to {folder} in {time.perf_counter() - t0:.1f} s", flush=True)
    return folder


def _fingerprint(ds: TensorImageDataset) -> list[bytes]:
    """The sorted digests of (pixels, label) of every image: equal for the same images."""
    images, labels = ds.images.cpu().numpy(), ds.labels.cpu().numpy()
    return sorted(
        hashlib.sha1(image.tobytes() + bytes([int(label)])).digest()
        for image, label in zip(images, labels, strict=True)
    )


def train(dm: ImageDataModule, epochs: int, batch: int) -> list[float]:
    """Epoch seconds of LeNet-5 trained on ``dm`` (no validation, no checkpoints)."""
    L.seed_everything(0, verbose=False)
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    model = ImageClassifier(
        net="lenet5",
        num_classes=dm.num_classes,
        dataset=dm.dataset_name,
        class_names=list(dm.class_names),
        mean=dm.mean,
        std=dm.std,
    )
    trainer.fit(model, dm)
    return timer.epoch_seconds


def timed(make: type[ImageDataModule], **kwargs: object) -> tuple[ImageDataModule, float]:
    """A data module built and set up for fit, and the seconds that took."""
    t0 = time.perf_counter()
    dm = make(**kwargs)  # type: ignore[arg-type]
    dm.setup("fit")
    return dm, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2,000 images, 2 epochs (smoke test)")
    p.add_argument("--data_dir", default=None, help="MNIST's data root (default: the usual)")
    p.add_argument(
        "--workdir",
        default=str(Path.home() / ".cache" / "imgcls" / "bench"),
        help="where the PNG folder is written (kept between runs)",
    )
    p.add_argument("--epochs", type=int, default=None, help="epochs per module (default 3)")
    p.add_argument("--batch_size", type=int, default=128)
    args = p.parse_args()
    n = 2000 if args.quick else 60000
    epochs = args.epochs or (2 if args.quick else 3)
    data_dir = Path(args.data_dir) if args.data_dir else default_root()
    ensure_dataset("mnist", data_dir)
    folder = write_pngs(data_dir, n, Path(args.workdir) / f"mnist-png-{n}")
    shutil.rmtree(folder / CACHE_FOLDER, ignore_errors=True)  # the first run decodes

    opts = {"val_size": 0, "batch_size": args.batch_size}
    first, first_setup = timed(ImageFolderDataModule, root=str(folder), framing="none", **opts)
    first_epochs = train(first, epochs, args.batch_size)
    cached, cached_setup = timed(ImageFolderDataModule, root=str(folder), framing="none", **opts)
    assert isinstance(cached, ImageFolderDataModule) and cached.decoded.from_cache
    cached_epochs = train(cached, epochs, args.batch_size)
    subset = None if n == 60000 else n
    mnist, mnist_setup = timed(MNISTDataModule, data_dir=str(data_dir), train_subset=subset, **opts)
    mnist_epochs = train(mnist, epochs, args.batch_size)
    assert first.train_set is not None and mnist.train_set is not None
    same = _fingerprint(first.train_set) == _fingerprint(mnist.train_set)

    print(f"\n{n:,} MNIST training images, LeNet-5, batch {args.batch_size}, {epochs} epochs, CPU")
    print(f"same images and labels in both modules (in another order): {same}\n")
    print("| data module | setup s | first epoch s | later epochs s (best / median) | images/s |")
    print("|---|---|---|---|---|")
    rows = [
        ("folder, first run (decode + cache)", first_setup, first_epochs),
        ("folder, cached", cached_setup, cached_epochs),
        ("mnist (IDX)", mnist_setup, mnist_epochs),
    ]
    best = {}
    for name, setup, times in rows:
        later = times[1:] or times
        best[name] = min(later)
        print(
            f"| {name} | {setup:.3f} | {times[0]:.3f} | {min(later):.3f} / "
            f"{statistics.median(later):.3f} | {n / min(later):,.0f} |"
        )
    ratio = best["folder, cached"] / best["mnist (IDX)"]
    print(f"\nlater epochs, folder (cached) / mnist = {ratio:.3f} (target <= 1.1)")
    print(
        f"first run, folder (decode + cache + first epoch) = "
        f"{first_setup + first_epochs[0]:.1f} s; mnist (setup + first epoch) = "
        f"{mnist_setup + mnist_epochs[0]:.1f} s"
    )


if __name__ == "__main__":
    main()
