"""The report as markdown: ``render_report`` (one function per section) and ``write_report``.

Rendering reads only a ``ReportData``, so it is tested on fixed numbers and a results.json
can be re-rendered without re-running anything. ``SECTIONS`` are the report's headings, in
order; each section's function writes its own.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from imgcls.insight.artifacts import log_to_wandb, markdown_table, write_json
from imgcls.insight.methods import METHOD_COLUMNS
from imgcls.insight.report.catalogue import MAX_SHIFT, RESNET_IMAGES, SPEED_PAIRS
from imgcls.insight.report.claims import ACCURACY_RULE, claims
from imgcls.insight.report.results import FIGURES, ExperimentResult, ReportData
from imgcls.utils import atomic_write_text

__all__ = ["SECTIONS", "render_report", "write_report"]

HOW_MADE = "How this report was made"
RESULTS = "Results beside the lectures"
CLAIMS = "Claims, each with a verdict"
SHIFT = "Translation robustness"
POOLING = "More pooling, more invariance?"
STRIDE = "Strided convolution or pooling"
CURVES = "LeNet-5 or a fully-connected net, on 20,000 images"
OVERFITTING = "Overfitting with less training data"
RESNET = "Residual blocks as the lecture writes them"
LOSS = "An alternative loss"
COST = "Parameters and multiply-adds"
TIME = "Training time"
LEARNED = "What the networks learn"
ERRORS = "Errors"
KERNELS = "Classic kernels"
RINGS = "Toy data: two rings"
BACKPROP = "Backpropagation as lecture 002 derives it"
WORKED_EXAMPLES = "The lectures' worked examples"
DIFFERENCES = "Differences from the lectures"
SECTIONS = (
    HOW_MADE,
    RESULTS,
    CLAIMS,
    SHIFT,
    POOLING,
    STRIDE,
    CURVES,
    OVERFITTING,
    RESNET,
    LOSS,
    COST,
    TIME,
    LEARNED,
    ERRORS,
    KERNELS,
    RINGS,
    BACKPROP,
    WORKED_EXAMPLES,
    DIFFERENCES,
)


def render_report(data: ReportData) -> str:
    """The report as markdown: the title, then every section of ``SECTIONS``, in order."""
    out = _title(data)
    for write_section in _SECTION_WRITERS:
        out += write_section(data)
    return "\n".join(out)


def _title(data: ReportData) -> list[str]:
    out = ["# The lectures' CNN experiments, reproduced with imgcls\n"]
    if data.mode == "quick":
        out.append(
            "> **Quick mode**: small training subsets and one epoch, evaluated on the first "
            f"{_n_test(data)} test images. The numbers show that the pipeline works, "
            "not what the nets can do, and the verdicts below judge them all the same; "
            "run `imgcls report` (without `--quick`) for the real comparison.\n"
        )
    return out


def _how_made(data: ReportData) -> list[str]:
    exps = data.experiments
    n_test = _n_test(data)
    out: list[str] = [f"## {HOW_MADE}\n"]
    m = data.machine
    out.append(f"```\n{data.command}\n```\n")
    out.append(
        f"Made {data.created} on {m.get('cpu_count')} CPU core(s) ({m.get('cpu')}), "
        f"{m.get('torch_threads')} torch thread(s), torch {m.get('torch')}, "
        f"Python {m.get('python')}; {m.get('platform')}. "
        f"Test accuracy is measured on {n_test} images of the official test set, which no run "
        "trains or selects on. What produced each row is read from its checkpoint and its "
        "run's config.yaml (`imgcls.insight.methods`), not written by hand. "
        "The lectures' protocol is `configs/lecture/protocol.yaml`: PyTorch's MNIST example, "
        "which lecture 002's CNN is (Adadelta lr 1.0, the rate × 0.7 after every epoch, "
        "batch 64, all 60,000 training images, 14 epochs, seed 1).\n"
    )
    cols = ["row", *(c for c, _ in METHOD_COLUMNS)]
    rows: list[list[Any]] = [
        [e.name, *(e.methods.get(k, "?") for _, k in METHOD_COLUMNS)] for e in exps
    ]
    out.append(markdown_table(cols, rows, align="l" * len(cols)))
    return out


def _results(data: ReportData) -> list[str]:
    out: list[str] = [f"\n## {RESULTS}\n"]
    cols = [
        "experiment",
        "data",
        "train images",
        "epochs",
        "test acc % (lecture)",
        "test acc % (ours)",
        "1 px: lecture / axis / 8-dir",
        "2 px: lecture / axis / 8-dir",
        "3 px: lecture / axis / 8-dir",
        "params",
        "multiply-adds",
        "train time",
    ]
    rows = []
    for e in _rows(data, "lectures"):
        shifts = []
        for d in (1, 2, 3):
            lec = e.lecture_shift[d] if e.lecture_shift and d < len(e.lecture_shift) else None
            axis = e.shift_axis or e.shift_mean
            ours = 100 * axis[d] if d < len(axis) else None
            eight = 100 * e.shift_mean[d] if d < len(e.shift_mean) else None
            shifts.append(f"{_pct(lec)} / {_pct(ours)} / {_pct(eight)}")
        rows.append(
            [
                f"{e.title} (`{e.name}`)",
                e.dataset,
                f"{e.n_train:,}" if e.n_train else "?",
                e.epochs or "?",
                _pct(e.lecture_acc),
                _pct(100 * e.shift_mean[0]),
                *shifts,
                f"{e.params:,}",
                f"{e.macs:,}",
                _secs(e.fit_seconds),
            ]
        )
    out.append(markdown_table(cols, rows))
    out.append(
        "\nEvery row trained with the lectures' protocol. Shift columns: the lecture's number, "
        "then ours as the mean of the four axis-aligned moves (left, right, up, down) and as "
        "the mean of all eight directions; the lecture does not say which direction it "
        "shifted (see Translation robustness). Multiply-adds are per image. "
        "– : the lectures give no number.\n"
    )
    return out


def _claims(data: ReportData) -> list[str]:
    out: list[str] = [f"## {CLAIMS}\n"]
    out.append(
        "Every claim in the two lectures that a measurement here can test, judged by this "
        f"run's numbers. Rule: {ACCURACY_RULE}; the other rules are in the *why* column or "
        "in `imgcls/insight/report/claims.py`.\n"
    )
    verdicts = claims(data)
    cols = ["claim", "source", "lecture", "ours", "verdict", "why"]
    rows = [[c.claim, c.source, c.lecture, c.ours, f"**{c.verdict}**", c.why] for c in verdicts]
    out.append(markdown_table(cols, rows, align="llllll"))
    return out


def _shift(data: ReportData) -> list[str]:
    exps = data.experiments
    out: list[str] = [f"\n## {SHIFT}\n"]
    out.append(
        "Every test image is moved d pixels (zero fill) in each of the 8 compass directions; "
        "a diagonal move shifts d rows *and* d columns, so it is the hardest. Three readings "
        "per distance: the mean of all 8, the worst direction, and the mean of the 4 "
        "axis-aligned moves. Lecture 002 gives one number per distance and no direction, "
        "so both means are set beside its numbers. Per-direction figures are in "
        "`results.json` (`shift_directions`).\n"
    )
    cols = (
        ["experiment", "0 px"]
        + [f"{d} px: 8-dir mean / worst / axis mean" for d in range(1, MAX_SHIFT + 1)]
        + ["lecture 0/1/2/3 px"]
    )
    rows = [
        [
            e.name,
            _pct(100 * e.shift_mean[0]),
            *_shift_cells(e),
            " / ".join(f"{v:g}" for v in e.lecture_shift) if e.lecture_shift else "–",
        ]
        for e in exps
    ]
    out.append(markdown_table(cols, rows))
    out.append(_which_shift(data))
    out.append("\n" + _fig(data, "shift_mnist") + "\n" + _fig(data, "shift_fashion"))
    return out


def _pooling(data: ReportData) -> list[str]:
    out: list[str] = [f"## {POOLING}\n"]
    out.append(
        'Lecture 002: "to get better translation invariance we can introduce more pooling '
        'into the network". The same 2-conv net with its one 2×2 max-pool after both convs '
        "(`convnet`) and with a pool after each conv (`convnet-pool2`, "
        "`net_args: {pool_after: each}`), same protocol; LeNet-5 (two pools) beside them. "
        "Accuracy lost (points) against the unshifted test set, axis-aligned mean:\n"
    )
    pooled = [e for e in (data.row(n) for n in ("convnet", "convnet-pool2", "lenet5")) if e]
    cols = ["net", "pools", "0 px", "1 px drop", "2 px drop", "3 px drop", "worst 3 px"]
    rows = []
    for e in pooled:
        axis = e.shift_axis or e.shift_mean
        pools = "1" if e.name == "convnet" else "2"
        rows.append(
            [
                e.name,
                pools,
                _pct(100 * e.shift_mean[0]),
                *(
                    f"{100 * (e.shift_mean[0] - axis[d]):.2f}" if d < len(axis) else ""
                    for d in (1, 2, 3)
                ),
                _pct(100 * e.shift_worst[-1]),
            ]
        )
    out.append(markdown_table(cols, rows) if rows else "*(not run)*\n")
    out.append("\n" + _fig(data, "shift_pooling"))
    return out


def _stride(data: ReportData) -> list[str]:
    out: list[str] = [f"## {STRIDE}\n"]
    out.append(
        "Lecture 000: strided convolution is faster, at the cost of a little accuracy. The "
        "lecture's 2-conv net with its max-pool (`convnet`) against the same net with stride 2 "
        "in both convs and no pool (`convnet-stride`), same protocol. Speed is measured in this "
        "run, one net right after the other (median of 20 training steps at batch 64, and "
        "inference at batch 256, on the CPU).\n"
    )
    out.append(_speed_table(data, "stride"))
    return out


def _curves(data: ReportData) -> list[str]:
    out: list[str] = [f"## {CURVES}\n"]
    out.append(
        "Lecture 000 trains LeNet-5 on a subsample of 20,000 images and says it takes around "
        "20 seconds to train, with faster convergence and better validation accuracy than "
        "the fully-connected net, and faster compute. Here both train on the same 20,000 "
        "images (class-balanced, seed 1) with 5,000 more held out for validation, lectures' "
        "protocol.\n"
    )
    out.append(_speed_table(data, "curves"))
    out.append("\n" + _fig(data, "curves_20k"))
    return out


def _overfitting(data: ReportData) -> list[str]:
    out: list[str] = [f"## {OVERFITTING}\n"]
    over = data.studies.get("overfit") or []
    steps = int(_rows(data, "overfit")[0].methods.get("global_step") or 0) if over else 0
    if over:
        out.append(
            "Lecture 002 shows MLP-10's hidden units trained on 60,000, 10,000, 1,000 and 100 "
            f"images. Here each size trains for the same {steps:,} optimizer steps at batch 64 "
            "with constant-rate Adam (a per-epoch schedule would give 100 images two steps an "
            "epoch); train accuracy is the final model on its own training images.\n"
        )
        cols = ["train images", "train acc %", "test acc %", "gap (points)"]
        rows = [
            [
                f"{r['n_train']:,}",
                _pct(100 * r["train_acc"]),
                _pct(100 * r["test_acc"]),
                f"{100 * r['gap']:.2f}",
            ]
            for r in over
        ]
        out.append(markdown_table(cols, rows))
    else:
        out.append("*(not run)*\n")
    out.append("\n" + _fig(data, "overfitting"))
    return out


def _resnet(data: ReportData) -> list[str]:
    out: list[str] = [f"## {RESNET}\n"]
    out.append(
        "Lecture 002's eq. (6): f_k = f_{k−1} + W_{k,1} σ(W_{k,2} f_{k−1} + b_k) — no "
        "activation after the sum, no batch norm (`resnet` with `block: lecture, "
        "batch_norm: false`), beside He et al.'s block (batch norm, ReLU after the sum), the "
        "`resnet` default. Widths 16 and 32, two blocks each; the lectures' protocol on "
        f"{RESNET_IMAGES:,} of the training images (these nets cost as much per image as the "
        "2-conv net).\n"
    )
    cols = ["block", "params", "test acc %", "3 px axis mean %", "time per epoch"]
    rows = [
        [
            e.title,
            f"{e.params:,}",
            _pct(100 * e.shift_mean[0]),
            _pct(100 * (e.shift_axis or e.shift_mean)[-1]),
            _per_epoch(e),
        ]
        for e in _rows(data, "resnet")
    ]
    out.append(markdown_table(cols, rows) if rows else "*(not run)*\n")
    return out


def _loss(data: ReportData) -> list[str]:
    out: list[str] = [f"\n## {LOSS}\n"]
    out.append(
        'Lecture 002: the loss L = −Σ f_L(x_i)ᵀ y_i / ‖f_L(x_i)‖ "works equally well" '
        "(`--model.loss cosine`; our mean over the batch rather than the sum, so that it does "
        "not scale with the batch). LeNet-5 with each loss, lectures' protocol.\n"
    )
    cols = ["loss", "test acc %", "3 px axis mean %"]
    rows = [
        [
            e.methods.get("loss", "?"),
            _pct(100 * e.shift_mean[0]),
            _pct(100 * (e.shift_axis or e.shift_mean)[-1]),
        ]
        for e in (data.row("lenet5"), data.row("lenet5-cosine"))
        if e is not None
    ]
    out.append(markdown_table(cols, rows) if rows else "*(not run)*\n")
    return out


def _cost(data: ReportData) -> list[str]:
    exps = data.experiments
    out: list[str] = [f"\n## {COST}\n"]
    out.append(
        "Lecture 000: a conv layer needs few weights because a filter is shared across the "
        "image, but sliding it over every position costs many multiply-adds; and a colour "
        "image makes fully-connected nets worse (2,352 features, 301,056 weights for 128 "
        "units, against 75 for a 5×5×3 filter: see the worked examples). "
        "Counted per image: a conv layer (C_in·K·K per output element), a linear layer "
        "(in·out), batch norm (one per element); biases, activations and pooling are not "
        "counted.\n"
    )
    cols = ["experiment", "params", "multiply-adds", "multiply-adds per param"]
    rows = [[e.name, f"{e.params:,}", f"{e.macs:,}", f"{e.macs / e.params:.1f}"] for e in exps]
    out.append(markdown_table(cols, rows))
    for name, table in data.layer_tables.items():
        out.append(f"\n<details><summary>Per layer: {name}</summary>\n\n{table}\n</details>\n")
    return out


def _time(data: ReportData) -> list[str]:
    exps = data.experiments
    m = data.machine
    out: list[str] = [f"\n## {TIME}\n"]
    out.append(
        f"Wall time of training on this machine ({m.get('torch_threads')} CPU thread(s)); "
        "a row given as a checkpoint of `imgcls fit` reads its epoch times from the run's "
        "metrics.csv. The lectures' times come from other hardware.\n"
    )
    cols = ["experiment", "train images", "epochs", "train time", "time per epoch", "origin"]
    rows = [
        [
            e.name,
            f"{e.n_train:,}" if e.n_train else "?",
            e.epochs or "?",
            _secs(e.fit_seconds),
            _per_epoch(e),
            e.origin,
        ]
        for e in exps
    ]
    out.append(markdown_table(cols, rows))
    return out


def _learned(data: ReportData) -> list[str]:
    out: list[str] = [f"\n## {LEARNED}\n"]
    out.append(
        "For greyscale digits the first conv layer learns oriented edges and strokes "
        "(lecture 000); an MLP's hidden units are whole-image templates (lecture 002). "
        "The penultimate layer separates the classes well enough for a linear head, which "
        "the PCA shows in 2-D, for the fully-connected net (lecture 000's figure) and the CNN.\n"
    )
    for key in (
        "filters_convnet",
        "feature_maps_convnet",
        "filters_lenet5",
        "pooling_maps_small",
    ):
        out.append(_fig(data, key))
    n = data.studies.get("neighbours")
    if n:
        out.append(
            f"Raw values around the strongest activation of LeNet5Small's map {n['channel']} "
            f"({n['layer']}, test image {n['image_index']}, peak at row {n['peak'][0]}, "
            f"column {n['peak'][1]}): lecture 000's point that neighbouring values are largely "
            "redundant. Neighbours differ by "
            f"{100 * float(n['mean_abs_neighbour_diff']):.1f} % of the map's range on average "
            "(over pairs where both are active).\n"
        )
        window = n["window"]
        out.append(
            markdown_table(
                [""] + [f"col {n['left'] + j}" for j in range(len(window[0]))],
                [[f"row {n['top'] + i}", *r] for i, r in enumerate(window)],
            )
        )
    for key in ("templates_mlp10", "pca_mlp128", "pca_convnet"):
        out.append(_fig(data, key))
    return out


def _errors(data: ReportData) -> list[str]:
    out: list[str] = [f"## {ERRORS}\n"]
    for key in (
        "confusion_convnet",
        "misclassified_convnet",
        "samples_fashion",
        "confusion_fashion",
    ):
        out.append(_fig(data, key))
    return out


def _kernels(data: ReportData) -> list[str]:
    out: list[str] = [f"## {KERNELS}\n"]
    out.append(
        "What ML calls convolution is cross-correlation: "
        "the kernel slides unflipped (lecture 000). "
        "Kernels from lecture 002 (Sobel, Laplacian, outline, emboss, sharpen) "
        "and lecture 000's 5×5 prong filter.\n"
    )
    out.append(_fig(data, "kernels"))
    return out


def _rings(data: ReportData) -> list[str]:
    out: list[str] = [f"## {RINGS}\n"]
    rings = data.studies.get("rings") or []
    out.append(
        "Lecture 002's toy problem: two classes on concentric rings, and a fully-connected "
        "net's decision boundary after 50, 150, 250, 350, 500 and 3,000 iterations "
        "(`imgcls.insight.toy`: 400 points, a 2-16-16-2 tanh net, full-batch Adam lr 5e-4, "
        "seed 0). Training accuracy: "
        + (", ".join(f"{s['iteration']}: {100 * s['accuracy']:.1f} %" for s in rings) or "not run")
        + ".\n"
    )
    out.append(_fig(data, "rings"))
    return out


def _backprop(data: ReportData) -> list[str]:
    out: list[str] = [f"## {BACKPROP}\n"]
    bp = data.studies.get("backprop") or {}
    out.append(
        "Theorem 1 of lecture 002, with z_k = W_k f_{k−1} + b_k and D_k = diag(σ'(z_k)): "
        "∂L/∂z_{k−1} = D_{k−1} W_kᵀ ∂L/∂z_k, ∂L/∂W_k = ∂L/∂z_k f_{k−1}ᵀ, ∂L/∂b_k = ∂L/∂z_k. "
        "`imgcls.insight.backprop` computes them with explicit matrices (no autograd) for the "
        "lecture's Figure 1 net (6 inputs, hidden 2, 6, 4; 3 outputs, soft-max "
        "negative log-likelihood, a batch of 5, float64) and compares every W_k and b_k with "
        "`torch.autograd`. Largest absolute difference: "
        + (", ".join(f"{a} {v:.1e}" for a, v in bp.items()) or "not run")
        + ". `tests/insight/test_backprop.py` also checks that a wrong equation (D left out) "
        "is caught.\n"
    )
    return out


def _worked_examples(data: ReportData) -> list[str]:
    out: list[str] = [f"## {WORKED_EXAMPLES}\n"]
    out.append(
        "Recomputed by `imgcls.insight.kernels` and `imgcls.insight.cost` "
        "(and checked by the tests).\n"
    )
    cols = ["lecture 000", "lecture says", "imgcls computes", "same"]
    rows = [
        [w["claim"], w["lecture"], w["ours"], "yes" if w["match"] else "**no**"]
        for w in data.worked_examples
    ]
    out.append(markdown_table(cols, rows, align="llll"))
    out.append(
        "\nLecture 000 prints the pooled size as (H − K)/(s + 1); "
        "its own example (3×3, K = 2, s = 1 → 2×2) follows ⌊(H − K)/s⌋ + 1, "
        "which `imgcls summary --size H --kernel K --pool` uses.\n"
    )
    return out


def _differences(data: ReportData) -> list[str]:
    quick = data.mode == "quick"
    out: list[str] = [f"## {DIFFERENCES}\n"]
    diffs = [
        "The lectures do not say how their MLPs or LeNet-5 were trained; here they use the "
        "CNN's protocol (PyTorch's MNIST example), so every lecture row is trained alike.",
        "Lecture 002's CNN is that example's net exactly (dropout 0.25 and 0.5 included); its "
        "test loader normalises with the same mean and std.",
        "Shifts: the lecture gives one number per distance and no direction; the results "
        "table compares with the mean of the four axis-aligned moves (left, right, up, down), "
        "and the 8-direction mean and worst are beside it.",
        "LeNet-5 is the 28×28 variant (first conv padded by 2), ReLU and max-pool "
        "(lecture 000's notebook).",
        "The overfitting, ResNet and toy studies use protocols of their own, stated in their "
        "sections and in the methods table; the lectures give none.",
        "Training time is measured on this machine's CPU; "
        "the lectures' times come from other hardware.",
    ]
    if quick:
        diffs.insert(
            0,
            "Quick mode: small subsets, 1 epoch, a test subset; not comparable with the lectures.",
        )
    out.append("".join(f"- {d}\n" for d in diffs + data.notes))
    return out


_SECTION_WRITERS: tuple[Callable[[ReportData], list[str]], ...] = (
    _how_made,
    _results,
    _claims,
    _shift,
    _pooling,
    _stride,
    _curves,
    _overfitting,
    _resnet,
    _loss,
    _cost,
    _time,
    _learned,
    _errors,
    _kernels,
    _rings,
    _backprop,
    _worked_examples,
    _differences,
)


# ----------------------------------------------------------------------------- helpers


def _n_test(data: ReportData) -> str:
    """The test-set sizes of the rows, e.g. '10,000' ('0' with no rows)."""
    return ", ".join(sorted({f"{e.n_test:,}" for e in data.experiments})) or "0"


def _pct(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _secs(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} s"


def _fig(data: ReportData, key: str) -> str:
    caption = FIGURES[key][1]
    if key not in data.figures:
        return f"*({caption}: not produced in this run.)*\n"
    return f"![{caption}]({data.figures[key]})\n\n*{caption}.*\n"


def _rows(data: ReportData, study: str) -> list[ExperimentResult]:
    return [e for e in data.experiments if e.study == study]


def _shift_cells(e: ExperimentResult) -> list[str]:
    """'8-dir mean / worst / axis mean' for 1, 2, 3 px."""
    cells = []
    for d in range(1, MAX_SHIFT + 1):
        if d >= len(e.shift_mean):
            cells.append("")
            continue
        axis = (e.shift_axis or e.shift_mean)[d]  # results of older reports have no axis figures
        cells.append(
            f"{100 * e.shift_mean[d]:.2f} / {100 * e.shift_worst[d]:.2f} / {100 * axis:.2f}"
        )
    return cells


def _per_epoch(e: ExperimentResult) -> str:
    if e.epoch_seconds:
        return _secs(statistics.median(e.epoch_seconds))
    if e.fit_seconds is not None and e.epochs:
        return _secs(e.fit_seconds / e.epochs)
    return "n/a"


def _which_shift(data: ReportData) -> str:
    """Which reading of ours comes closest to each lecture shift series (mean |gap|)."""
    series = [e for e in data.experiments if e.lecture_shift and len(e.lecture_shift) > 1]
    if not series:
        return ""
    cols = [
        "experiment",
        "lecture 1/2/3 px",
        "8-direction mean",
        "axis-aligned mean",
        "closest single direction",
    ]
    rows, winners = [], []
    for e in series:
        lec = list(e.lecture_shift or [])[1:]

        def gap(values: Sequence[float], lec: list[float] = lec) -> float:
            return sum(abs(100 * v - w) for v, w in zip(values[1:], lec, strict=False)) / len(lec)

        readings = {
            "8-direction mean": gap(e.shift_mean),
            "axis-aligned mean": gap(e.shift_axis or e.shift_mean),
        }
        directions = {k: gap(v) for k, v in e.shift_directions.items()}
        best_dir = min(directions, key=lambda k: directions[k]) if directions else None
        winners.append(min(readings, key=lambda k: readings[k]))
        rows.append(
            [
                e.name,
                " / ".join(f"{v:g}" for v in lec),
                f"{readings['8-direction mean']:.2f}",
                f"{readings['axis-aligned mean']:.2f}",
                f"{best_dir} {directions[best_dir]:.2f}" if best_dir else "–",
            ]
        )
    same = len(set(winners)) == 1
    verdict = (
        f"The {winners[0]} is the closer reading for every series."
        if same
        else "No one reading is closest for every series ("
        + ", ".join(f"{e.name}: {w}" for e, w in zip(series, winners, strict=True))
        + "), so the lecture's direction cannot be recovered from its numbers; the claims "
        "judge each series by the closer of the two means."
    )
    return (
        "\nWhich of our readings is closest to the lecture's shifted accuracies "
        "(mean absolute gap over its distances, points):\n\n"
        + markdown_table(cols, rows)
        + f"\n{verdict}\n"
    )


def _speed_table(data: ReportData, study: str) -> str:
    """Accuracy, training and inference speed of a pair measured in one run."""
    speeds = data.studies.get(f"speed_{study}") or {}
    names = SPEED_PAIRS.get(study, ())
    cols = [
        "net",
        "params",
        "multiply-adds",
        "test acc %",
        "train step ms (batch 64)",
        "train images/s",
        "inference images/s",
        "time per epoch in its run",
    ]
    if study == "curves":
        cols.append("val acc % after epoch 1 / last")
    rows = []
    for name in names:
        e, sp = data.row(name), speeds.get(name)
        if e is None or sp is None:
            continue
        row: list[Any] = [
            name,
            f"{e.params:,}",
            f"{e.macs:,}",
            _pct(100 * e.shift_mean[0]),
            f"{sp['train_step_ms']:.2f}",
            f"{sp['train_images_per_s']:,.0f}",
            f"{sp['infer_images_per_s']:,.0f}",
            _per_epoch(e),
        ]
        if study == "curves":
            row.append(
                f"{100 * e.val_acc[0]:.2f} / {100 * e.val_acc[-1]:.2f}" if e.val_acc else "–"
            )
        rows.append(row)
    if not rows:
        return "*(not run)*\n"
    return markdown_table(cols, rows)


def write_report(data: ReportData, out_dir: str | os.PathLike[str]) -> Path:
    """Write README.md (the report) and results.json (every number) into ``out_dir``; log to W&B."""
    out = Path(out_dir)
    md = out / "README.md"
    atomic_write_text(md, render_report(data))
    write_json(out / "results.json", data.to_dict())
    figures = {k: out / v for k, v in data.figures.items()}
    cols = [
        "experiment",
        "dataset",
        "test_acc",
        "shift1",
        "shift2",
        "shift3",
        "params",
        "macs",
        "fit_seconds",
    ]
    rows = [
        [e.name, e.dataset, *e.shift_mean[:4], e.params, e.macs, e.fit_seconds]
        for e in data.experiments
    ]
    log_to_wandb("report", figures, {"results": (cols, rows)})
    return md
