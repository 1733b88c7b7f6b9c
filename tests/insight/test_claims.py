"""``imgcls.insight.report.claims``: every lecture claim judged from a hand-built
``ReportData``; each verdict must flip where its stated rule says."""

from __future__ import annotations

import re
from typing import Any

import pytest

from imgcls.insight.report.claims import Claim, claims
from imgcls.insight.report.render import render_report
from imgcls.insight.report.results import ExperimentResult, ReportData

from .test_insight_report import _result


def _row(
    name: str,
    acc0: float,
    axis: tuple[float, ...] = (),
    dataset: str = "mnist",
    **changes: Any,
) -> ExperimentResult:
    """A row with test accuracy ``acc0`` and the given axis-aligned means at 1, 2, 3 px."""
    accs = (acc0, *axis) + (0.5,) * (3 - len(axis))
    r = _result(name, dataset, accs)
    r.shift_axis = list(accs)
    for k, v in changes.items():
        setattr(r, k, v)
    return r


def _data(rows: list[ExperimentResult], **studies: Any) -> ReportData:
    return ReportData("imgcls report", "full", "2026-01-01", {}, rows, studies=studies)


def _claim(data: ReportData, start: str) -> Claim:
    found = [c for c in claims(data) if c.claim.startswith(start)]
    assert len(found) == 1, [c.claim for c in claims(data)]
    return found[0]


@pytest.mark.parametrize(
    ("acc", "verdict"),
    [
        (0.926, "holds"),  # 0.4 points below 93 %
        (0.935, "holds"),
        (0.925, "holds"),  # exactly 0.5
        (0.915, "holds partly"),  # 1.5 points
        (0.90, "does not hold here"),  # 3 points
        (0.955, "does not hold here"),  # 2.5 points above is as wrong as below
    ],
)
def test_mlp10_accuracy_claim(acc: float, verdict: str) -> None:
    c = _claim(_data([_row("mlp-10", acc)]), "A 2-layer net with 10 hidden nodes")
    assert c.verdict == verdict
    assert c.lecture == "93.00 %" and c.ours == f"{100 * acc:.2f} %"


def test_missing_row_is_not_run() -> None:
    verdicts = {c.claim: c.verdict for c in claims(_data([]))}
    assert verdicts["A 2-layer net with 10 hidden nodes: 93 % test accuracy"] == "not run"
    assert verdicts["The 2-conv CNN: 99.04 % after 14 epochs"] == "not run"
    assert verdicts["More pooling gives more translation invariance"] == "not run"
    assert verdicts["LeNet-5 computes faster than the fully-connected net"] == "not run"
    assert verdicts["With less training data the net overfits more"] == "not run"
    assert verdicts["Neighbouring feature-map values are largely redundant"] == "not run"
    assert [c.verdict for c in claims(_data([]))].count("not run") >= 15


def test_shift_claims_take_the_closer_of_the_two_readings() -> None:
    # 8-direction mean far off, the axis-aligned mean on the lecture's numbers
    cnn = _row("convnet", 0.9904, (0.9807, 0.9206, 0.75))
    cnn.shift_mean = [0.9904, 0.90, 0.70, 0.40]
    c = _claim(_data([cnn]), "… 98.07 % / 92.06 % / 75 %")
    assert c.verdict == "holds" and "axis-aligned mean" in c.why
    assert (
        c.ours
        == "axis-aligned 98.07 % / 92.06 % / 75.00 %; 8-direction 90.00 % / 70.00 % / 40.00 %"
    )
    cnn.shift_axis[3] = 0.73  # 2 points at 3 px: the worst gap decides
    c = _claim(_data([cnn]), "… 98.07 % / 92.06 % / 75 %")
    assert c.verdict == "holds partly" and "2.00 points" in c.why
    cnn.shift_axis[3] = 0.70
    assert _claim(_data([cnn]), "… 98.07 % / 92.06 % / 75 %").verdict == "does not hold here"
    # now the 8-direction mean is the one on the lecture's numbers
    cnn.shift_mean = [0.9904, 0.9807, 0.9206, 0.75]
    c = _claim(_data([cnn]), "… 98.07 % / 92.06 % / 75 %")
    assert c.verdict == "holds" and "8-direction mean" in c.why


def test_more_pooling_holds_only_if_two_pools_lose_less_at_every_distance() -> None:
    one = _row("convnet", 0.99, (0.97, 0.90, 0.70))  # drops 2 / 9 / 29 points
    two = _row("convnet-pool2", 0.99, (0.98, 0.95, 0.85))  # drops 1 / 4 / 14
    c = _claim(_data([one, two]), "More pooling")
    assert c.verdict == "holds"
    assert "one pool 2.0 / 9.0 / 29.0" in c.ours and "two pools 1.0 / 4.0 / 14.0" in c.ours
    two.shift_axis[1] = 0.97  # equal drop at 1 px: not smaller
    assert _claim(_data([one, two]), "More pooling").verdict == "holds partly"
    worse = _row("convnet-pool2", 0.99, (0.96, 0.80, 0.60))
    assert _claim(_data([one, worse]), "More pooling").verdict == "does not hold here"
    assert _claim(_data([one]), "More pooling").verdict == "not run"


def _speeds(le: tuple[float, float], fc: tuple[float, float]) -> dict[str, Any]:
    return {
        "lenet5-20k": {"train_images_per_s": le[0], "infer_images_per_s": le[1]},
        "mlp-128-20k": {"train_images_per_s": fc[0], "infer_images_per_s": fc[1]},
    }


def test_lenet_faster_claim() -> None:
    rows = [_row("lenet5-20k", 0.98), _row("mlp-128-20k", 0.97)]
    start = "LeNet-5 computes faster"
    slower = _data(rows, speed_curves=_speeds((1_000, 5_000), (20_000, 90_000)))
    c = _claim(slower, start)
    assert c.verdict == "does not hold here"
    assert "trains at 0.05× and infers at 0.06×" in c.ours
    assert "(416,520 vs 416,520 per image)" in c.why  # the rows' multiply-adds
    assert _claim(_data(rows, speed_curves=_speeds((30, 100), (20, 90))), start).verdict == "holds"
    mixed = _data(rows, speed_curves=_speeds((30, 80), (20, 90)))
    assert _claim(mixed, start).verdict == "holds partly"
    assert _claim(_data(rows), start).verdict == "not run"


def test_stride_faster_claim() -> None:
    speeds = {
        "convnet-stride": {"train_images_per_s": 300.0, "infer_images_per_s": 900.0},
        "convnet": {"train_images_per_s": 100.0, "infer_images_per_s": 1000.0},
    }
    c = _claim(_data([], speed_stride=speeds), "Strided convolutions are faster")
    assert c.verdict == "holds partly" and "3.00×" in c.ours and "0.90×" in c.ours
    speeds["convnet-stride"]["infer_images_per_s"] = 1100.0
    assert _claim(_data([], speed_stride=speeds), "Strided convolutions").verdict == "holds"


def _overfit(gaps: list[float]) -> list[dict[str, Any]]:
    sizes = [60_000, 10_000, 1_000, 100]
    return [{"n_train": n, "gap": g} for n, g in zip(sizes, gaps, strict=True)]


def test_overfitting_holds_when_the_gap_grows_as_the_size_shrinks() -> None:
    start = "With less training data"
    c = _claim(_data([], overfit=_overfit([0.01, 0.03, 0.08, 0.25])), start)
    assert c.verdict == "holds"
    assert c.ours == (
        "train − test gap: 60,000 images 1.0, 10,000 images 3.0, 1,000 images 8.0, "
        "100 images 25.0 points"
    )
    dip = _claim(_data([], overfit=_overfit([0.01, 0.05, 0.04, 0.25])), start)
    assert dip.verdict == "holds partly"
    shrinks = _claim(_data([], overfit=_overfit([0.25, 0.08, 0.03, 0.01])), start)
    assert shrinks.verdict == "does not hold here"
    assert _claim(_data([], overfit=_overfit([0.1, 0.2, 0.3, 0.4])[:1]), start).verdict == (
        "not run"
    )


@pytest.mark.parametrize(
    ("worst", "verdict"), [(3e-16, "holds"), (9e-11, "holds"), (1e-3, "does not hold here")]
)
def test_backprop_claim(worst: float, verdict: str) -> None:
    b = {"relu": 1e-17, "sigmoid": worst, "tanh": 2e-17}
    c = _claim(_data([], backprop=b), "Backpropagation, Theorem 1")
    assert c.verdict == verdict and f"{worst:.1e}" in c.ours


def test_neighbours_and_pooling_claims() -> None:
    n = {
        "channel": 2,
        "mean_abs_neighbour_diff": 0.12,
        "before_shape": [6, 28, 28],
        "after_shape": [6, 14, 14],
    }
    assert _claim(_data([], neighbours=n), "Neighbouring").verdict == "holds"
    assert _claim(_data([], neighbours=n), "Max pooling halves").verdict == "holds"
    assert _claim(_data([], neighbours=n), "Max pooling halves").ours == "28×28 → 14×14 per map"
    n["mean_abs_neighbour_diff"] = 0.2
    assert _claim(_data([], neighbours=n), "Neighbouring").verdict == "holds partly"
    n["mean_abs_neighbour_diff"] = 0.35
    assert _claim(_data([], neighbours=n), "Neighbouring").verdict == "does not hold here"
    n["after_shape"] = [6, 27, 27]
    assert _claim(_data([], neighbours=n), "Max pooling halves").verdict == "does not hold here"


def test_rings_claim() -> None:
    steps = [{"iteration": 50, "accuracy": 0.6}, {"iteration": 3000, "accuracy": 0.995}]
    c = _claim(_data([], rings=steps), "A small net separates")
    assert c.verdict == "holds" and c.ours == "training accuracy 50: 60.0 %, 3000: 99.5 %"
    steps[-1]["accuracy"] = 0.98
    assert _claim(_data([], rings=steps), "A small net separates").verdict == "does not hold here"


def test_worked_arithmetic_counts_matches() -> None:
    examples = [
        {"claim": "a", "lecture": 1, "ours": 1, "match": True},
        {"claim": "b", "lecture": 2, "ours": 2, "match": True},
        {"claim": "c", "lecture": 3, "ours": 4, "match": False},
        {"claim": "no lecture number", "lecture": None, "ours": 5, "match": False},
    ]
    data = _data([])
    data.worked_examples = examples
    c = _claim(data, "The worked arithmetic")
    assert c.lecture == "3 numbers" and c.ours == "2 of 3 recomputed identically"
    assert c.verdict == "holds partly" and c.why == "differs: c"
    examples[2]["match"] = True
    c = _claim(data, "The worked arithmetic")
    assert c.verdict == "holds" and c.ours == "3 of 3 recomputed identically"


def test_other_row_claims_flip() -> None:
    pool = _row("convnet", 0.99)
    stride = _row("convnet-stride", 0.985)
    assert _claim(_data([pool, stride]), "The cost of striding").verdict == "holds"
    stride.shift_mean[0] = 0.97
    assert _claim(_data([pool, stride]), "The cost of striding").verdict == "holds partly"
    stride.shift_mean[0] = 0.995
    assert _claim(_data([pool, stride]), "The cost of striding").verdict == "does not hold here"

    le = _row("lenet5-20k", 0.98, val_acc=[0.95, 0.98], fit_seconds=30.0, epochs=3)
    fc = _row("mlp-128-20k", 0.97, val_acc=[0.90, 0.97])
    assert _claim(_data([le, fc]), "LeNet-5 converges").verdict == "holds"
    fc.val_acc = [0.90, 0.99]
    assert _claim(_data([le, fc]), "LeNet-5 converges").verdict == "holds partly"
    c = _claim(_data([le, fc]), "LeNet-5 on 20,000 images")
    assert c.verdict == "holds" and c.ours.startswith("30.0 s for 3 epochs (10.0 s per epoch)")
    le.fit_seconds = 41.0  # more than twice the lecture's 20 s
    assert _claim(_data([le, fc]), "LeNet-5 on 20,000 images").verdict == "holds partly"

    ce, cos = _row("lenet5", 0.99), _row("lenet5-cosine", 0.986)
    assert _claim(_data([ce, cos]), "The loss −Σ").verdict == "holds"
    cos.shift_mean[0] = 0.975
    assert _claim(_data([ce, cos]), "The loss −Σ").verdict == "holds partly"
    cos.shift_mean[0] = 0.95
    assert _claim(_data([ce, cos]), "The loss −Σ").verdict == "does not hold here"

    cnn = _row("convnet", 0.99, (0.98, 0.97, 0.96))  # drops 1 / 2 / 3
    mlp = _row("mlp-32", 0.97, (0.87, 0.62))  # drops 10 / 35
    assert _claim(_data([cnn, mlp]), "CNNs keep their accuracy").verdict == "holds"
    cnn.shift_axis = [0.99, 0.95, 0.80, 0.60]  # 19 points at 2 px, under the MLP's 35
    assert _claim(_data([cnn, mlp]), "CNNs keep their accuracy").verdict == "holds partly"
    cnn.shift_axis = [0.99, 0.80, 0.60, 0.40]
    assert _claim(_data([cnn, mlp]), "CNNs keep their accuracy").verdict == "does not hold here"


def test_render_report_shows_the_claims_table_with_bold_verdicts() -> None:
    data = _data(
        [_row("mlp-10", 0.926), _row("mlp-32", 0.90, (0.87, 0.62))],
        backprop={"relu": 1e-3},
    )
    data.machine = {"cpu_count": 2}
    text = render_report(data)
    section = text.split("## Claims, each with a verdict", 1)[1].split("\n## ", 1)[0]
    assert "| claim | source | lecture | ours | verdict | why |" in section
    line = next(ln for ln in section.splitlines() if "10 hidden nodes" in ln)
    assert "| **holds** |" in line and "92.60 %" in line
    line = next(ln for ln in section.splitlines() if "with 32 hidden nodes" in ln)
    assert "| **does not hold here** |" in line
    line = next(ln for ln in section.splitlines() if "Backpropagation" in ln)
    assert "**does not hold here**" in line
    assert "**not run**" in section
    verdicts = re.findall(r"\| \*\*([a-z ]+)\*\* \|", section)
    assert len(verdicts) == len(claims(data))
