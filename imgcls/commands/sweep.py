"""``imgcls sweep subset``: test accuracy against training-set size, several seeds, per net.

    imgcls sweep subset --nets lenet5,mlp-32 [--sizes 100,1000,10000,60000] [--seeds 3] [--epochs 5]
        [--dataset mnist] [--out runs/insight/sweep]

Nets are registered names, or ``mlp-W[-W…]`` for an MLP with those hidden widths.
Writes sweep.md, sweep.csv (every run), sweep.json and sweep.png into ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from imgcls.commands.options import add_common_arguments, check_writable_folder

OUT = "runs/insight/sweep"


def _ints(text: str) -> list[int]:
    try:
        return [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="sweep", required=True)
    s = sub.add_parser(
        "subset",
        help="test accuracy against training-set size",
        description="Train each net on subsets of the training set (several seeds) and plot "
        "test accuracy against the number of training images.",
    )
    s.add_argument(
        "--nets",
        default="lenet5,mlp",
        help="comma-separated nets, e.g. lenet5,mlp-32 (default lenet5,mlp)",
    )
    s.add_argument(
        "--sizes",
        type=_ints,
        default=[100, 1000, 10000, 60000],
        help="training-set sizes "
        "(default 100,1000,10000,60000; 60000 is every image, no validation)",
    )
    s.add_argument("--seeds", type=int, default=3, help="seeds per size (default 3)")
    s.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    s.add_argument("--dataset", default="mnist", help="mnist or fashion_mnist (default mnist)")
    s.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)"
    )
    add_common_arguments(s, OUT)


def run(args: argparse.Namespace) -> int:
    check_writable_folder(args.out)
    import torch

    from imgcls.insight.sweep import run_sweep, write_sweep_outputs

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    if not nets:  # an empty sweep would write an empty table and exit 0
        from imgcls.insight import InsightError

        raise InsightError(
            f"--nets names no net (got {args.nets!r}); give comma-separated nets, "
            "e.g. --nets lenet5,mlp-32"
        )
    config = {
        "nets": nets,
        "sizes": args.sizes,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "dataset": args.dataset,
    }
    from imgcls.insight.artifacts import wandb_session

    with wandb_session(args.wandb, "sweep-subset", config):
        points = run_sweep(
            nets,
            args.sizes,
            args.seeds,
            args.epochs,
            args.dataset,
            args.data_dir,
            progress=not args.no_progress,
        )
        paths = write_sweep_outputs(points, Path(args.out), args.dataset, args.epochs)
    print(paths["md"].read_text())
    print("[imgcls] wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
