"""Training step time in NCHW against NHWC (channels_last), per registered net, in ONE run.

ImageClassifier trains NHWC by default (``model.channels_last: true``); this is the measurement
behind that default. For each net: batch 128 of real MNIST training images (a fresh random batch
each step, gathered and normalised as imgcls does), Adam, forward + backward + step, the net and
its inputs in one layout or the other. The two layouts take turns, trial after trial, so a slow
spell of a shared machine hits both; printed per layout are the fastest and the median trial
(ms a step), and the paired ratio: NCHW / NHWC within each trial, its median over the trials
(> 1: NHWC is faster).

    python benchmarks/memory_format.py            # 5 nets, 6 trials each
    python benchmarks/memory_format.py --quick    # smoke test: 2 nets, 2 short trials
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imgcls.data import MNISTDataModule  # noqa: E402
from imgcls.data.provision import default_root, ensure_dataset  # noqa: E402
from imgcls.data.transforms import normalize  # noqa: E402
from imgcls.models import create_model  # noqa: E402

MNIST_STATS = (MNISTDataModule.mean, MNISTDataModule.std)
# (label, registered net, its arguments, steps a trial): steps sized so a trial takes ~1 s here.
NETS: list[tuple[str, str, dict[str, object], int]] = [
    ("MLP-128", "mlp", {"hidden": [128]}, 200),
    ("LeNet5Small", "lenet5_small", {}, 60),
    ("LeNet-5", "lenet5", {}, 60),
    ("2-conv net (32-64, fc 128)", "convnet", {}, 10),
    ("ResNet (16-32-64 x2)", "resnet", {}, 6),
]


def trial(
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    layout: torch.memory_format,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    batch: int,
) -> float:
    """ms per training step over ``steps`` steps of fresh random batches."""
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(labels), (batch,), generator=g)
        # As in training: the DataModule normalises, ImageClassifier.forward sets the layout.
        x = normalize(images.index_select(0, idx), *MNIST_STATS).contiguous(memory_format=layout)
        loss = F.cross_entropy(net(x), labels.index_select(0, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps * 1000


def compare(
    name: str,
    kwargs: dict[str, object],
    steps: int,
    trials: int,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
) -> dict[str, list[float]]:
    """Per layout, the ms a step of each trial; the layouts take turns."""
    layouts = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}
    setups = {}
    for label, layout in layouts.items():
        torch.manual_seed(0)
        net = create_model(name, **kwargs).to(memory_format=layout)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        trial(net, opt, layout, images, labels, max(2, steps // 4), batch)  # warm-up
        setups[label] = (net, opt, layout)
    times: dict[str, list[float]] = {label: [] for label in layouts}
    for _ in range(trials):
        for label, (net, opt, layout) in setups.items():
            times[label].append(trial(net, opt, layout, images, labels, steps, batch))
    return times


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--quick", action="store_true", help="smoke test: 2 nets, 2 short trials")
    p.add_argument("--data_dir", type=Path, default=None)
    args = p.parse_args()
    data_dir = args.data_dir or default_root()
    ensure_dataset("mnist", data_dir)
    dm = MNISTDataModule(data_dir=str(data_dir), val_size=0)
    dm.setup("fit")
    assert dm.train_set is not None
    images, labels = dm.train_set.images, dm.train_set.labels
    nets = NETS[1:3] if args.quick else NETS
    trials = 2 if args.quick else args.trials
    print(
        f"# training step, NCHW vs NHWC: batch {args.batch}, Adam, {trials} trials a layout, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}\n"
        "\n| net | NCHW ms/step (best / median) | NHWC ms/step (best / median) "
        "| NCHW / NHWC, paired |\n|---|---|---|---|"
    )
    for label, name, kwargs, steps in nets:
        t = compare(name, kwargs, 3 if args.quick else steps, trials, images, labels, args.batch)
        nchw, nhwc = t["NCHW"], t["NHWC"]
        paired = statistics.median(a / b for a, b in zip(nchw, nhwc, strict=True))
        print(
            f"| {label} | {min(nchw):.2f} / {statistics.median(nchw):.2f} "
            f"| {min(nhwc):.2f} / {statistics.median(nhwc):.2f} | {paired:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
