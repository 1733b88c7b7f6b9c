"""``imgcls report``: run (or reuse) the lectures' experiments and write one markdown report.

    imgcls report [--out docs/report] [--reuse] [--ckpt convnet=runs/mnist-convnet/version_0 ...]
    imgcls report --quick            # small subsets, 1 epoch: a few minutes on a laptop CPU

Writes README.md (the report), results.json (every number) and figures/*.png into ``--out``.
Trained models are kept in ``--runs_dir``; ``--reuse`` picks up the finished ones instead of
training again. ``--ckpt NAME=PATH`` uses a checkpoint trained elsewhere (e.g. by a recipe)
for experiment NAME (``imgcls.insight.report.catalogue.EXPERIMENTS``; ``--skip NAME`` leaves one
out).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from imgcls.commands.options import (
    CKPT_HELP,
    add_ckpt,
    add_data_dir,
    add_out,
    check_writable_folder,
)

OUT, QUICK_OUT = "docs/report", "runs/report-quick/report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quick",
        action="store_true",
        help="small subsets, 1 epoch, 500 test images (CI: under 3 minutes)",
    )
    add_out(p, None, f"report folder (default {OUT}; with --quick {QUICK_OUT})")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="reuse finished runs in --runs_dir instead of training again",
    )
    p.add_argument(
        "--runs_dir",
        default=None,
        help="where trained models are kept (default runs/report[-quick])",
    )
    add_ckpt(
        p,
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="use this checkpoint for experiment NAME instead of training (repeatable); PATH is "
        f"{CKPT_HELP}",
    )
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="add a row for any checkpoint (e.g. a recipe's best.ckpt): "
        "evaluated beside the lectures' "
        "experiments, not trained (repeatable)",
    )
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="NAME",
        help="leave experiment NAME out (repeatable); its sections say 'not run'",
    )
    p.add_argument(
        "--test_limit", type=int, default=None, help="evaluate on the first N test images only"
    )
    p.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)"
    )
    add_data_dir(p)
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--wandb", metavar="PROJECT", default=None, help="start a W&B run and log the report to it"
    )


def _extra_experiment(name: str, path: str) -> Any:
    """An experiment row for a checkpoint trained elsewhere: its own net, data set and size."""
    from imgcls.commands.options import checkpoint_from
    from imgcls.insight.report.catalogue import Experiment
    from imgcls.insight.training import TrainSpec
    from imgcls.training.checkpoint_io import load_checkpoint

    hp = load_checkpoint(checkpoint_from(path))["hyper_parameters"]
    spec = TrainSpec(hp["net"], dict(hp.get("net_args") or {}), hp["dataset"], None, 0)
    title = f"{name} ({hp['net']}, {hp['dataset']})"
    # Its own study: the results table beside the lectures holds the lectures' protocol only.
    return Experiment(
        name,
        title,
        spec,
        spec,
        None,
        None,
        "this project's recipes (configs/recipes/)",
        study="extra",
    )


def run(args: argparse.Namespace) -> int:
    from imgcls.insight.report.running import default_runs_dir

    out = check_writable_folder(args.out or (QUICK_OUT if args.quick else OUT))
    check_writable_folder(args.runs_dir or default_runs_dir(args.quick), "--runs_dir")
    import torch

    from imgcls.insight import InsightError
    from imgcls.insight.report.catalogue import EXPERIMENTS
    from imgcls.insight.report.render import write_report
    from imgcls.insight.report.running import build_report
    from imgcls.insight.shift import split_named

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    checkpoints: dict[str, str] = {}
    for spec in args.ckpt:
        name, path = split_named(spec)
        if name is None:
            raise InsightError(
                f"--ckpt {spec!r}: expected NAME=PATH, e.g. convnet=runs/mnist-convnet/version_0"
            )
        checkpoints[name] = path
    names = [e.name for e in EXPERIMENTS]
    unknown = sorted(set(args.skip) - set(names))
    if unknown:
        raise InsightError(
            f"--skip {', '.join(unknown)}: no such experiment; valid: {', '.join(names)}"
        )
    experiments = [e for e in EXPERIMENTS if e.name not in args.skip]
    for spec in args.extra:
        name, path = split_named(spec)
        if name is None or name in checkpoints or any(e.name == name for e in experiments):
            raise InsightError(
                f"--extra {spec!r}: expected a new NAME=PATH, "
                "e.g. recipe-lenet5=runs/mnist-lenet5/version_3"
            )
        experiments.append(_extra_experiment(name, path))
        checkpoints[name] = path
    command = (
        "imgcls report " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if sys.argv[1:2] == ["report"]
        else "imgcls report" + (" --quick" if args.quick else "")
    )
    from imgcls.insight.artifacts import wandb_session

    with wandb_session(args.wandb, "report", {"quick": args.quick}):
        data = build_report(
            out,
            quick=args.quick,
            reuse=args.reuse,
            runs_dir=args.runs_dir,
            checkpoints=checkpoints,
            data_dir=args.data_dir,
            progress=not args.no_progress,
            command=command.strip(),
            test_limit=args.test_limit,
            experiments=experiments,
        )
        md = write_report(data, out)
    print(f"[imgcls] report: {md}")
    return 0
