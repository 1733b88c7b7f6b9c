"""``imgcls evaluate shift``: test accuracy of one or more models on shifted test images.

    imgcls evaluate shift --ckpt runs/mnist-mlp-32/version_0 \\
        --ckpt cnn=runs/mnist-convnet/version_0 \\
        [--onnx export/lenet5.onnx] [--max_shift 3] [--out runs/insight/shift]

Writes shift.md (models side by side, lecture numbers beneath), shift_summary.csv,
shift.csv (every distance and direction), shift.json and shift.png into ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from imgcls.commands.options import (
    CKPT_HELP,
    add_ckpt,
    add_common_arguments,
    add_which,
    check_writable_folder,
)

OUT = "runs/insight/shift"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="evaluation", required=True)
    s = sub.add_parser(
        "shift",
        help="accuracy on test images shifted 0…k pixels in 8 directions (zero fill)",
        description="Accuracy on test images shifted by 0…k pixels in each of the 8 compass "
        "directions (zero fill): mean and worst direction per distance.",
    )
    add_ckpt(
        s,
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help=f"{CKPT_HELP} (repeatable); NAME labels it in the table",
    )
    add_which(s)
    s.add_argument(
        "--onnx",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="exported ONNX model (repeatable)",
    )
    s.add_argument("--max_shift", type=int, default=3, help="largest shift in pixels (default 3)")
    s.add_argument(
        "--dataset", default=None, help="test set to use; must be the models' (default: theirs)"
    )
    s.add_argument(
        "--limit",
        type=int,
        default=None,
        help="use only the first N test images (default: all 10,000)",
    )
    s.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="images per forward pass (default: 256 on a CPU, 2048 on a GPU)",
    )
    s.add_argument(
        "--no_reference",
        action="store_true",
        help="leave the lectures' numbers out of table and plot",
    )
    add_common_arguments(s, OUT)


def run(args: argparse.Namespace) -> int:
    check_writable_folder(args.out)
    from imgcls.insight.lectures import shift_references
    from imgcls.insight.shift import (
        check_dataset,
        evaluate_shift,
        load_predictor,
        write_shift_outputs,
    )
    from imgcls.insight.testset import load_test_set

    predictors = [load_predictor(c, "ckpt", args.which or "best") for c in args.ckpt] + [
        load_predictor(o, "onnx") for o in args.onnx
    ]
    dataset = check_dataset(predictors, args.dataset)
    test = load_test_set(dataset, args.data_dir, args.limit)
    from imgcls.insight.artifacts import wandb_session

    with wandb_session(
        args.wandb, "evaluate-shift", {"max_shift": args.max_shift, "dataset": dataset}
    ):
        results = [
            evaluate_shift(
                p,
                test.images,
                test.labels,
                args.max_shift,
                args.batch_size,
                progress=not args.no_progress,
            )
            for p in predictors
        ]
        refs = {} if args.no_reference else shift_references(dataset)
        paths = write_shift_outputs(results, Path(args.out), refs, dataset)
    print(paths["md"].read_text())
    print("[imgcls] wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
