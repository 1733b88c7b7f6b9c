"""Shared fixtures: small generated IDX files, the real data when present, and a short-trained
checkpoint on real MNIST that the export / insight tests start from.

Every run is shrunk here (CPU, few batches, no W&B unless a test asks for it), after the
lightning-hydra-template's conftest.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgcls.data.provision import DATASETS, default_root, is_verified

ROOT = Path(__file__).resolve().parents[1]
CONFIGS_DIR = ROOT / "configs"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)


# ----------------------------------------------------------------------------- IDX writers
def write_idx_images(path: Path, images: np.ndarray) -> None:
    """images (N, H, W) uint8 -> IDX3 file (magic 0x00000803)."""
    n, h, w = images.shape
    header = (
        (2051).to_bytes(4, "big")
        + n.to_bytes(4, "big")
        + h.to_bytes(4, "big")
        + w.to_bytes(4, "big")
    )
    path.write_bytes(header + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    n = len(labels)
    path.write_bytes(
        (2049).to_bytes(4, "big") + n.to_bytes(4, "big") + labels.astype(np.uint8).tobytes()
    )


def make_tiny_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: class k is a bright 6×6 block at a class-specific spot, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, k in enumerate(labels):
        r, c = 3 + 6 * (k // 4), 3 + 6 * (k % 4)
        images[i, r : r + 6, c : c + 6] = 255
    return images, labels


def write_tiny_dataset(
    root: Path, folder: str, n_train: int = 600, n_test: int = 200
) -> list[dict]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    specs = []
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = make_tiny_images(n, seed)
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
    for name, magic, count in (
        ("train-images-idx3-ubyte", 2051, n_train),
        ("train-labels-idx1-ubyte", 2049, n_train),
        ("t10k-images-idx3-ubyte", 2051, n_test),
        ("t10k-labels-idx1-ubyte", 2049, n_test),
    ):
        data = (raw / name).read_bytes()
        specs.append(
            {
                "name": name,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "magic": magic,
                "count": count,
            }
        )
    return specs


@pytest.fixture()
def tiny_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root with small generated MNIST and Fashion-MNIST IDX files (600 train / 200 test),
    pinned through ``$IMGCLS_DATASET_SPECS`` so that verification and subprocesses use them."""
    root = tmp_path / "data"
    specs = {name: write_tiny_dataset(root, spec.folder) for name, spec in DATASETS.items()}
    spec_file = tmp_path / "specs.json"
    spec_file.write_text(json.dumps(specs))
    monkeypatch.setenv("IMGCLS_DATASET_SPECS", str(spec_file))
    return root


def _real_root() -> Path | None:
    root = default_root()
    return root if is_verified(root, "mnist") else None


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The verified real data root (`imgcls data fetch --dataset all`); skips the test if absent."""
    if os.environ.get("IMGCLS_DATASET_SPECS"):
        pytest.skip("IMGCLS_DATASET_SPECS overrides the real data specs")
    root = _real_root()
    if root is None:
        pytest.skip("real MNIST not fetched: run `imgcls data fetch --dataset all`")
    return root


@pytest.fixture(scope="session")
def real_fashion_root(real_data_root: Path) -> Path:
    if not is_verified(real_data_root, "fashion_mnist"):
        pytest.skip(
            "real Fashion-MNIST not fetched: run `imgcls data fetch --dataset fashion_mnist`"
        )
    return real_data_root


def run_imgcls(
    *args: str,
    cwd: Path,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run the ``imgcls`` command in a subprocess (the way a user does)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"imgcls {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


# Flags that shrink any `imgcls fit` to seconds on a CPU.
FAST = [
    "--trainer.accelerator",
    "cpu",
    "--trainer.devices",
    "1",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]


@pytest.fixture(scope="session")
def trained_run(real_data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeNet-5 run trained on 6,000 real MNIST images for 2 epochs: its run directory.

    Reaches about 95 % test accuracy; export and insight tests start from its checkpoints.
    """
    work = tmp_path_factory.mktemp("trained")
    run_imgcls(
        "fit",
        "--config",
        str(ROOT / "configs/model/lenet5.yaml"),
        *FAST,
        "--trainer.max_epochs",
        "2",
        "--data.init_args.data_dir",
        str(real_data_root),
        "--data.init_args.train_subset",
        "6000",
        "--model.optimizer.init_args.lr",
        "0.002",
        "--data.init_args.val_size",
        "1000",
        cwd=work,
    )
    run = work / "runs" / "mnist-lenet5" / "version_0"
    assert (run / "checkpoints" / "best.ckpt").is_file()
    return run


@pytest.fixture(scope="session")
def trained_ckpt(trained_run: Path) -> Path:
    return trained_run / "checkpoints" / "best.ckpt"
