"""Smoke tests of the benchmark scripts at tiny size: they run end to end on the real data and
print every figure docs/benchmarks.md quotes. (The figures themselves are not asserted: a benchmark
prints numbers, it is not a timed test.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str, tmp_path: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_train_throughput_quick(real_data_root: Path, tmp_path: Path) -> None:
    out = _run(
        "train_throughput.py",
        "--quick",
        "--data_dir",
        str(real_data_root),
        "--workdir",
        str(tmp_path / "w"),
        tmp_path=tmp_path,
    )
    rows = dict(re.findall(r"^\| ([abc]\)[^|]+?) \| ([\d.]+) \|", out, re.M))
    assert len(rows) == 3 and all(float(s) > 0 for s in rows.values()), out
    b_over_a = float(re.search(r"b/a = ([\d.]+)", out).group(1))
    c_over_b = float(re.search(r"c/b = ([\d.]+)", out).group(1))
    c_over_a = float(re.search(r"c/a = ([\d.]+)", out).group(1))
    a, b, c = (float(s) for s in rows.values())
    # the ratios are those of the printed (rounded) figures, not swapped or inverted
    assert abs(b_over_a / (b / a) - 1) < 0.1 and abs(c_over_b / (c / b) - 1) < 0.1, out
    assert abs(c_over_a / (c / a) - 1) < 0.1, out


def test_memory_format_quick(real_data_root: Path, tmp_path: Path) -> None:
    out = _run("memory_format.py", "--quick", "--data_dir", str(real_data_root), tmp_path=tmp_path)
    rows = re.findall(
        r"^\| (LeNet\S+) \| ([\d.]+) / ([\d.]+) \| ([\d.]+) / ([\d.]+) \| ([\d.]+) \|$",
        out,
        re.M,
    )
    assert [r[0] for r in rows] == ["LeNet5Small", "LeNet-5"], out
    for _, *figures in rows:
        nchw_best, nchw_median, nhwc_best, nhwc_median, paired = map(float, figures)
        assert 0 < nchw_best <= nchw_median and 0 < nhwc_best <= nhwc_median, out
        # The paired ratio is the median of NCHW / NHWC over the trials. With two trials the
        # slowest is 2 x median - best, so it lies between the slowest NCHW over the fastest NHWC
        # and the fastest NCHW over the slowest NHWC (printed figures are rounded to 0.01 ms).
        nchw_worst, nhwc_worst = 2 * nchw_median - nchw_best, 2 * nhwc_median - nhwc_best
        lo, hi = nchw_best / nhwc_worst, nchw_worst / nhwc_best
        assert lo * 0.97 <= paired <= hi * 1.03, out


def test_onnx_latency_quick(tmp_path: Path) -> None:
    out = _run(
        "onnx_latency.py", "--quick", "--nets", "lenet5", "--batches", "1,4", tmp_path=tmp_path
    )
    assert "lenet5" in out and re.search(r"\d", out)


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.wrk
def test_serve_load_quick(exported_lenet: Path, tmp_path: Path) -> None:
    import shutil

    from tests.helpers import require_system

    require_system(shutil.which("wrk") is not None, "wrk", "apt-get install wrk")
    model = str(exported_lenet / "model.onnx")
    # the LeNet-5 export stands in for the ResNet too: the smoke test checks the cells, not speed
    out = _run("serve_load.py", "--quick", "--lenet5", model, "--resnet", model, tmp_path=tmp_path)
    figures = json.loads(out.strip().splitlines()[-1])
    (cells,) = figures["rounds"]
    assert sorted(cells) == ["floor", "serve"], out
    for setup in cells.values():
        assert sorted(setup) == ["1", "8"], out
        for cell in setup.values():
            assert cell["errors"] == 0 and cell["rps"] > 0 and cell["requests"] > 0, out
            assert 0 < cell["p50_ms"] <= cell["p99_ms"], out
    # the ratios are those of the cells, not swapped or inverted
    ratio = cells["serve"]["8"]["rps"] / cells["floor"]["8"]["rps"]
    assert abs(figures["ratios"]["rps_8"] / ratio - 1) < 1e-6, out
    assert re.search(r"rps_8: [\d.]+ \(target >= 1.2\)", out), out
    assert sorted(figures["resnet"]) == ["floor", "serve", "serve-b1"], out
    assert all(c["errors"] == 0 and c["rps"] > 0 for c in figures["resnet"].values()), out
    assert figures["workers2"]["8"]["errors"] == 0 and figures["workers2"]["8"]["rps"] > 0, out
    assert "| (b) imgcls serve --workers 2 | 8 |" in out, out


def test_eval_speed_quick(real_data_root: Path, tmp_path: Path) -> None:
    out = _run("eval_speed.py", "--quick", "--data_dir", str(real_data_root), tmp_path=tmp_path)
    ratios = re.findall(r"shift/bare = ([\d.]+) \(target >= 0.85\)", out)
    assert len(ratios) == 3 and all(float(r) > 0 for r in ratios), out


@pytest.mark.real_data
def test_folder_speed_quick(real_data_root: Path, tmp_path: Path) -> None:
    out = _run(
        "folder_speed.py",
        "--quick",
        "--data_dir",
        str(real_data_root),
        "--workdir",
        str(tmp_path / "w"),
        tmp_path=tmp_path,
    )
    rows = re.findall(
        r"^\| (folder, first run \(decode \+ cache\)|folder, cached|mnist \(IDX\)) \| "
        r"([\d.]+) \| ([\d.]+) \| ([\d.]+) / ([\d.]+) \| ([\d,]+) \|$",
        out,
        re.M,
    )
    assert [r[0] for r in rows] == [
        "folder, first run (decode + cache)",
        "folder, cached",
        "mnist (IDX)",
    ], out
    for _, setup, first, best, median, _ in rows:
        assert float(setup) > 0 and float(first) > 0 and 0 < float(best) <= float(median), out
    # the first run decodes 2,000 PNG files; the cached one reads one file
    assert float(rows[0][1]) > float(rows[1][1]), out
    ratio = float(re.search(r"folder \(cached\) / mnist = ([\d.]+)", out).group(1))
    assert abs(ratio / (float(rows[1][3]) / float(rows[2][3])) - 1) < 0.1, out
    assert "same images and labels in both modules (in another order): True" in out
