"""The deployment install: ``pip install imgcls`` without extras, in a venv of its own.

It must hold no torch, classify images (``imgcls infer``), serve them (``imgcls serve``),
evaluate an ONNX model on the official test set (``imgcls evaluate-onnx``), refuse training
commands with one line that names the ``train`` extra, and stay within 10 % of the training
venv's size (docs/deployment.md).

The venv is built once from a copy of the sources (a non-editable install, the way a wheel
is used; building in the checkout would leave ``build/`` there) and cached under
``.nox/deploy-venv``: rebuilt when the base install's requirements in pyproject.toml change
(not the extras); only imgcls itself is reinstalled (``--no-deps``, seconds) when the package
changes.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from imgcls.__main__ import TRAINING_MODULES
from imgcls.data.provision import raw_dir
from imgcls.deploy.classifier import OnnxClassifier
from imgcls.deploy.idx import read_idx
from tests.helpers import ROOT
from tests.helpers.serving import running_server

slow = pytest.mark.slow

DEPLOY_VENV = ROOT / ".nox" / "deploy-venv"
MAX_SIZE_RATIO = 0.10
BUILD_TIMEOUT_S = 900


def _hash(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _requirements_hash() -> str:
    """What decides the deployment venv's packages: the build system, the Python version and
    the base dependencies (an edit of the extras leaves it as it is)."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the whole file
        return hashlib.sha256(text.encode()).hexdigest()
    data = tomllib.loads(text)
    project = data.get("project", {})
    key = [data.get("build-system"), project.get("requires-python"), project.get("dependencies")]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _package_files() -> list[Path]:
    files = sorted((ROOT / "imgcls").rglob("*")) + sorted((ROOT / "configs").rglob("*.yaml"))
    files.append(ROOT / "setup.py")
    return [p for p in files if p.is_file() and "__pycache__" not in p.parts]


def _bin(venv: Path) -> Path:
    return venv / ("Scripts" if sys.platform == "win32" else "bin")


def size_mb(path: Path) -> float:
    """Disk usage of a folder in MB, as ``du -sm`` counts it (blocks, hard links once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total / 2**20


def _pip_install(venv: Path, *args: str) -> None:
    """``pip install ARGS <a copy of the sources>``: pip builds in the source folder, and
    would leave ``build/`` in the checkout."""
    with tempfile.TemporaryDirectory(prefix="imgcls-src-") as tmp:
        src = Path(tmp) / "imgcls-src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "setup.py", "MANIFEST.in"):
            shutil.copy2(ROOT / name, src / name)
        shutil.copytree(
            ROOT / "imgcls", src / "imgcls", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copytree(ROOT / "configs", src / "configs")  # the wheel carries them (setup.py)
        pip = [str(_bin(venv) / "python"), "-m", "pip", "install", "-q", "--no-cache-dir"]
        proc = subprocess.run(
            [*pip, *args, str(src)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
        )
    if proc.returncode != 0:
        raise AssertionError(f"pip install into {venv} failed:\n{proc.stderr[-5000:]}")


@pytest.fixture(scope="module")
def deploy_venv() -> Path:
    """The deployment venv: built anew when its requirements changed, imgcls reinstalled alone
    when only the package (or pyproject.toml's other parts) did."""
    want_deps = _requirements_hash()
    want_package = _hash(ROOT / "pyproject.toml", *_package_files())
    deps_stamp = DEPLOY_VENV / ".imgcls-pyproject-hash"
    package_stamp = DEPLOY_VENV / ".imgcls-package-hash"
    DEPLOY_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(DEPLOY_VENV.parent / "deploy-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest run may be building it
        start = time.monotonic()
        if not deps_stamp.is_file() or deps_stamp.read_text() != want_deps:
            shutil.rmtree(DEPLOY_VENV, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(DEPLOY_VENV)], check=True)
            _pip_install(DEPLOY_VENV)
            deps_stamp.write_text(want_deps)
            package_stamp.write_text(want_package)
            print(f"\ndeployment venv built in {time.monotonic() - start:.0f} s")
        elif not package_stamp.is_file() or package_stamp.read_text() != want_package:
            _pip_install(DEPLOY_VENV, "--no-deps", "--force-reinstall")
            package_stamp.write_text(want_package)
            print(
                f"\nimgcls reinstalled in the deployment venv in {time.monotonic() - start:.0f} s"
            )
    return DEPLOY_VENV


def deploy_env(venv: Path) -> dict[str, str]:
    """The environment of a shell where the deployment venv is activated (and nothing of the
    training venv leaks in)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{_bin(venv)}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_deployed(
    venv: Path, *args: str, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``imgcls ARGS`` through the deployment venv's console script, from ``cwd`` (not the
    checkout, whose ``imgcls/`` would shadow the installed package)."""
    return subprocess.run(
        [str(_bin(venv) / "imgcls"), *args],
        cwd=cwd,
        env=deploy_env(venv),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def model_path(exported_lenet: Path) -> Path:
    return exported_lenet / "model.onnx"


@pytest.fixture(scope="module")
def pngs(
    model_path: Path, real_data_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str], list[int]]:
    """20 real MNIST test images as PNG files, ones the model gets right: (folder, names,
    labels)."""
    raw = raw_dir(real_data_root, "mnist")
    images = read_idx(raw / "t10k-images-idx3-ubyte")[:200]
    labels = read_idx(raw / "t10k-labels-idx1-ubyte")[:200].astype(int)
    pred, _ = OnnxClassifier(model_path, device="cpu").predict(images)
    chosen = np.flatnonzero(pred == labels)[:20]
    assert len(chosen) == 20
    folder = tmp_path_factory.mktemp("deploy-pngs")
    names = [f"{i:04d}.png" for i in chosen]
    for i, name in zip(chosen, names, strict=True):
        Image.fromarray(images[i]).save(folder / name)
    return folder, names, labels[chosen].tolist()


@slow
def test_deploy_venv_has_no_torch(deploy_venv: Path, tmp_path: Path) -> None:
    for module in ("torch", "torchvision", "lightning", "wandb", "onnx"):
        proc = subprocess.run(
            [str(_bin(deploy_venv) / "python"), "-c", f"import {module}"],
            cwd=tmp_path,
            env=deploy_env(deploy_venv),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode != 0, f"{module} is importable in the deployment venv"
        assert "ModuleNotFoundError" in proc.stderr
    where = subprocess.run(
        [str(_bin(deploy_venv) / "python"), "-c", "import imgcls; print(imgcls.__file__)"],
        cwd=tmp_path,
        env=deploy_env(deploy_venv),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert Path(where.strip()).is_relative_to(deploy_venv), where  # installed, not the checkout


@slow
@pytest.mark.real_data
def test_deployed_infer_on_real_pngs(
    deploy_venv: Path, model_path: Path, pngs: tuple[Path, list[str], list[int]], tmp_path: Path
) -> None:
    folder, names, labels = pngs
    proc = run_deployed(
        deploy_venv,
        "infer",
        "--model",
        str(model_path),
        "--device",
        "cpu",
        str(folder),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "provider: CPUExecutionProvider" in proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [Path(r["input"]).name for r in rows] == names
    assert [int(r["label"]) for r in rows] == labels


@slow
@pytest.mark.real_data
def test_deployed_evaluate_onnx(
    deploy_venv: Path, model_path: Path, real_data_root: Path, tmp_path: Path
) -> None:
    proc = run_deployed(
        deploy_venv,
        "evaluate-onnx",
        "--model",
        str(model_path),
        "--data_dir",
        str(real_data_root),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["dataset"] == "mnist"
    assert report["n_images"] == 10_000
    assert report["accuracy"] > 0.9  # the short-trained LeNet-5 reaches about 95 %


@slow
@pytest.mark.real_data
def test_deployed_serve(
    deploy_venv: Path,
    model_path: Path,
    pngs: tuple[Path, list[str], list[int]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder, names, labels = pngs
    # `python -m imgcls` puts the working folder first on sys.path: not the checkout's.
    monkeypatch.chdir(tmp_path)
    python = _bin(deploy_venv) / "python"
    env = deploy_env(deploy_venv)
    with (
        running_server(
            model_path, "--device", "cpu", log=tmp_path / "serve.log", env=env, python=python
        ) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        r = client.post(
            "/predict",
            content=(folder / names[0]).read_bytes(),
            headers={"content-type": "image/png"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["label"] == labels[0]
    assert "Traceback" not in server.output(), server.output()


def test_training_command_without_torch_names_the_extra(tmp_path: Path) -> None:
    """The same message in this venv with torch hidden: the dispatcher, without a deploy venv."""
    code = (
        "import sys; sys.modules['torch'] = None; "
        "from imgcls.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "fit", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "imgcls: error: imgcls fit needs the training extra (torch is not installed): "
        "pip install 'imgcls[train]'"
    ]
    debug = subprocess.run(
        [sys.executable, "-c", code, "--debug", "fit", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert debug.returncode == 1
    assert "ModuleNotFoundError" in debug.stderr  # --debug: the traceback


@slow
def test_deployed_training_command_names_the_extra(deploy_venv: Path, tmp_path: Path) -> None:
    for command in (["fit"], ["export", "--ckpt", "x.ckpt"], ["visualize", "--ckpt", "x"]):
        proc = run_deployed(deploy_venv, *command, cwd=tmp_path, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        match = re.fullmatch(
            rf"imgcls: error: imgcls {command[0]} needs the training extra \((\w+) is not "
            r"installed\): pip install 'imgcls\[train\]'",
            lines[0],
        )
        assert match is not None, lines[0]
        assert match[1] in TRAINING_MODULES


@slow
def test_deploy_venv_size(deploy_venv: Path) -> None:
    deploy = size_mb(deploy_venv)
    in_venv = sys.prefix != sys.base_prefix
    training = Path(sys.prefix) if in_venv else ROOT / ".venv"
    print(f"\ndeployment venv {deploy_venv}: {deploy:.0f} MB")
    if not (training / "pyvenv.cfg").is_file():
        pytest.skip(f"no training venv to compare with ({training})")
    train = size_mb(training)
    print(f"training venv {training}: {train:.0f} MB; ratio {deploy / train:.1%}")
    assert deploy <= MAX_SIZE_RATIO * train, (
        f"the deployment venv is {deploy:.0f} MB, {deploy / train:.1%} of the training venv's "
        f"{train:.0f} MB (target {MAX_SIZE_RATIO:.0%})"
    )
