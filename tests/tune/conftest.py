"""Fixtures of the ``imgcls tune`` tests: tiny data shared by a module's studies, a tune file
writer, and a private PostgreSQL server (Debian's ``postgresql`` package) for a shared study.

The server is a throw-away cluster: ``initdb`` in a temporary folder, ``pg_ctl start`` on a
free port of 127.0.0.1 with trust authentication, stopped and deleted at the end of the
session. ``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run as the
``postgres`` user (``runuser -u postgres --``) on a folder chowned to it.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import FAST, free_port, require_system, wait_for_port, write_tiny_dataset

PG_INSTALL = "apt-get install -y postgresql"
# Short trials on the tiny data: 50-image batches, 100 validation images.
SMALL = ["--data.val_size", "100", "--data.batch_size", "50", *FAST]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Tiny MNIST files for this module's studies, and the environment that pins them."""
    work = tmp_path_factory.mktemp("tiny")
    specs = {"mnist": write_tiny_dataset(work / "data", "MNIST")}
    (work / "specs.json").write_text(json.dumps(specs))
    return work / "data", {"IMGCLS_DATASET_SPECS": str(work / "specs.json")}


def trial_args(data: Path, epochs: int = 3) -> list[str]:
    """Fit options for every trial of a test study."""
    return [*SMALL, "--trainer.max_epochs", str(epochs), "--data.data_dir", str(data)]


def write_tune_file(path: Path, space: dict, **keys: object) -> Path:
    """A tune file stacked on LeNet-5 (absolute path, so it works from any folder)."""
    from tests.helpers import CONFIGS_DIR

    body = {
        "configs": [str(CONFIGS_DIR / "model" / "lenet5.yaml")],
        "metric": "val/acc",
        "pruner": {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
        **keys,
        "space": space,
    }
    path.write_text(json.dumps(body))  # JSON is YAML
    return path


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql+psycopg://postgres@127.0.0.1:<port>/postgres`` of a private server."""
    bindir = _pg_bin()
    require_system(bindir is not None, "PostgreSQL (initdb, pg_ctl)", PG_INSTALL)
    assert bindir is not None
    root = os.geteuid() == 0
    as_pg = ["runuser", "-u", "postgres", "--"] if root else []
    work = Path(tempfile.mkdtemp(prefix="imgcls-pg-"))
    data = work / "data"
    if root:
        shutil.chown(work, "postgres")
        os.chmod(work, 0o700)
    port = free_port()

    def run(*args: str) -> None:
        proc = subprocess.run([*as_pg, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {proc.stdout}{proc.stderr}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {work} -c listen_addresses=127.0.0.1 -c fsync=off"
    try:
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(work / "log"),
            "-w",
            "start",
        )
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        wait_for_port(port, timeout=30, interval=0.2)  # pg_ctl -w waits for the socket; TCP too
        yield url
    finally:
        subprocess.run(
            [*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(work, ignore_errors=True)
