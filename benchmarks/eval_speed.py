"""Evaluation speed: ``imgcls evaluate shift``'s core against a bare forward loop.

For LeNet-5 (MNIST) in either memory format (NHWC is ImageClassifier's default) and the
ResNet-20 of configs/recipes/fashion_best.yaml (Fashion-MNIST, NHWC), in ONE run on ONE machine:

  bare     the net's forward alone, under ``torch.inference_mode``, over the very tensors the
           evaluation feeds it (every shifted copy, normalised, in the checkpoint's memory
           format, precomputed), in the same batches;
  shift    ``imgcls.insight.shift.evaluate_shift`` on the uint8 test images (shifting,
           normalising, argmax and counting included), as ``imgcls evaluate shift`` runs it;
  before   the evaluation as it was: the module's forward (NCHW weights, NHWC inputs when the
           checkpoint says channels_last), batches of 1000.

The three take turns for ``--rounds`` rounds; each figure is its fastest round (noise only
slows a round down). Prints images/s and the ratio shift/bare (target >= 0.85). The weights
are random (seeded): speed does not depend on them.

    python benchmarks/eval_speed.py            # 2,000 test images x 25 shifts, 3 rounds
    python benchmarks/eval_speed.py --quick    # smoke test: 200 images, 1 shift, 1 round
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imgcls.data.transforms import DIRECTIONS, normalize, translate  # noqa: E402
from imgcls.insight.shift import TorchPredictor, eval_batch_size, evaluate_shift  # noqa: E402
from imgcls.training.lightning_module import ImageClassifier  # noqa: E402

NETS: dict[str, dict[str, Any]] = {
    "LeNet-5 (MNIST, NCHW)": {"net": "lenet5", "dataset": "mnist", "channels_last": False},
    "LeNet-5 (MNIST, NHWC: the default)": {"net": "lenet5", "dataset": "mnist"},
    "ResNet-20 (Fashion-MNIST, NHWC)": {
        "net": "resnet",
        "net_args": {"widths": [16, 32, 64], "blocks": 3, "batch_norm": True},
        "dataset": "fashion_mnist",
        "channels_last": True,
    },
}


def _images(dataset: str, n: int, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test images, or random ones where the data set is not fetched."""
    try:
        from imgcls.insight.testset import load_test_set

        test = load_test_set(dataset, data_dir, n)
        return test.images, test.labels
    except Exception as e:  # speed does not depend on the pixels
        print(f"[eval_speed] {dataset}: random images ({e})", flush=True)
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
        return images, torch.randint(0, 10, (n,), generator=g)


def _model(spec: dict[str, Any]) -> ImageClassifier:
    from imgcls.data import DATAMODULES

    dm = DATAMODULES[spec["dataset"]]
    torch.manual_seed(0)
    return ImageClassifier(
        net=spec["net"],
        net_args=spec.get("net_args"),
        dataset=spec["dataset"],
        class_names=list(dm.class_names),
        mean=dm.mean,
        std=dm.std,
        **({"channels_last": spec["channels_last"]} if "channels_last" in spec else {}),
    ).eval()


def _feeds(p: TorchPredictor, images: torch.Tensor, max_shift: int, batch: int) -> list[Any]:
    """Every tensor ``evaluate_shift`` hands the net, precomputed."""
    layout = torch.channels_last if p.channels_last else torch.preserve_format
    out = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        shifted = [x] + [
            translate(x, d * uy, d * ux) for d in range(1, max_shift + 1) for uy, ux in DIRECTIONS
        ]
        out += [normalize(v, p.mean, p.std, layout) for v in shifted]
    return out


class _Before:
    """The evaluation as it was: the module's own forward, no layout or precision set up."""

    def __init__(self, model: ImageClassifier) -> None:
        self.model, self.name, self.dataset = model, "before", model.hparams["dataset"]
        self.mean, self.std = model.hparams["mean"], model.hparams["std"]

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(normalize(images, self.mean, self.std)).argmax(dim=1)


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="test images (default 2000)")
    ap.add_argument("--max_shift", type=int, default=3)
    ap.add_argument("--batch_size", type=int, default=eval_batch_size("cpu"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--nets", nargs="*", default=list(NETS), choices=list(NETS))
    ap.add_argument("--quick", action="store_true", help="200 images, 1 px, 1 round")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.max_shift, args.rounds = 200, 1, 1
    shifts = 1 + len(DIRECTIONS) * args.max_shift
    print(
        f"{args.n:,} images x {shifts} shifted copies, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, best of {args.rounds} round(s)",
        flush=True,
    )
    rows = []
    for label in args.nets:
        spec = NETS[label]
        images, labels = _images(spec["dataset"], args.n, args.data_dir)
        predictor = TorchPredictor(_model(spec), label)
        before = _Before(_model(spec))  # a fresh copy: the predictor converted its net's layout
        feeds = _feeds(predictor, images, args.max_shift, args.batch_size)
        total = args.n * shifts

        def bare(feeds: list[Any] = feeds, net: Any = predictor.net) -> None:
            with torch.inference_mode():
                for x in feeds:
                    net(x)

        def shift(p: Any = predictor, images: Any = images, labels: Any = labels) -> None:
            evaluate_shift(p, images, labels, args.max_shift, args.batch_size, progress=False)

        def old(p: Any = before, images: Any = images, labels: Any = labels) -> None:
            evaluate_shift(p, images, labels, args.max_shift, 1000, progress=False)

        bare()  # warm-up: allocator, oneDNN primitives
        best = {"bare": float("inf"), "shift": float("inf"), "before": float("inf")}
        for _ in range(args.rounds):
            for key, fn in (("bare", bare), ("shift", shift), ("before", old)):
                best[key] = min(best[key], _timed(fn))
        rate = {k: total / v for k, v in best.items()}
        rows.append((label, rate))
        print(f"[eval_speed] {label}: done", flush=True)
    print()
    print("| net | bare forward img/s | evaluate_shift img/s | shift/bare | before img/s |")
    print("|---|---|---|---|---|")
    for label, rate in rows:
        print(
            f"| {label} | {rate['bare']:.0f} | {rate['shift']:.0f} | "
            f"{rate['shift'] / rate['bare']:.3f} | {rate['before']:.0f} |"
        )
    for label, rate in rows:
        print(
            f"{label}: shift/bare = {rate['shift'] / rate['bare']:.3f} (target >= 0.85), "
            f"after/before = {rate['shift'] / rate['before']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
