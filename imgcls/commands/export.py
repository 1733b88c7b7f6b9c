"""``imgcls export``: a checkpoint becomes a verified ONNX model (see ``imgcls.export``)."""

from __future__ import annotations

import argparse
import json
import sys

from imgcls.export import OPSET


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="a .ckpt file (the checkpoint alone is enough, no YAML)")
    src.add_argument(
        "--run_dir", help="runs/<experiment>/version_N, or runs/<experiment> for its newest version"
    )
    p.add_argument(
        "--which",
        choices=["best", "last"],
        default=None,
        help="checkpoint of --run_dir (default: best)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: export/<experiment>-<version>, e.g. export/mnist-lenet5-version_0)",
    )
    p.add_argument(
        "--fp16",
        action="store_true",
        help="also write model.fp16.onnx (fp32 inputs/outputs), gated "
        "on >= 99.9%% top-1 agreement with the fp32 model",
    )
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument(
        "--data_dir",
        default=None,
        help="data root with the test set (default: $IMGCLS_DATA or ~/.cache/imgcls/data)",
    )
    p.add_argument(
        "--parity_subset",
        type=int,
        default=None,
        help="check parity on the first N test images only (default: all 10,000)",
    )
    p.add_argument(
        "--batch_size", type=int, default=1000, help="images per batch during the parity check"
    )


def run(args: argparse.Namespace) -> int:
    from imgcls.checkpoint import CheckpointError
    from imgcls.data.provision import DataError
    from imgcls.export import ExportError, export_checkpoint, find_checkpoint

    if args.which is not None and args.ckpt is not None:
        print("imgcls: error: --which goes with --run_dir, not with --ckpt", file=sys.stderr)
        return 2
    try:
        ckpt = find_checkpoint(args.ckpt, args.run_dir, args.which or "best")
        result = export_checkpoint(
            ckpt,
            args.out,
            fp16=args.fp16,
            opset=args.opset,
            data_dir=args.data_dir,
            parity_subset=args.parity_subset,
            batch_size=args.batch_size,
            log=lambda msg: print(f"[imgcls export] {msg}", file=sys.stderr, flush=True),
        )
    except (CheckpointError, ExportError, DataError, ValueError) as e:
        print(f"imgcls: error: {e}", file=sys.stderr)
        return 1
    fp32 = result.parity["fp32"]
    print(
        json.dumps(
            {
                "out_dir": str(result.out_dir),
                "files": [str(f) for f in result.files],
                "n_images": result.parity["n_images"],
                "max_abs_logit_diff": fp32["max_abs_logit_diff"],
                "top1_agreement": fp32["top1_agreement"],
                "torch_accuracy": fp32["torch_accuracy"],
                "onnx_accuracy": fp32["onnx_accuracy"],
                **(
                    {"fp16_top1_agreement": result.parity["fp16"]["top1_agreement_with_fp32"]}
                    if "fp16" in result.parity
                    else {}
                ),
            },
            indent=2,
        )
    )
    return 0
