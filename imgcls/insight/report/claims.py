"""Every claim of the two lectures that a measurement in the report can test, with a verdict.

Each claim is judged from the report's own numbers (``ReportData``) by a rule stated beside
it, so the verdicts change when the numbers do; a claim whose rows were not run says so.
Verdicts: "holds", "holds partly", "does not hold here", and "not run".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from imgcls.insight import lectures
from imgcls.insight.report.results import ExperimentResult, ReportData

__all__ = ["ACCURACY_RULE", "Claim", "claims"]

HOLDS, PARTLY, NOT_HERE, NOT_RUN = "holds", "holds partly", "does not hold here", "not run"
# Accuracies the lectures quote: within 0.5 points holds, within 2 holds partly.
CLOSE, NEAR = 0.5, 2.0
ACCURACY_RULE = (
    f"an accuracy holds when ours is within {CLOSE:g} percentage points of the lecture's, "
    f"holds partly within {NEAR:g}. The lecture gives one shifted accuracy per distance and no "
    "direction, so a shifted series is compared with two readings of ours, the mean of the "
    "four axis-aligned moves (left, right, up, down) and the mean of all eight directions, "
    "and judged by the one closer to it; *why* names it"
)


@dataclass
class Claim:
    claim: str
    source: str
    lecture: str
    ours: str
    verdict: str
    why: str

    def to_dict(self) -> dict[str, str]:
        return dict(vars(self))


def _accuracy_verdict(pairs: Sequence[tuple[float, float]]) -> tuple[str, float]:
    """(verdict, worst gap) for (lecture %, ours %) pairs."""
    gap = max(abs(lec - ours) for lec, ours in pairs)
    return (HOLDS if gap <= CLOSE else PARTLY if gap <= NEAR else NOT_HERE), gap


def _pct(v: float) -> str:
    return f"{v:.2f} %"


def _accuracy_claim(
    row: ExperimentResult | None,
    claim: str,
    lecture_values: Sequence[float],
    distances: Sequence[int],
    source: str = "lecture 002",
) -> Claim:
    lecture = " / ".join(_pct(v) for v in lecture_values)
    if row is None:
        return Claim(claim, source, lecture, "–", NOT_RUN, "the row was not part of this run")
    if all(d == 0 for d in distances):
        ours = [100 * row.shift_mean[0]]
        verdict, gap = _accuracy_verdict(list(zip(lecture_values, ours, strict=True)))
        sign = "lower" if ours[0] < lecture_values[0] else "higher"
        return Claim(
            claim, source, lecture, _pct(ours[0]), verdict, f"gap {gap:.2f} points (ours {sign})"
        )
    readings = {
        "axis-aligned mean": row.shift_axis or row.shift_mean,
        "8-direction mean": row.shift_mean,
    }
    judged = []
    for reading, series in readings.items():
        ours = [100 * series[d] for d in distances]
        verdict, gap = _accuracy_verdict(list(zip(lecture_values, ours, strict=True)))
        judged.append((gap, reading, verdict, ours))
    gap, reading, verdict, closest = min(judged)
    shown = "; ".join(
        f"{name.split()[0]} " + " / ".join(_pct(v) for v in ours) for _, name, _, ours in judged
    )
    higher = sum(o > v for o, v in zip(closest, lecture_values, strict=True))
    why = (
        f"closer: the {reading}, largest gap {gap:.2f} points; ours higher at {higher} of "
        f"{len(closest)} distances"
    )
    return Claim(claim, source, lecture, shown, verdict, why)


def claims(data: ReportData) -> list[Claim]:
    """Every testable claim of the lectures, judged by this report's numbers."""
    row = data.row
    out: list[Claim] = [
        _accuracy_claim(
            row("mlp-10"),
            "A 2-layer net with 10 hidden nodes: 93 % test accuracy",
            [lectures.MLP10_ACC],
            [0],
        ),
        _accuracy_claim(row("mlp-32"), "… with 32 hidden nodes: 97 %", [lectures.MLP32_ACC], [0]),
        _accuracy_claim(
            row("mlp-32"),
            "Shifting the test images costs the MLP: 87 % at 1 px, 62 % at 2 px",
            lectures.MLP32_SHIFT[1:],
            [1, 2],
        ),
        _accuracy_claim(
            row("convnet"),
            "The 2-conv CNN: 99.04 % after 14 epochs",
            lectures.CNN_MNIST_SHIFT[:1],
            [0],
        ),
        _accuracy_claim(
            row("convnet"),
            "… 98.07 % / 92.06 % / 75 % after a 1 / 2 / 3-pixel shift",
            lectures.CNN_MNIST_SHIFT[1:],
            [1, 2, 3],
        ),
        _accuracy_claim(
            row("fashion-convnet"),
            "The same CNN on Fashion-MNIST: 92.55 % after 14 epochs",
            lectures.CNN_FASHION_SHIFT[:1],
            [0],
        ),
        _accuracy_claim(
            row("fashion-convnet"),
            "… 89.73 % / 75.94 % / 47.38 % after a 1 / 2 / 3-pixel shift",
            lectures.CNN_FASHION_SHIFT[1:],
            [1, 2, 3],
        ),
    ]
    for make in _JUDGED:
        out.append(make(data))
    return out


def _drop(r: ExperimentResult, d: int) -> float:
    axis = r.shift_axis or r.shift_mean
    return 100 * (r.shift_mean[0] - axis[d])


def _cnn_vs_mlp(data: ReportData) -> Claim:
    claim = "CNNs keep their accuracy under shifts far better than fully-connected nets"
    cnn, mlp = data.row("convnet"), data.row("mlp-32")
    if cnn is None or mlp is None:
        return Claim(claim, "lecture 002", "qualitative", "–", NOT_RUN, "rows not run")
    c2, m2, c3 = _drop(cnn, 2), _drop(mlp, 2), _drop(cnn, 3)
    ours = (
        f"2 px costs the CNN {c2:.1f} points, the MLP-32 {m2:.1f}; 3 px costs the CNN {c3:.1f} "
        "(axis-aligned means)"
    )
    if c2 < m2 / 2 and c3 <= 5:
        return Claim(claim, "lecture 002", "qualitative", ours, HOLDS, "")
    if c2 < m2:
        return Claim(
            claim,
            "lecture 002",
            "qualitative",
            ours,
            PARTLY,
            "more robust, not invariant: convolution is shift-equivariant, but the flattened "
            "fc layer after one 2×2 pool still sees where things are",
        )
    return Claim(claim, "lecture 002", "qualitative", ours, NOT_HERE, "the CNN lost as much")


def _more_pooling(data: ReportData) -> Claim:
    claim = "More pooling gives more translation invariance"
    one, two = data.row("convnet"), data.row("convnet-pool2")
    if one is None or two is None:
        return Claim(claim, "lecture 002", "qualitative", "–", NOT_RUN, "rows not run")
    d = [(_drop(one, k), _drop(two, k)) for k in (1, 2, 3)]
    ours = "drop at 1/2/3 px: one pool " + " / ".join(f"{a:.1f}" for a, _ in d)
    ours += ", two pools " + " / ".join(f"{b:.1f}" for _, b in d) + " points (axis-aligned)"
    better = [b < a for a, b in d]
    if all(better):
        return Claim(
            claim, "lecture 002", "qualitative", ours, HOLDS, "smaller drop at every distance"
        )
    if any(better):
        return Claim(claim, "lecture 002", "qualitative", ours, PARTLY, "smaller at some distances")
    return Claim(claim, "lecture 002", "qualitative", ours, NOT_HERE, "no smaller drop")


def _fashion_99(data: ReportData) -> Claim:
    claim = "A larger net reaches around 99 % on Fashion-MNIST"
    fashion = [r for r in data.experiments if r.dataset == "fashion_mnist"]
    best = max((100 * r.shift_mean[0] for r in fashion), default=None)
    ours = f"best Fashion-MNIST row here: {best:.2f} %" if best is not None else "–"
    return Claim(
        claim,
        "lecture 002",
        "≈ 99 %",
        ours + "; this project's best Fashion recipe (ResNet-20, 50 epochs, augmentation, "
        "docs/results.md): 94.87 %",
        NOT_HERE,
        "no net we trained came near 99 %; the lecture gives no net or number to check",
    )


def _lenet_20s(data: ReportData) -> Claim:
    claim = "LeNet-5 on 20,000 images takes around 20 seconds to train"
    r = data.row("lenet5-20k")
    if r is None or r.fit_seconds is None:
        return Claim(claim, "lecture 000", "≈ 20 s", "–", NOT_RUN, "row not run")
    ratio = r.fit_seconds / lectures.LENET5_20K_SECONDS
    per = r.fit_seconds / (r.epochs or 1)
    ours = f"{r.fit_seconds:.1f} s for {r.epochs} epochs ({per:.1f} s per epoch) on this CPU"
    verdict = HOLDS if 0.5 <= ratio <= 2 else PARTLY
    return Claim(
        claim,
        "lecture 000",
        "≈ 20 s",
        ours,
        verdict,
        "the lecture states neither epochs nor hardware",
    )


def _speed_claim(
    data: ReportData,
    study: str,
    claim: str,
    source: str,
    fast: str,
    slow: str,
    reason_not: str,
) -> Claim:
    speeds = data.studies.get(f"speed_{study}")
    if not speeds or fast not in speeds or slow not in speeds:
        return Claim(claim, source, "qualitative", "–", NOT_RUN, "rows not run")
    f, s = speeds[fast], speeds[slow]
    train = f["train_images_per_s"] / s["train_images_per_s"]
    infer = f["infer_images_per_s"] / s["infer_images_per_s"]
    ours = (
        f"{fast} trains at {train:.2f}× and infers at {infer:.2f}× the speed of {slow} "
        "(same run, this CPU)"
    )
    if train > 1 and infer > 1:
        return Claim(claim, source, "qualitative", ours, HOLDS, "")
    if train > 1 or infer > 1:
        return Claim(claim, source, "qualitative", ours, PARTLY, "faster in one of the two")
    return Claim(claim, source, "qualitative", ours, NOT_HERE, reason_not)


def _stride_faster(data: ReportData) -> Claim:
    return _speed_claim(
        data,
        "stride",
        "Strided convolutions are faster than dense ones",
        "lecture 000",
        "convnet-stride",
        "convnet",
        "the strided net was not faster",
    )


def _lenet_faster(data: ReportData) -> Claim:
    le, fc = data.row("lenet5-20k"), data.row("mlp-128-20k")
    macs = f" ({le.macs:,} vs {fc.macs:,} per image)" if le is not None and fc is not None else ""
    return _speed_claim(
        data,
        "curves",
        "LeNet-5 computes faster than the fully-connected net",
        "lecture 000",
        "lenet5-20k",
        "mlp-128-20k",
        "on a CPU a 784-128-10 net is one small matrix product per layer; LeNet-5's "
        f"convolutions cost several times its multiply-adds{macs}",
    )


def _stride_accuracy(data: ReportData) -> Claim:
    claim = "The cost of striding is a little accuracy"
    pool, stride = data.row("convnet"), data.row("convnet-stride")
    if pool is None or stride is None:
        return Claim(claim, "lecture 000", "qualitative", "–", NOT_RUN, "rows not run")
    diff = 100 * (pool.shift_mean[0] - stride.shift_mean[0])
    ours = (
        f"pooled {100 * pool.shift_mean[0]:.2f} %, strided {100 * stride.shift_mean[0]:.2f} % "
        f"({diff:+.2f} points in favour of pooling)"
    )
    if 0 < diff <= 1:
        return Claim(claim, "lecture 000", "qualitative", ours, HOLDS, "")
    if diff > 1:
        return Claim(claim, "lecture 000", "qualitative", ours, PARTLY, "more than a little")
    return Claim(claim, "lecture 000", "qualitative", ours, NOT_HERE, "striding cost nothing here")


def _convergence(data: ReportData) -> Claim:
    claim = "LeNet-5 converges faster and validates better than the fully-connected net"
    le, fc = data.row("lenet5-20k"), data.row("mlp-128-20k")
    if le is None or fc is None or not le.val_acc or not fc.val_acc:
        return Claim(claim, "lecture 000", "qualitative", "–", NOT_RUN, "rows not run")
    ours = (
        f"validation accuracy after epoch 1: {100 * le.val_acc[0]:.2f} % vs "
        f"{100 * fc.val_acc[0]:.2f} %; after the last: {100 * le.val_acc[-1]:.2f} % vs "
        f"{100 * fc.val_acc[-1]:.2f} %"
    )
    first, last = le.val_acc[0] > fc.val_acc[0], le.val_acc[-1] > fc.val_acc[-1]
    if first and last:
        return Claim(claim, "lecture 000", "qualitative", ours, HOLDS, "")
    if first or last:
        return Claim(claim, "lecture 000", "qualitative", ours, PARTLY, "only one of the two")
    return Claim(claim, "lecture 000", "qualitative", ours, NOT_HERE, "neither")


def _overfitting(data: ReportData) -> Claim:
    claim = "With less training data the net overfits more"
    rows = data.studies.get("overfit") or []
    if len(rows) < 2:
        return Claim(claim, "lecture 002", "figures only", "–", NOT_RUN, "rows not run")
    gaps = [100 * r["gap"] for r in rows]  # largest training set first
    ours = (
        "train − test gap: "
        + ", ".join(f"{r['n_train']:,} images {g:.1f}" for r, g in zip(rows, gaps, strict=True))
        + " points"
    )
    grows = all(b >= a for a, b in zip(gaps, gaps[1:], strict=False))
    if grows:
        return Claim(
            claim, "lecture 002", "figures only", ours, HOLDS, "the gap grows at every step"
        )
    if gaps[-1] > gaps[0]:
        return Claim(claim, "lecture 002", "figures only", ours, PARTLY, "not at every step")
    return Claim(claim, "lecture 002", "figures only", ours, NOT_HERE, "the gap did not grow")


def _redundancy(data: ReportData) -> Claim:
    claim = "Neighbouring feature-map values are largely redundant"
    n = data.studies.get("neighbours")
    if not n:
        return Claim(claim, "lecture 000", "qualitative", "–", NOT_RUN, "LeNet5Small not run")
    diff = float(n["mean_abs_neighbour_diff"])
    ours = (
        f"LeNet5Small map {n['channel']}: neighbours differ by {100 * diff:.1f} % of the map's "
        "range on average (active region)"
    )
    verdict = HOLDS if diff <= 0.15 else PARTLY if diff <= 0.3 else NOT_HERE
    return Claim(
        claim, "lecture 000", "qualitative", ours, verdict, "rule: ≤ 15 % holds, ≤ 30 % partly"
    )


def _pooling_shrinks(data: ReportData) -> Claim:
    claim = "Max pooling halves the feature map and keeps its strongest values"
    n = data.studies.get("neighbours")
    if not n:
        return Claim(claim, "lecture 000", "qualitative", "–", NOT_RUN, "LeNet5Small not run")
    b, a = n["before_shape"], n["after_shape"]
    ours = f"{b[1]}×{b[2]} → {a[1]}×{a[2]} per map"
    halves = a[1] * 2 == b[1] and a[2] * 2 == b[2]
    return Claim(claim, "lecture 000", "qualitative", ours, HOLDS if halves else NOT_HERE, "")


def _cosine_loss(data: ReportData) -> Claim:
    claim = "The loss −Σ fᵀy / ‖f‖ works equally well"
    ce, cos = data.row("lenet5"), data.row("lenet5-cosine")
    if ce is None or cos is None:
        return Claim(claim, "lecture 002", "qualitative", "–", NOT_RUN, "rows not run")
    diff = 100 * (ce.shift_mean[0] - cos.shift_mean[0])
    ours = (
        f"LeNet-5, same protocol: cross-entropy {100 * ce.shift_mean[0]:.2f} %, "
        f"−fᵀy/‖f‖ {100 * cos.shift_mean[0]:.2f} %"
    )
    verdict = HOLDS if abs(diff) <= CLOSE else PARTLY if abs(diff) <= NEAR else NOT_HERE
    return Claim(
        claim, "lecture 002", "qualitative", ours, verdict, f"{diff:+.2f} points for cross-entropy"
    )


def _backprop(data: ReportData) -> Claim:
    claim = (
        "Backpropagation, Theorem 1: ∂L/∂z_{k−1} = D_{k−1} W_kᵀ ∂L/∂z_k, ∂L/∂W_k = ∂L/∂z_k f_{k−1}ᵀ"
    )
    b = data.studies.get("backprop")
    if not b:
        return Claim(claim, "lecture 002", "a theorem", "–", NOT_RUN, "")
    worst = max(b.values())
    ours = f"largest difference to autograd {worst:.1e} (float64, ReLU / sigmoid / tanh)"
    return Claim(claim, "lecture 002", "a theorem", ours, HOLDS if worst < 1e-10 else NOT_HERE, "")


def _rings(data: ReportData) -> Claim:
    claim = "A small net separates the two rings after enough iterations"
    r = data.studies.get("rings")
    if not r:
        return Claim(claim, "lecture 002", "figures", "–", NOT_RUN, "")
    last = r[-1]
    ours = ", ".join(f"{s['iteration']}: {100 * s['accuracy']:.1f} %" for s in r)
    return Claim(
        claim,
        "lecture 002",
        "figures",
        "training accuracy " + ours,
        HOLDS if last["accuracy"] >= 0.99 else NOT_HERE,
        "",
    )


def _arithmetic(data: ReportData) -> Claim:
    rows = [w for w in data.worked_examples if w.get("lecture") is not None]
    wrong = [w["claim"] for w in rows if not w["match"]]
    return Claim(
        "The worked arithmetic (convolution sizes, weights, multiply-adds, RGB parameter counts)",
        "lecture 000",
        f"{len(rows)} numbers",
        f"{len(rows) - len(wrong)} of {len(rows)} recomputed identically",
        HOLDS if not wrong else PARTLY,
        ("differs: " + "; ".join(wrong)) if wrong else "",
    )


_JUDGED: tuple[Callable[[ReportData], Claim], ...] = (
    _cnn_vs_mlp,
    _more_pooling,
    _fashion_99,
    _lenet_20s,
    _lenet_faster,
    _convergence,
    _stride_faster,
    _stride_accuracy,
    _redundancy,
    _pooling_shrinks,
    _overfitting,
    _cosine_loss,
    _backprop,
    _rings,
    _arithmetic,
)
