"""``imgcls infer``: classify images with an exported ONNX model, without torch.

Prints the execution provider that actually ran to stderr, and one row per image (input,
label, class_name, probability) as CSV or JSON to stdout or ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import warnings

from imgcls.commands.options import add_device, add_model, add_out


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="PNG/JPEG files, folders of them, or IDX image files",
    )
    p.add_argument(
        "--format", choices=["csv", "json"], default="csv", help="output format (default csv)"
    )
    add_out(p, None, "write the rows to this file (default: stdout)")
    add_device(p, "auto")
    p.add_argument("--batch_size", type=int, default=1024, help="images per onnxruntime run")


def format_rows(rows: list[dict[str, object]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=["input", "label", "class_name", "probability"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    from imgcls.runtime import OnnxClassifier, load_images
    from imgcls.utils import atomic_write_text

    clf = OnnxClassifier(args.model, device=args.device, batch_size=args.batch_size)
    print(
        f"[imgcls infer] provider: {clf.providers_in_use[0]} (device {clf.device}; "
        f"session providers {', '.join(clf.providers_in_use)})",
        file=sys.stderr,
        flush=True,
    )
    c, h, w = clf.input_shape
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names, images = load_images(args.inputs, channels=c, size=(h, w))
    for warning in caught:  # resized images: say so, one line each, without a source line
        print(f"[imgcls infer] warning: {warning.message}", file=sys.stderr)
    labels, probs = clf.predict(images)
    rows: list[dict[str, object]] = [
        {
            "input": name,
            "label": int(k),
            "class_name": clf.class_names[k],
            "probability": round(float(p[k]), 6),
        }
        for name, k, p in zip(names, labels, probs, strict=True)
    ]
    text = format_rows(rows, args.format)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"[imgcls infer] {len(rows)} predictions written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
