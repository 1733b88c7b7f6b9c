"""``imgcls infer``: classify images with an exported ONNX model, without torch.

Prints the execution provider that actually ran to stderr, and one row per image (input,
label, class_name, probability) as CSV or JSON to stdout or ``--out``. Unreadable files inside
a folder are listed on stderr, one line each, after the rows of the good ones are written; the
exit status is then 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
import warnings
from pathlib import Path

from imgcls.commands.options import (
    add_device,
    add_model,
    add_out,
    add_preprocess,
    write_stdout,
)
from imgcls.errors import ConfigError

EXIT_SOME_FAILED = 2


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
    add_preprocess(p)
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


def check_out(out: str) -> None:
    """Refuse an ``--out`` that cannot be written, before any inference is run.

    Raises:
        ConfigError: ``out`` is a folder, or the folder it would go into is not writable.
    """
    import os

    path = Path(out)
    if path.exists() and not path.is_dir() and not path.is_file():
        # a device, FIFO or socket (/dev/stdout, /dev/null, a named pipe): written in place
        if not os.access(path, os.W_OK):
            raise ConfigError(f"--out {out}: not writable; pass another path")
        return
    if path.is_symlink():  # the file it points to gets the rows: check where that lies
        try:
            path = path.resolve()
        except (OSError, RuntimeError) as e:
            raise ConfigError(f"--out {out}: a symlink loop; pass another path") from e
    if path.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name, e.g. {path / 'pred.csv'}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # it will be created: check above
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"--out {out}: {folder} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(
            f"--out {out}: cannot write into {folder} ({e.strerror or e}); "
            "choose a writable place or leave --out out to print to stdout"
        ) from e


def run(args: argparse.Namespace) -> int:
    from imgcls.deploy.classifier import OnnxClassifier
    from imgcls.deploy.framing import framing_for
    from imgcls.deploy.images import load_images
    from imgcls.deploy.zoo import resolve_model
    from imgcls.errors import ImageFileError
    from imgcls.utils import atomic_write_text

    if args.out:
        check_out(args.out)
    args.model = str(resolve_model(args.model))
    clf = OnnxClassifier(args.model, device=args.device, batch_size=args.batch_size)
    print(
        f"[imgcls infer] provider: {clf.providers_in_use[0]} (device {clf.device}; "
        f"session providers {', '.join(clf.providers_in_use)})",
        file=sys.stderr,
        flush=True,
    )
    c, h, w = clf.input_shape
    skipped: list[ImageFileError] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names, images = load_images(
            args.inputs,
            channels=c,
            size=(h, w),
            skipped=skipped,
            # auto: as the model's training images were framed (its metadata says how)
            preprocess=framing_for(
                args.preprocess, clf.metadata.get("dataset"), clf.metadata.get("framing")
            ),
        )
    for warning in caught:  # resized or animated images: one line each, without a source line
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
        write_stdout(text, "write the predictions to a file with --out FILE")
    for error in skipped:
        print(f"imgcls: error: {error}", file=sys.stderr)
    if skipped:
        print(
            f"imgcls: error: {len(skipped)} of {len(rows) + len(skipped)} files could not be "
            "read (listed above); the others were classified",
            file=sys.stderr,
        )
        return EXIT_SOME_FAILED
    return 0
