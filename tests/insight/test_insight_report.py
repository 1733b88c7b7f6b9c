"""Tests of ``imgcls report``: the writer on fixed numbers (fast), reuse of finished runs and
checkpoints given with --ckpt, and ``--quick`` end to end on the real data (slow)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from PIL import Image

from imgcls.__main__ import main
from imgcls.insight import InsightError
from imgcls.insight.report.catalogue import EXPERIMENTS, Experiment
from imgcls.insight.report.render import SECTIONS, render_report, write_report
from imgcls.insight.report.results import (
    FIGURES,
    ExperimentResult,
    ReportData,
    report_data_from_json,
)
from imgcls.insight.report.running import build_report, worked_examples
from imgcls.insight.training import TrainSpec
from tests.helpers import run_imgcls
from tests.helpers.training import make_checkpoint


def _result(
    name: str,
    dataset: str = "mnist",
    accs: tuple[float, ...] = (0.9812, 0.9601, 0.8523, 0.6011),
    lecture: tuple[float, ...] | None = None,
    seconds: float | None = 12.34,
) -> ExperimentResult:
    return ExperimentResult(
        name=name,
        title=name.upper(),
        dataset=dataset,
        net="lenet5",
        net_args={},
        n_train=20_000,
        epochs=3,
        fit_seconds=seconds,
        origin="trained",
        params=61_706,
        macs=416_520,
        n_test=10_000,
        shift_mean=list(accs),
        shift_worst=[a - 0.05 for a in accs],
        lecture_acc=lecture[0] if lecture else None,
        lecture_shift=list(lecture) if lecture else None,
        source="lecture 002",
    )


def _data(mode: str = "full") -> ReportData:
    exps = [
        _result("mlp-32", accs=(0.9701, 0.8702, 0.6203, 0.3304), lecture=(97.0, 87.0, 62.0)),
        _result("convnet", lecture=(99.04, 98.07, 92.06, 75.0)),
        _result("lenet5-20k", seconds=21.5),
        _result(
            "fashion-convnet",
            "fashion_mnist",
            (0.9255, 0.8973, 0.7594, 0.4738),
            (92.55, 89.73, 75.94, 47.38),
            seconds=None,
        ),
    ]
    figures = {key: f"figures/{name}" for key, (name, _) in FIGURES.items()}
    return ReportData(
        "imgcls report --reuse",
        mode,
        "2026-01-01 00:00",
        {
            "cpu_count": 2,
            "torch_threads": 2,
            "torch": "2.x",
            "python": "3.11",
            "platform": "test",
            "cpu": "x86_64",
        },
        exps,
        figures,
        {"lenet5": "| a |\n| --- |\n| b |\n"},
        worked_examples(),
        ["a note"],
    )


def test_report_has_every_section_in_order() -> None:
    text = render_report(_data())
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings == list(SECTIONS)
    assert "Quick mode" not in text


def test_report_puts_lecture_numbers_beside_ours() -> None:
    text = render_report(_data())
    row = next(line for line in text.splitlines() if line.startswith("| CONVNET (`convnet`)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4:9] == [
        "99.04",
        "98.12",
        "98.07 / 96.01 / 96.01",
        "92.06 / 85.23 / 85.23",
        "75.00 / 60.11 / 60.11",
    ]
    assert cells[9:] == ["61,706", "416,520", "12.3 s"]
    mlp = next(line for line in text.splitlines() if line.startswith("| MLP-32 (`mlp-32`)"))
    assert (
        "| 97.00 | 97.01 | 87.00 / 87.02 / 87.02 | 62.00 / 62.03 / 62.03 | – / 33.04 / 33.04 |"
        in mlp
    )
    fashion = next(line for line in text.splitlines() if line.startswith("| FASHION-CONVNET"))
    assert (
        "| 92.55 | 92.55 | 89.73 / 89.73 / 89.73 | 75.94 / 75.94 / 75.94 | 47.38 / 47.38 / 47.38 |"
        in fashion
        and "| n/a |" in fashion
    )
    # LeNet-5 on 20,000 images vs lecture 000, in the claims
    assert "| ≈ 20 s | 21.5 s for 3 epochs (7.2 s per epoch) on this CPU | **holds** |" in text
    # 8-direction mean / worst / axis-aligned mean (no axis figures: the mean stands in)
    assert (
        "| lenet5-20k | 98.12 | 96.01 / 91.01 / 96.01 | 85.23 / 80.23 / 85.23 "
        "| 60.11 / 55.11 / 60.11 | – |" in text
    )


def test_shift_columns_compare_the_axis_aligned_mean() -> None:
    data = _data()
    conv = data.row("convnet")
    assert conv is not None
    conv.shift_axis = [0.9812, 0.9750, 0.9100, 0.7400]
    text = render_report(data)
    row = next(line for line in text.splitlines() if line.startswith("| CONVNET (`convnet`)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[6:9] == ["98.07 / 97.50 / 96.01", "92.06 / 91.00 / 85.23", "75.00 / 74.00 / 60.11"]
    assert "| convnet | 98.12 | 96.01 / 91.01 / 97.50 |" in text


def test_report_links_every_figure_and_lists_the_worked_examples() -> None:
    data = _data()
    text = render_report(data)
    for key, (name, caption) in FIGURES.items():
        assert f"![{caption}](figures/{name})" in text, key
    assert text.count("| yes |") == len(data.worked_examples) == 12
    assert "| weights of 128 fully-connected units on it | 301,056 | 301,056 | yes |" in text
    assert "| … multiply-adds | 768,000 | 768,000 | yes |" in text
    assert "```\nimgcls report --reuse\n```" in text
    del data.figures["kernels"]
    assert "not produced in this run" in render_report(data)


def test_quick_report_says_so() -> None:
    assert "**Quick mode**" in render_report(_data("quick"))


def test_write_report_and_read_back(tmp_path: Path) -> None:
    data = _data()
    md = write_report(data, tmp_path)
    assert md == tmp_path / "README.md" and md.read_text() == render_report(data)
    again = report_data_from_json(tmp_path / "results.json")
    assert render_report(again) == render_report(data)


def test_experiments_cover_the_lectures() -> None:
    names = [e.name for e in EXPERIMENTS]
    assert names == [
        "mlp-10",
        "mlp-32",
        "mlp-128",
        "convnet",
        "fashion-convnet",
        "lenet5",
        "lenet5-small",
        "convnet-pool2",
        "convnet-stride",
        "lenet5-20k",
        "mlp-128-20k",
        "overfit-60000",
        "overfit-10000",
        "overfit-1000",
        "overfit-100",
        "resnet-bn",
        "resnet-lecture",
        "lenet5-cosine",
    ]
    by = {e.name: e for e in EXPERIMENTS}
    assert by["mlp-10"].lecture_acc == 93.0 and by["mlp-32"].lecture_shift == (97.0, 87.0, 62.0)
    assert (
        by["convnet"].lecture_shift == (99.04, 98.07, 92.06, 75.0)
        and by["convnet"].full.epochs == 14
    )
    assert by["fashion-convnet"].lecture_shift == (92.55, 89.73, 75.94, 47.38)
    assert by["fashion-convnet"].full.dataset == "fashion_mnist"
    assert by["lenet5-20k"].full.train_subset == 20_000 and by["lenet5"].full.train_subset is None
    assert by["lenet5-20k"].full.val_size == by["mlp-128-20k"].full.val_size == 5_000
    assert all(e.quick.epochs == 1 for e in EXPERIMENTS)
    overfit = [e for e in EXPERIMENTS if e.study == "overfit"]
    assert [e.full.train_subset for e in overfit] == [60_000, 10_000, 1_000, 100]
    assert {e.full.steps for e in overfit} == {3_000} and all(e.train_accuracy for e in overfit)
    assert len({e.quick.train_subset for e in overfit}) == 4  # distinct sizes in --quick too
    assert by["convnet-pool2"].full.net_args == {"pool_after": "each"}
    assert by["resnet-lecture"].full.net_args["block"] == "lecture"
    assert by["lenet5-cosine"].full.loss == "cosine"


# ----------------------------------------------------------------------------- running experiments
def test_finished_runs_are_reused(tiny_data: Path, tmp_path: Path) -> None:
    tiny = [
        Experiment(
            "mlp-10",
            "MLP-10",
            TrainSpec("mlp", {"hidden": [10]}, "mnist", None, 1),
            TrainSpec("mlp", {"hidden": [10]}, "mnist", 300, 1),
            93.0,
            None,
            "lecture 002",
        )
    ]
    kw = {
        "quick": True,
        "runs_dir": tmp_path / "runs",
        "data_dir": str(tiny_data),
        "progress": False,
        "experiments": tiny,
    }
    logs: list[str] = []
    first = build_report(tmp_path / "a", reuse=True, log=logs.append, **kw)
    assert first.experiments[0].origin == "trained" and first.experiments[0].n_train == 300
    assert any("training mlp on 300 mnist images" in m for m in logs)
    second = build_report(tmp_path / "b", reuse=True, log=logs.append, **kw)
    assert second.experiments[0].origin.startswith("reused")
    assert second.experiments[0].shift_mean == first.experiments[0].shift_mean  # the same model
    assert second.experiments[0].fit_seconds == first.experiments[0].fit_seconds
    third = build_report(tmp_path / "c", reuse=False, log=logs.append, **kw)
    assert third.experiments[0].origin == "trained"
    assert {"shift_mnist", "templates_mlp10", "kernels", "rings"} <= set(second.figures)
    assert first.experiments[0].methods["optimizer"] == "Adam(lr=0.001)"
    assert first.experiments[0].epochs == 1 and second.experiments[0].epochs == 1
    for rel in second.figures.values():
        assert (tmp_path / "b" / rel).stat().st_size > 1000


def test_checkpoints_given_by_name_must_fit_the_experiment(tmp_path: Path) -> None:
    digits = make_checkpoint(tmp_path / "d.ckpt", "convnet", dataset="mnist")
    with pytest.raises(InsightError, match="trained on 'mnist'.*fashion_mnist"):
        build_report(tmp_path / "o", checkpoints={"fashion-convnet": str(digits)})
    with pytest.raises(InsightError, match="a convnet .* is a lenet5"):
        build_report(tmp_path / "o", checkpoints={"lenet5": str(digits)})
    with pytest.raises(InsightError, match="not experiments"):
        build_report(tmp_path / "o", checkpoints={"vgg": str(digits)})
    assert not (tmp_path / "o").exists()


def test_report_command_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.ckpt"
    assert (
        main(["report", "--quick", "--ckpt", f"lenet5={missing}", "--out", str(tmp_path / "o")])
        == 2
    )
    assert str(missing) in capsys.readouterr().err
    assert main(["report", "--quick", "--ckpt", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
    assert main(["report", "--quick", "--skip", "vgg", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--skip vgg: no such experiment" in err and "lenet5-cosine" in err
    assert not (tmp_path / "o" / "README.md").exists()


@pytest.mark.real_data
def test_report_with_a_given_checkpoint(
    trained_ckpt: Path, real_data_root: Path, tmp_path: Path
) -> None:
    lenet = [e for e in EXPERIMENTS if e.name == "lenet5"]
    data = build_report(
        tmp_path,
        checkpoints={"lenet5": str(trained_ckpt)},
        data_dir=str(real_data_root),
        progress=False,
        experiments=lenet,
        test_limit=1000,
        log=lambda s: None,
    )
    (r,) = data.experiments
    from imgcls.insight.methods import epoch_seconds_of_run

    seconds = epoch_seconds_of_run(trained_ckpt)  # the fixture's own metrics.csv
    assert r.origin == f"checkpoint {trained_ckpt}" and r.epoch_seconds == seconds
    assert r.fit_seconds == (sum(seconds) if seconds else None)
    assert r.methods["checkpoint"].startswith(trained_ckpt.name)
    import torch

    ckpt = torch.load(
        trained_ckpt, map_location="cpu", weights_only=True
    )  # what the fixture's `imgcls fit` saved
    assert (
        r.n_train == ckpt["datamodule_hyper_parameters"]["train_subset"]
        and r.epochs == ckpt["epoch"] + 1
    )
    assert r.params == 61_706 and r.macs == 416_520 and r.n_test == 1000
    assert r.shift_mean[0] > r.shift_mean[1] > r.shift_mean[2] > r.shift_mean[3]
    assert {"shift_mnist", "filters_lenet5", "kernels"} <= set(data.figures)


@pytest.mark.slow
@pytest.mark.real_data
def test_quick_report_end_to_end(real_data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    start = time.perf_counter()
    run_imgcls(
        "report",
        "--quick",
        "--out",
        str(out),
        "--runs_dir",
        str(tmp_path / "runs"),
        "--data_dir",
        str(real_data_root),
        "--no_progress",
        cwd=tmp_path,
    )
    seconds = time.perf_counter() - start
    print(f"imgcls report --quick: {seconds:.0f} s")
    text = (out / "README.md").read_text()
    assert re.findall(r"^## (.+)$", text, flags=re.M) == list(SECTIONS)
    assert (
        "**Quick mode**" in text
        and "99.04" in text
        and "92.55" in text
        and "around 20 seconds" in text
        and "## Claims, each with a verdict" in text
    )
    results = json.loads((out / "results.json").read_text())
    assert [e["name"] for e in results["experiments"]] == [e.name for e in EXPERIMENTS]
    assert set(results["figures"]) == set(FIGURES)
    for key, rel in results["figures"].items():
        path = out / rel
        assert f"]({rel})" in text, key
        with Image.open(path) as im:
            assert im.size[0] >= 800 and im.size[1] >= 500, key
    for e in results["experiments"]:
        assert e["n_test"] == 500 and e["fit_seconds"] > 0
        assert e["epochs"] == 1 or e["study"] == "overfit"  # those train a number of steps
        assert 0.1 < e["shift_mean"][0] <= 1.0  # better than chance after one epoch
        assert set(e["shift_directions"]) == {"N", "NE", "E", "SE", "S", "SW", "W", "NW"}
        assert len(e["shift_axis"]) == 4 and e["methods"]["batch"] in ("64", "128")
    studies = results["studies"]
    assert [r["n_train"] for r in studies["overfit"]] == [2000, 1000, 300, 100]
    assert max(studies["backprop"].values()) < 1e-10
    assert studies["rings"][-1]["accuracy"] >= 0.99
    assert all(w["match"] for w in results["worked_examples"])


def test_extra_row_from_any_checkpoint(trained_ckpt):
    from imgcls.commands.report import _extra_experiment

    exp = _extra_experiment("recipe-lenet5", str(trained_ckpt))
    assert exp.name == "recipe-lenet5" and exp.full.net == "lenet5" and exp.full.dataset == "mnist"
    assert exp.lecture_acc is None and "recipe-lenet5" in exp.title
    assert exp.study == "extra"  # not among the rows trained with the lectures' protocol


def test_which_shift_reading_is_closest_to_the_lecture() -> None:
    data = _data()
    conv = data.row("convnet")
    assert conv is not None
    conv.shift_axis = [0.9812, 0.9807, 0.9206, 0.7500]  # the axis mean on the lecture's numbers
    conv.shift_directions = {"N": [0.98, 0.98, 0.92, 0.75], "E": [0.98, 0.9, 0.8, 0.6]}
    text = render_report(data)
    assert "| convnet | 98.07 / 92.06 / 75 | 7.93 | 0.00 | N 0.04 |" in text
    assert "No one reading is closest for every series" in text  # the others: the 8-dir mean
