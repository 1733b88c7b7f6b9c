"""GPU benchmark: training images/s at batch 512 in fp32, 16-mixed and bf16-mixed, each with and
without ``torch.compile``, then time to 99 % MNIST test accuracy for the speed-run recipe
(configs/recipes/mnist_speedrun.yaml, or mnist_lenet5_fast.yaml where there is none).

Throughput is a plain training step (forward, cross-entropy, backward, Adam) of the net over
batches already on the GPU, the way autocast and ``GradScaler`` run it under Lightning's
"16-mixed" / "bf16-mixed"; the clock stops after ``torch.cuda.synchronize``. Without a CUDA GPU
it prints why it skipped and exits 0, so ``nox -s bench -- --gpu`` on a laptop says so instead
of failing.

    python benchmarks/gpu_bench.py            # 200 timed steps per setting, then time to 99 %
    python benchmarks/gpu_bench.py --quick    # 10 steps per setting; time to 90 %
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # time_to_accuracy of train_throughput.py

PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")
RECIPES = (
    ROOT / "configs" / "recipes" / "mnist_speedrun.yaml",
    ROOT / "configs" / "recipes" / "mnist_lenet5_fast.yaml",
)
SKIP = "[gpu_bench] skipped: no CUDA GPU available (torch.cuda.is_available() is False)"


def default_recipe() -> Path:
    """The speed-run recipe where there is one, else the fast LeNet-5 recipe."""
    return next((r for r in RECIPES if r.is_file()), RECIPES[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net", default="lenet5", help="registered net (default lenet5)")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=200, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps (compile happens here)")
    p.add_argument(
        "--precision", nargs="+", default=list(PRECISIONS), choices=PRECISIONS, metavar="P"
    )
    p.add_argument("--no_compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--recipe", type=Path, default=None, help="config of the time-to-target run")
    p.add_argument("--target", type=float, default=0.99, help="test accuracy to reach")
    p.add_argument("--no_tta", action="store_true", help="skip the time-to-target run")
    p.add_argument("--data_dir", type=Path, default=None)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/imgcls-gpu-bench"))
    p.add_argument("--quick", action="store_true", help="10 steps a setting, target 90 %%")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.target = 10, 3, min(args.target, 0.90)
    if args.batch < 1 or args.steps < 1 or args.warmup < 1:
        p.error("--batch, --steps and --warmup must be >= 1")
    if args.recipe is None:
        args.recipe = default_recipe()
    if not args.recipe.is_file():
        p.error(f"--recipe {args.recipe}: no such file")
    return args


def settings(args: argparse.Namespace) -> list[tuple[str, bool]]:
    """(precision, compile) pairs in the order they are measured."""
    compiles = (False,) if args.no_compile else (False, True)
    return [(p, c) for p in args.precision for c in compiles]


def train_images_per_s(
    net_name: str, precision: str, compile: bool, batch: int, steps: int, warmup: int
) -> float:
    from imgcls.models import create_model

    device = torch.device("cuda")
    torch.manual_seed(0)
    net = create_model(net_name, in_channels=1, num_classes=10, image_size=28).to(device)
    step_net: Any = torch.compile(net) if compile else net
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(step_net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(SKIP + "; run it where one is lent: nox -s bench -- --gpu", flush=True)
        return 0
    name = torch.cuda.get_device_name(0)
    print(f"{name}, torch {torch.__version__}, {args.net}, batch {args.batch}", flush=True)
    rows = []
    for precision, compile in settings(args):
        if precision.startswith("bf16") and not torch.cuda.is_bf16_supported():
            rows.append((precision, compile, None))
            continue
        rate = train_images_per_s(args.net, precision, compile, args.batch, args.steps, args.warmup)
        rows.append((precision, compile, rate))
        print(f"  {precision:<10} compile={compile!s:<5} {rate:,.0f} images/s", flush=True)
    print("\n| precision | torch.compile | training images/s |\n|---|---|---|")
    for precision, compile, rate in rows:
        shown = f"{rate:,.0f}" if rate is not None else "not supported on this GPU"
        print(f"| {precision} | {'yes' if compile else 'no'} | {shown} |")
    if args.no_tta:
        return 0
    from train_throughput import time_to_accuracy

    from imgcls.data.provision import default_root, ensure_dataset

    data_dir = args.data_dir or default_root()
    ensure_dataset("mnist", data_dir)
    hit, epochs, acc = time_to_accuracy(
        args.target, Path(data_dir), args.workdir, args.recipe, accelerator="gpu"
    )
    recipe = args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT) else args.recipe
    if hit is None:
        print(f"\ntime to {args.target:.0%}: not reached in {epochs} epochs (best {acc:.4f})")
    else:
        print(
            f"\ntime to {args.target:.0%} test accuracy ({recipe}, GPU): {hit:.1f} s of training "
            f"({epochs} epochs, test acc {acc:.4f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
