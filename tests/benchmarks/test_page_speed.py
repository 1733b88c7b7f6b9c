"""benchmarks/page_speed.py, in its quick form, on the session's trained LeNet-5 export."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.deploy.test_page import INSTALL, find_chromium
from tests.helpers import ROOT, require_system


@pytest.mark.browser
@pytest.mark.real_data
@pytest.mark.slow
def test_page_speed_quick(
    exported_lenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_system(find_chromium() is not None, "Chromium", INSTALL)
    spec = importlib.util.spec_from_file_location("page_speed", ROOT / "benchmarks/page_speed.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "rows.json"
    model = exported_lenet / "model.onnx"
    code = bench.main(
        ["--quick", "--strokes", "6", "--model", f"lenet5={model}", "--chromium", find_chromium(),
         "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| lenet5 | " in printed and "p95 ms" in printed
    (row,) = json.loads(out.read_text())
    assert row["strokes"] == 6 and row["read_right"] == 6  # the trained model reads 1, 7, 0
    assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["max_ms"] < 1000
    # each stroke's answer is drawn no later than its last panel, and reaches a frame after
    assert 0 < row["answer_p50_ms"] <= row["p50_ms"] and row["answer_p95_ms"] <= row["p95_ms"]
    assert row["answer_p50_ms"] <= row["frame_p50_ms"] < 1000
    assert 10 < row["site_mib"] < 20
