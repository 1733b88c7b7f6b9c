"""The GPU benchmark (``nox -s bench -- --gpu``): its arguments and skip path on any machine,
its quick mode where a CUDA GPU is lent."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_bench():
    return _load("gpu_bench", ROOT / "benchmarks" / "gpu_bench.py")


def test_arguments_and_settings(gpu_bench) -> None:
    args = gpu_bench.parse_args([])
    assert args.batch == 512 and args.target == 0.99 and args.steps == 200
    assert gpu_bench.settings(args) == [
        ("32-true", False),
        ("32-true", True),
        ("16-mixed", False),
        ("16-mixed", True),
        ("bf16-mixed", False),
        ("bf16-mixed", True),
    ]
    assert args.recipe == gpu_bench.default_recipe() and args.recipe.is_file()
    speedrun = ROOT / "configs" / "recipes" / "mnist_speedrun.yaml"
    assert args.recipe.name == (speedrun if speedrun.is_file() else args.recipe).name
    quick = gpu_bench.parse_args(["--quick", "--no_compile", "--precision", "bf16-mixed"])
    assert quick.steps == 10 and quick.target == 0.90
    assert gpu_bench.settings(quick) == [("bf16-mixed", False)]


@pytest.mark.parametrize(
    "argv", [["--precision", "fp8"], ["--batch", "0"], ["--recipe", "/nonexistent.yaml"]]
)
def test_bad_arguments_are_refused(gpu_bench, argv, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        gpu_bench.parse_args(argv)
    assert e.value.code == 2


def test_without_a_gpu_it_skips_saying_why(gpu_bench, monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "skipped: no CUDA GPU available" in out and "nox -s bench -- --gpu" in out


def test_the_script_skips_with_no_visible_gpu(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--quick"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped: no CUDA GPU available" in proc.stdout


def test_nox_bench_gpu_runs_the_gpu_benchmark_with_the_rest_of_its_arguments() -> None:
    pytest.importorskip("nox")
    noxfile = _load("imgcls_noxfile", ROOT / "noxfile.py")
    assert noxfile.bench_scripts(["--gpu", "--quick"]) == [("benchmarks/gpu_bench.py", ["--quick"])]
    plain = [script for script, _ in noxfile.bench_scripts(["--quick"])]
    assert "benchmarks/gpu_bench.py" not in plain and "benchmarks/train_throughput.py" in plain


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bench_quick(real_data_root: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_bench.py"),
            "--quick",
            "--data_dir",
            str(real_data_root),
            "--workdir",
            str(tmp_path / "w"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = re.findall(
        r"^\| (\S+) \| (yes|no) \| ([\d,]+|not supported on this GPU) \|$", proc.stdout, re.M
    )
    assert len(rows) == 6, proc.stdout
    assert all(r[2] == "not supported on this GPU" or int(r[2].replace(",", "")) > 0 for r in rows)
    assert re.search(r"time to 90% test accuracy .* s of training", proc.stdout), proc.stdout
