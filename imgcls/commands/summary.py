"""``imgcls summary``: per-layer output shape, parameters and multiply-adds of a net, with totals.

    imgcls summary --net lenet5
    imgcls summary --net mlp --net_args '{"hidden": [32]}'
    imgcls summary --ckpt runs/mnist-convnet/version_0 [--out DIR]
    imgcls summary --size 28 --kernel 5 [--stride 1] [--padding valid|same|P]   # output-size helper

The table goes to stdout (markdown); with ``--out`` also to summary.md / .csv / .json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from imgcls.commands.options import (
    CKPT_HELP,
    add_ckpt,
    add_out,
    add_which,
    check_writable_folder,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--net", help="a registered net (imgcls.models.list_models())")
    add_ckpt(src, help=f"the net of a checkpoint: {CKPT_HELP}")
    add_which(p)
    src.add_argument(
        "--size",
        type=int,
        metavar="H",
        help="output-size helper: input length H (use with --kernel)",
    )
    p.add_argument(
        "--net_args",
        default=None,
        metavar="JSON",
        help="arguments of --net, e.g. '{\"hidden\": [32]}'",
    )
    p.add_argument(
        "--input",
        default="1,28,28",
        metavar="C,H,W",
        help="input shape for --net (default 1,28,28)",
    )
    p.add_argument("--num_classes", type=int, default=10, help="outputs of --net (default 10)")
    p.add_argument("--kernel", type=int, help="--size: window (kernel) size K")
    p.add_argument(
        "--stride", type=int, default=None, help="--size: stride s (default 1; K with --pool)"
    )
    p.add_argument(
        "--padding", default="valid", help="--size: valid, same (odd K) or an int p (default valid)"
    )
    p.add_argument(
        "--pool", action="store_true", help="--size: a pooling window (stride defaults to K)"
    )
    add_out(p, None, "also write summary.md / .csv / .json here")
    p.add_argument(
        "--wandb", metavar="PROJECT", default=None, help="start a W&B run and log the table to it"
    )


def run(args: argparse.Namespace) -> int:
    from imgcls.insight import InsightError

    if args.size is not None:
        return _size(args)
    if args.out:
        check_writable_folder(args.out)
    if not (args.net or args.ckpt):
        raise InsightError("give --net NAME [--net_args JSON], --ckpt PATH, or --size H --kernel K")
    from imgcls.insight.artifacts import (
        log_to_wandb,
        markdown_table,
        wandb_session,
        write_json,
        write_table,
    )
    from imgcls.insight.cost import layer_costs, net_from_spec, summary_table, totals

    if args.ckpt:
        from imgcls.checkpoint import load_classifier
        from imgcls.commands.options import checkpoint_from

        path = checkpoint_from(args.ckpt, args.which)
        model = load_classifier(path)
        hp = model.hparams
        shape: tuple[int, ...] = (hp.in_channels, hp.image_size, hp.image_size)
        net = model.net
        title = f"{hp.net} {json.dumps(hp.net_args or {})} from {path}"
    else:
        try:
            net_args = json.loads(args.net_args) if args.net_args else {}
            shape = tuple(int(v) for v in args.input.split(","))
        except ValueError as e:
            raise InsightError(
                f"--net_args must be a JSON object and --input C,H,W integers: {e}"
            ) from e
        if not isinstance(net_args, dict) or len(shape) != 3:
            raise InsightError("--net_args must be a JSON object and --input three integers C,H,W")
        if min(shape) < 1 or args.num_classes < 1:
            raise InsightError(
                f"--input C,H,W and --num_classes must be positive, got --input {args.input} "
                f"and --num_classes {args.num_classes}"
            )
        net = net_from_spec(args.net, net_args, shape, args.num_classes)  # type: ignore[arg-type]
        title = f"{args.net} {json.dumps(net_args)}"
    costs = layer_costs(net, shape)
    cols, rows = summary_table(costs)
    params, macs = totals(costs)
    heading = (
        f"{title}, input {'×'.join(map(str, shape))}: "
        f"{params:,} parameters, {macs:,} multiply-adds per image"
    )
    print(f"# {heading}\n\n{markdown_table(cols, rows)}")
    if args.out:
        with wandb_session(args.wandb, "summary", {"net": title}):
            write_table(Path(args.out) / "summary", cols, rows, title=heading)
            write_json(
                Path(args.out) / "summary.json",
                {
                    "title": title,
                    "input_shape": list(shape),
                    "params": params,
                    "macs": macs,
                    "layers": [c.to_dict() for c in costs],
                },
            )
            log_to_wandb("summary", tables={"layers": (cols, rows)})
    else:
        log_to_wandb("summary", tables={"layers": (cols, rows)})
    return 0


def _size(args: argparse.Namespace) -> int:
    from imgcls.insight import InsightError
    from imgcls.insight.cost import output_size_text

    if args.kernel is None:
        raise InsightError("--size needs --kernel K")
    padding: str | int = args.padding
    if isinstance(padding, str) and padding.isdigit():
        padding = int(padding)
    stride = args.stride or (args.kernel if args.pool else 1)
    print(output_size_text(args.size, args.kernel, stride, padding))
    return 0
