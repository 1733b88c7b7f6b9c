"""``imgcls evaluate-onnx``: accuracy of an exported ONNX model on the official test set.

The test set is the verified IDX pair of the model's data set (its metadata names it), read
with the runtime's numpy IDX reader; nothing is written. ``--as_photos N`` instead renders the
first N test images the way people photograph them (``imgcls.deploy.photos``) and sends each photo
through the same decoder as ``imgcls infer`` and ``imgcls serve`` (``--preprocess``), so the
figure is what a deployment gets on such pictures.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

from imgcls.commands.options import add_data_dir, add_device, add_model, add_preprocess


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    add_data_dir(p)
    add_device(p, "cpu")
    p.add_argument("--batch_size", type=int, default=1000, help="images per onnxruntime run")
    p.add_argument(
        "--as_photos",
        type=int,
        default=None,
        metavar="N",
        help="evaluate on the first N >= 1 test images re-rendered as photos (grey and colour "
        "JPEGs of dark ink on paper, transparent PNGs), framed by --preprocess; without it, "
        "on the whole test set as it is",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="with --as_photos: seed of the photo rendering, an integer >= 0 (default 0)",
    )
    add_preprocess(p)


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse the options that would evaluate something other than what was asked for, before
    the model is loaded.

    Raises:
        ConfigError: ``--as_photos`` < 1 (0 would silently evaluate the plain test set),
            ``--seed`` < 0, or ``--seed`` without ``--as_photos`` (nothing it would seed).
    """
    from imgcls.errors import ConfigError

    if args.as_photos is not None and args.as_photos < 1:
        raise ConfigError(
            f"--as_photos must be >= 1 (the number of test images rendered as photos), got "
            f"{args.as_photos}; leave --as_photos out to evaluate the whole test set as it is"
        )
    if args.seed is not None and args.seed < 0:
        raise ConfigError(f"--seed must be an integer >= 0, got {args.seed}")
    if args.seed is not None and args.as_photos is None:
        raise ConfigError(
            "--seed seeds the photo rendering of --as_photos N; give --as_photos N, or leave "
            "--seed out"
        )


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from imgcls.data.provision import default_root, raw_dir, verify
    from imgcls.deploy.classifier import OnnxClassifier
    from imgcls.deploy.idx import read_idx
    from imgcls.deploy.zoo import resolve_model
    from imgcls.errors import ModelLoadError

    check_arguments(args)
    args.model = str(resolve_model(args.model))
    clf = OnnxClassifier(args.model, device=args.device, batch_size=args.batch_size)
    dataset = clf.metadata.get("dataset")
    if not isinstance(dataset, str):
        raise ModelLoadError(
            f"{args.model}: its metadata names no data set, so there is no test set to evaluate "
            "it on; export it with `imgcls export`, or classify images with `imgcls infer`"
        )
    root = args.data_dir or default_root()
    verify(root, dataset)  # the pinned sha256: this is the official test set
    raw = raw_dir(root, dataset)
    images = read_idx(raw / "t10k-images-idx3-ubyte")  # (N, H, W) uint8
    labels = read_idx(raw / "t10k-labels-idx1-ubyte").astype(np.int64)  # (N,)
    extra: dict[str, object] = {}
    if args.as_photos is not None:
        images, labels, extra = _as_photos(args, images, labels, clf, dataset)
    pred, _ = clf.predict(images)
    correct = pred == labels
    if args.as_photos is not None:
        kinds = np.array(extra.pop("_kinds"))
        extra["accuracy_by_kind"] = {
            str(k): float(correct[kinds == k].mean()) for k in dict.fromkeys(kinds.tolist())
        }
    per_class = {
        name: float(correct[labels == k].mean())
        for k, name in enumerate(clf.class_names)
        if (labels == k).any()
    }
    print(f"[imgcls evaluate-onnx] provider: {clf.providers_in_use[0]}", file=sys.stderr)
    print(
        json.dumps(
            {
                "model": args.model,
                "dataset": dataset,
                "n_images": int(len(labels)),
                "accuracy": float(correct.mean()),
                "correct": int(correct.sum()),
                "per_class_accuracy": per_class,
                **extra,
            },
            indent=2,
        )
    )
    return 0


def _as_photos(
    args: argparse.Namespace, images: Any, labels: Any, clf: Any, dataset: str
) -> tuple[Any, Any, dict[str, object]]:
    """The first N test images as photos, decoded by the deployment's own decoder."""
    import numpy as np

    from imgcls.deploy.images import decode_image
    from imgcls.deploy.photos import render_photos
    from imgcls.errors import ConfigError

    if not 0 < args.as_photos <= len(labels):
        raise ConfigError(f"--as_photos must be in 1..{len(labels)}, got {args.as_photos}")
    seed = 0 if args.seed is None else args.seed
    c, h, w = clf.input_shape
    photos = render_photos(images[: args.as_photos], seed=seed)
    with warnings.catch_warnings(record=True) as caught:  # --preprocess none: one per photo
        warnings.simplefilter("always")
        decoded = np.stack(
            [
                decode_image(
                    data, channels=c, size=(h, w), preprocess=args.preprocess, dataset=dataset
                )
                for _, data in photos
            ]
        )
    if caught:
        print(f"[imgcls evaluate-onnx] {len(caught)} photos: {caught[0].message}", file=sys.stderr)
    info: dict[str, object] = {
        "as_photos": args.as_photos,
        "seed": seed,
        "preprocess": args.preprocess,
        "_kinds": [kind for kind, _ in photos],
    }
    return decoded, labels[: args.as_photos], info
