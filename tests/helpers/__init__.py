"""Helpers the tests share: where the project is, generated IDX data sets, and ``imgcls`` run
as a subprocess the way a user runs it. Fixtures live in ``tests/conftest.py``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CONFIGS_DIR = ROOT / "configs"


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


# ------------------------------------------------------------------ system programs (Debian)
def require_system(found: bool, what: str, install: str) -> None:
    """Skip the calling test when a system program it drives is missing (``what``), naming the
    command that installs it; with ``IMGCLS_REQUIRE_SYSTEM=1`` (CI: .ci/run) fail instead, so a
    CI run that means to exercise the real program cannot pass by skipping it."""
    import pytest

    if found:
        return
    message = f"{what} is missing: run `{install}` as root (`nox -s tests` does it)"
    if os.environ.get("IMGCLS_REQUIRE_SYSTEM") == "1":
        pytest.fail(f"IMGCLS_REQUIRE_SYSTEM=1 but {message}")
    pytest.skip(message)


# ----------------------------------------------------------------------------- local servers
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, interval: float = 0.05) -> None:
    """Return once 127.0.0.1:port accepts a TCP connection; OSError after ``timeout`` s."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)
