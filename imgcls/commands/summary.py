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
        default=None,
        metavar="C,H,W",
        help="input shape for --net (default 1,28,28; at most 4 channels and 256×256 pixels)",
    )
    p.add_argument("--num_classes", type=int, default=None, help="outputs of --net (default 10)")
    p.add_argument("--kernel", type=int, help="--size: window (kernel) size K >= 1")
    p.add_argument(
        "--stride", type=int, default=None, help="--size: stride s >= 1 (default 1; K with --pool)"
    )
    p.add_argument(
        "--padding", default=None, help="--size: valid, same (odd K) or an int p (default valid)"
    )
    p.add_argument(
        "--pool", action="store_true", help="--size: a pooling window (stride defaults to K)"
    )
    add_out(p, None, "also write summary.md / .csv / .json here")
    p.add_argument(
        "--wandb", metavar="PROJECT", default=None, help="start a W&B run and log the table to it"
    )


def check_options(args: argparse.Namespace) -> None:
    """Refuse an option that the chosen mode would ignore or replace with another value.

    Raises:
        InsightError: an option of the output-size helper without ``--size``, ``--out`` or
            ``--wandb`` with it, an option of ``--net`` with ``--ckpt`` or ``--size`` (the
            checkpoint fixes them), or ``--which`` without ``--ckpt``.
    """
    from imgcls.insight import InsightError

    def given(*names: str) -> list[str]:
        return [n for n in names if getattr(args, n[2:]) not in (None, False)]

    helper = given("--kernel", "--stride", "--padding", "--pool")
    if args.size is None and helper:
        raise InsightError(
            f"{', '.join(helper)}: only with --size H, the output-size helper (e.g. --size 28 "
            f"--kernel 5); add --size H, or leave {', '.join(helper)} out"
        )
    tables = given("--out", "--wandb")
    if args.size is not None and tables:
        raise InsightError(
            f"{', '.join(tables)}: only with --net or --ckpt (the output-size helper --size "
            f"prints one line and writes no table); leave {', '.join(tables)} out"
        )
    of_net = given("--net_args", "--input", "--num_classes")
    if not args.net and of_net:
        fixed = "the checkpoint fixes the net and its input" if args.ckpt else "they build a net"
        raise InsightError(
            f"{', '.join(of_net)}: only with --net NAME ({fixed}); leave {', '.join(of_net)} out"
        )
    if args.which is not None and not args.ckpt:
        raise InsightError(
            "--which picks a checkpoint of --ckpt; leave it out with --net or --size"
        )


def run(args: argparse.Namespace) -> int:
    from imgcls.insight import InsightError

    check_options(args)
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
        from imgcls.commands.options import checkpoint_from
        from imgcls.training.checkpoint_io import load_classifier

        path = checkpoint_from(args.ckpt, args.which)
        model = load_classifier(path)
        hp = model.hparams
        shape: tuple[int, ...] = (hp.in_channels, hp.image_size, hp.image_size)
        net = model.net
        title = f"{hp.net} {json.dumps(hp.net_args or {})} from {path}"
    else:
        from imgcls.insight.cost import MAX_INPUT_CHANNELS, MAX_INPUT_SIDE, MAX_NUM_CLASSES

        text = args.input or "1,28,28"
        num_classes = 10 if args.num_classes is None else args.num_classes
        try:
            net_args = json.loads(args.net_args) if args.net_args else {}
            shape = tuple(int(v) for v in text.split(","))
        except ValueError as e:
            raise InsightError(
                f"--net_args must be a JSON object and --input C,H,W integers: {e}"
            ) from e
        if not isinstance(net_args, dict) or len(shape) != 3:
            raise InsightError("--net_args must be a JSON object and --input three integers C,H,W")
        if min(shape) < 1 or num_classes < 1:
            raise InsightError(
                f"--input C,H,W and --num_classes must be positive, got --input {text} "
                f"and --num_classes {num_classes}"
            )
        # Checked before the net is built: its size grows with H·W and the class count.
        if shape[0] > MAX_INPUT_CHANNELS or max(shape[1:]) > MAX_INPUT_SIDE:
            raise InsightError(
                f"--input {text}: over the limit of {MAX_INPUT_CHANNELS} channels and "
                f"{MAX_INPUT_SIDE}×{MAX_INPUT_SIDE} pixels (the net built for it grows with H·W)"
            )
        if num_classes > MAX_NUM_CLASSES:
            raise InsightError(
                f"--num_classes {num_classes}: over the limit of {MAX_NUM_CLASSES:,} classes"
            )
        net = net_from_spec(args.net, net_args, shape, num_classes)  # type: ignore[arg-type]
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
    small = [
        f"{o} {v}"
        for o, v in (("--size", args.size), ("--kernel", args.kernel), ("--stride", args.stride))
        if v is not None and v < 1
    ]
    if small:
        raise InsightError(f"{', '.join(small)}: --size, --kernel and --stride must be >= 1")
    padding: str | int = args.padding or "valid"
    if isinstance(padding, str) and padding.isdigit():
        padding = int(padding)
    stride = (args.kernel if args.pool else 1) if args.stride is None else args.stride
    print(output_size_text(args.size, args.kernel, stride, padding))
    return 0
