"""``imgcls evaluate-onnx``: accuracy of an exported ONNX model on the official test set.

The test set is the verified IDX pair of the model's data set (its metadata names it), read
with the runtime's numpy IDX reader; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys

from imgcls.commands.options import add_data_dir, add_device, add_model


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    add_data_dir(p)
    add_device(p, "cpu")
    p.add_argument("--batch_size", type=int, default=1000, help="images per onnxruntime run")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from imgcls.data.provision import default_root, raw_dir, verify
    from imgcls.runtime import ModelLoadError, OnnxClassifier, read_idx

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
    pred, _ = clf.predict(images)
    correct = pred == labels
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
            },
            indent=2,
        )
    )
    return 0
