"""Latency and throughput of each net: torch eager vs onnxruntime on the CPU, from one run.

    python benchmarks/onnx_latency.py                       # every registered net, random init
    python benchmarks/onnx_latency.py --nets lenet5 --quick
    python benchmarks/onnx_latency.py --ckpt runs/mnist-lenet5/version_0/checkpoints/best.ckpt

Both sides compute the same thing, the exported graph: float pixels in [0, 1] -> normalise ->
net -> (logits, probabilities) (``imgcls.export.graph.PixelClassifier``); torch runs it eagerly
under ``inference_mode``, onnxruntime runs the ONNX file that ``imgcls export`` would write
(same exporter, same opset). Weights are random unless ``--ckpt`` is given: latency does not
depend on them.

Threads are the same for both sides: 1 at batch 1 (the latency case; thread hand-off costs
more than it saves on a net this small), all cores (or ``--threads N``) for the larger
batches; on a machine shared with other jobs ``--threads 1`` gives steadier figures.
onnxruntime runs with ORT_ENABLE_ALL graph optimisations (conv + activation fusion, constant
folding) and sequential execution.

Each cell: warm-up, then timed single calls until a time budget; p50 / p95 of the per-call
latency and throughput = images / total time. The table is markdown; ``--check`` exits 1
if LeNet-5 at batch 1 misses the target (onnxruntime <= 60 µs and >= 5x faster than torch).

``--int8`` adds a second table: the int8 model ``imgcls export --int8`` writes
(``imgcls.export.int8.quantize_static_qdq``: static QDQ, per-channel int8 weights, uint8
activations, MinMax) against the fp32 ONNX model, throughput at batch 1 and 64, both measured
in this run, alternating fp32 / int8 for ``--int8_rounds`` rounds and keeping each side's best
(the least disturbed by other processes). Calibration uses the MNIST validation split when the
data is present, random pixels otherwise (speed does not depend on the scales). The target:
int8 >= 1.5x fp32 at batch 64 for convnet and resnet. ``--int8_variants`` also times the
variants onnxruntime offers (per-tensor weights, int8 activations, reduce_range, the first
conv left in float, QOperator format), each as a ratio to the same fp32 figure.

    python benchmarks/onnx_latency.py --nets convnet,resnet,lenet5 --int8 --int8_variants
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from imgcls.export.graph import OPSET, PixelClassifier, to_onnx
from imgcls.models import create_model, list_models

BATCHES = (1, 64, 1024)
TARGET_US, TARGET_SPEEDUP = 60.0, 5.0  # LeNet-5, batch 1, onnxruntime CPU
INT8_BATCHES = (1, 64)
INT8_TARGET, INT8_TARGET_NETS, INT8_TARGET_BATCH = 1.5, ("convnet", "resnet"), 64
INT8_CALIBRATION = 500
# name -> quantize_static_qdq keyword arguments; "int8" is what `imgcls export --int8` ships
INT8_VARIANTS: dict[str, dict[str, object]] = {
    "int8": {},
    "per-tensor": {"per_channel": False},
    "s8 act": {"activation_type": "QInt8"},
    "reduce_range": {"reduce_range": True},
    "1st conv fp32": {"exclude_first_conv": True},
    "QOperator": {"quant_format": "QOperator"},
}


@dataclass
class Timing:
    p50_us: float
    p95_us: float
    throughput: float  # images / s
    reps: int


def measure(
    fn: Callable[[], object], batch: int, budget_s: float, warmup_s: float, min_reps: int = 5
) -> Timing:
    """Time single calls of ``fn`` until ``budget_s`` has passed (after ``warmup_s`` of warm-up)."""
    end = time.perf_counter() + warmup_s
    fn()
    while time.perf_counter() < end:
        fn()
    times: list[int] = []
    start = time.perf_counter_ns()
    stop = start + int(budget_s * 1e9)
    while len(times) < min_reps or time.perf_counter_ns() < stop:
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    total_s = (time.perf_counter_ns() - start) / 1e9
    t = np.asarray(times, dtype=np.float64) / 1e3
    return Timing(
        float(np.percentile(t, 50)),
        float(np.percentile(t, 95)),
        batch * len(times) / total_s,
        len(times),
    )


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def fmt_us(us: float) -> str:
    return f"{us:,.1f} µs" if us < 10_000 else f"{us / 1e3:,.1f} ms"


def bench_net(
    wrapper: PixelClassifier,
    onnx_path: Path,
    batches: tuple[int, ...],
    budget_s: float,
    warmup_s: float,
    cores: int,
) -> dict[int, tuple[int, Timing, Timing]]:
    """{batch: (threads, torch timing, onnxruntime timing)} for one net."""
    out = {}
    rng = np.random.default_rng(0)
    for batch in batches:
        threads = 1 if batch == 1 else cores
        x = rng.random((batch, 1, 28, 28), dtype=np.float32)  # (B, C, H, W) pixels in [0, 1]
        xt = torch.from_numpy(x)
        torch.set_num_threads(threads)
        with torch.inference_mode():
            t_torch = measure(functools.partial(wrapper, xt), batch, budget_s, warmup_s)
        # Created after torch's turn, so that its spinning worker threads cannot slow torch down.
        sess = ort_session(onnx_path, threads)
        t_ort = measure(functools.partial(sess.run, None, {"pixels": x}), batch, budget_s, warmup_s)
        del sess
        out[batch] = (threads, t_torch, t_ort)
    return out


def calibration_pixels(n: int) -> tuple[np.ndarray, str]:
    """(n, 1, 28, 28) float32 pixels for calibration, and where they came from."""
    try:
        from imgcls.data import get_datamodule

        dm = get_datamodule("mnist")
        dm.setup("fit")
        assert dm.val_set is not None
        return dm.val_set.images[:n].numpy().astype(np.float32) / 255, "MNIST validation split"
    except Exception:  # no data here: speed does not depend on the calibration images
        pixels = np.random.default_rng(1).random((n, 1, 28, 28), dtype=np.float32)
        return pixels, "random pixels (MNIST not fetched)"


def int8_model(fp32_path: Path, pixels: np.ndarray, variant: dict[str, object]) -> bytes:
    from imgcls.export.int8 import quantize_static_qdq

    kwargs = dict(variant)
    exclude = []
    if kwargs.pop("exclude_first_conv", False):
        import onnx

        convs = [n.name for n in onnx.load(str(fp32_path)).graph.node if n.op_type == "Conv"]
        exclude = convs[:1]
    return quantize_static_qdq(
        fp32_path,
        pixels,
        nodes_to_exclude=exclude,
        **kwargs,  # type: ignore[arg-type]
    ).SerializeToString()


def bench_int8(
    models: dict[str, Path],
    batches: tuple[int, ...],
    budget_s: float,
    warmup_s: float,
    cores: int,
    rounds: int,
) -> dict[int, tuple[int, dict[str, float]]]:
    """{batch: (threads, {model name: best throughput over rounds})}, the models of one net
    timed alternately so that a burst of load elsewhere hits them alike."""
    out = {}
    rng = np.random.default_rng(0)
    for batch in batches:
        threads = 1 if batch == 1 else cores
        x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        sessions = {name: ort_session(path, threads) for name, path in models.items()}
        best = dict.fromkeys(models, 0.0)
        for _ in range(rounds):
            for name, sess in sessions.items():
                t = measure(
                    functools.partial(sess.run, None, {"pixels": x}), batch, budget_s, warmup_s
                )
                best[name] = max(best[name], t.throughput)
        del sessions
        out[batch] = (threads, best)
    return out


def int8_markdown(rows: list[tuple[str, int, int, dict[str, float]]], variants: list[str]) -> str:
    head = ["net", "batch", "threads", "fp32 img/s", "int8 img/s", "int8/fp32"]
    head += [f"{v} /fp32" for v in variants if v != "int8"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" if i > 0 else "---" for i in range(len(head))) + "|",
    ]
    for net, batch, threads, tput in rows:
        cells = [net, str(batch), str(threads), f"{tput['fp32']:,.0f}", f"{tput['int8']:,.0f}"]
        cells += [f"{tput[v] / tput['fp32']:.2f}×" for v in variants]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_row(name: str, batch: int, threads: int, t_torch: Timing, t_ort: Timing) -> list[str]:
    return [
        name,
        str(batch),
        str(threads),
        fmt_us(t_torch.p50_us),
        fmt_us(t_torch.p95_us),
        f"{t_torch.throughput:,.0f}",
        fmt_us(t_ort.p50_us),
        fmt_us(t_ort.p95_us),
        f"{t_ort.throughput:,.0f}",
        f"{t_ort.p50_us / t_torch.p50_us:.3f}",
        f"{t_torch.p50_us / t_ort.p50_us:.1f}×",
    ]


def markdown(rows: list[list[str]]) -> str:
    head = [
        "net",
        "batch",
        "threads",
        "torch p50",
        "torch p95",
        "torch img/s",
        "ort p50",
        "ort p95",
        "ort img/s",
        "ort/torch p50",
        "speed-up",
    ]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" if i > 0 else "---" for i in range(len(head))) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--nets",
        default=",".join(list_models()),
        help="comma-separated registered nets (default: all)",
    )
    p.add_argument(
        "--ckpt", default=None, help="benchmark this checkpoint's net (with its weights) instead"
    )
    p.add_argument(
        "--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes"
    )
    p.add_argument(
        "--quick", action="store_true", help="short time budget per cell (a smoke run, noisier)"
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of timed calls per cell (default 2, quick 0.2)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for batches > 1 on both sides (default: all cores; batch 1 always uses 1)",
    )
    p.add_argument(
        "--check", action="store_true", help="exit 1 if LeNet-5 batch 1 misses the target"
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="also time the int8 QDQ model against the fp32 ONNX model at batch 1 and 64",
    )
    p.add_argument(
        "--int8_variants",
        action="store_true",
        help="with --int8: also time per-tensor, int8-activation, reduce_range, first-conv-"
        "in-float and QOperator variants",
    )
    p.add_argument(
        "--int8_rounds", type=int, default=3, help="alternating fp32/int8 rounds (default 3)"
    )
    args = p.parse_args(argv)

    budget = args.budget if args.budget is not None else (0.2 if args.quick else 2.0)
    warmup = min(0.5, budget / 2)
    batches = tuple(int(b) for b in args.batches.split(","))
    cores = args.threads or os.cpu_count() or 1
    models: list[tuple[str, PixelClassifier]] = []
    if args.ckpt:
        from imgcls.training.checkpoint_io import load_classifier

        clf = load_classifier(args.ckpt)
        models.append(
            (clf.hparams.net, PixelClassifier(clf.net, clf.hparams.mean, clf.hparams.std).eval())
        )
    else:
        torch.manual_seed(0)
        for name in args.nets.split(","):
            models.append((name, PixelClassifier(create_model(name), 0.1307, 0.3081).eval()))

    rows: list[list[str]] = []
    lenet5_b1: tuple[Timing, Timing] | None = None
    int8_rows: list[tuple[str, int, int, dict[str, float]]] = []
    variants = list(INT8_VARIANTS) if args.int8_variants else ["int8"]
    pixels, calib_source = calibration_pixels(INT8_CALIBRATION) if args.int8 else (np.empty(0), "")
    with tempfile.TemporaryDirectory() as tmp:
        for name, wrapper in models:
            path = Path(tmp) / f"{name}.onnx"
            path.write_bytes(
                to_onnx(
                    wrapper.net, wrapper.mean, wrapper.std, (1, 28, 28), OPSET
                ).SerializeToString()
            )
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            for batch, (threads, t_torch, t_ort) in bench_net(
                wrapper, path, batches, budget, warmup, cores
            ).items():
                rows.append(table_row(name, batch, threads, t_torch, t_ort))
                if name == "lenet5" and batch == 1:
                    lenet5_b1 = (t_torch, t_ort)
            if args.int8:
                print(f"[bench] {name} int8 vs fp32 ...", file=sys.stderr, flush=True)
                paths = {"fp32": path}
                for v in variants:
                    paths[v] = Path(tmp) / f"{name}.{v.replace(' ', '_')}.onnx"
                    paths[v].write_bytes(int8_model(path, pixels, INT8_VARIANTS[v]))
                for batch, (threads, tput) in bench_int8(
                    paths, INT8_BATCHES, budget, warmup, cores, args.int8_rounds
                ).items():
                    int8_rows.append((name, batch, threads, tput))

    print(
        f"CPU: {cpu_name()}, {os.cpu_count()} cores; threads at batch > 1: {cores}; "
        f"torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}, opset {OPSET}; {budget:g} s per cell\n"
    )
    print(markdown(rows))
    if int8_rows:
        print(
            f"\nint8 (static QDQ, per-channel, uint8 activations, MinMax on "
            f"{INT8_CALIBRATION} images: {calib_source}) vs fp32 ONNX, onnxruntime CPU "
            f"ORT_ENABLE_ALL, best of {args.int8_rounds} alternating rounds\n"
        )
        print(int8_markdown(int8_rows, variants))
        for net, batch, _, tput in int8_rows:
            if net in INT8_TARGET_NETS and batch == INT8_TARGET_BATCH:
                ratio = tput["int8"] / tput["fp32"]
                print(
                    f"{net} batch {batch}: int8/fp32 {ratio:.2f}× (target >= "
                    f"{INT8_TARGET:g}×): {'PASS' if ratio >= INT8_TARGET else 'MISS'}"
                )
    if lenet5_b1 is None:
        return 0
    torch_us, ort_us = lenet5_b1[0].p50_us, lenet5_b1[1].p50_us
    ok = ort_us <= TARGET_US and torch_us / ort_us >= TARGET_SPEEDUP
    print(
        f"\nLeNet-5 batch 1: onnxruntime {ort_us:.1f} µs (target <= {TARGET_US:.0f}), "
        f"{torch_us / ort_us:.1f}× faster than torch eager {torch_us:.1f} µs "
        f"(target >= {TARGET_SPEEDUP:.0f}×): {'PASS' if ok else 'MISS'}"
    )
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
