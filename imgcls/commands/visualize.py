"""``imgcls visualize``: what a trained model learned, and what classic kernels do.

    imgcls visualize --ckpt runs/mnist-convnet/version_0 [--image_index 1] \\
        [--out runs/insight/visualize]
    imgcls visualize kernels [--image FILE | --index 18 --dataset mnist] \\
        [--out runs/insight/kernels]

The first writes filters.png (conv nets) or templates.png (MLPs), feature_maps.png,
pca.png, confusion.png and misclassified.png; the second kernels.png.
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

OUT, KERNELS_OUT = "runs/insight/visualize", "runs/insight/kernels"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_ckpt(p, help=f"the model to visualise: {CKPT_HELP}")
    add_which(p)
    p.add_argument(
        "--image_index",
        type=int,
        default=0,
        help="test image whose feature maps are drawn (default 0)",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="test set to use; must be the model's (default: the model's)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="use only the first N >= 1 test images for PCA / confusion",
    )
    add_common_arguments(p, OUT)
    sub = p.add_subparsers(dest="what", metavar="{kernels}")
    k = sub.add_parser(
        "kernels",
        help="apply the lectures' classic kernels to an image, side by side",
        description="Cross-correlate an image with Sobel vertical / horizontal, "
        "Laplacian, outline, "
        "emboss, sharpen and lecture 000's 5×5 prong filter (same padding).",
    )
    src = k.add_mutually_exclusive_group()
    src.add_argument("--image", metavar="FILE", help="an image file (converted to greyscale)")
    src.add_argument(
        "--index", type=int, default=None, help="a test-set image (default 18, a 3, on MNIST)"
    )
    k.add_argument(
        "--dataset",
        default="mnist",
        dest="kernel_dataset",
        help="test set for --index (default mnist)",
    )
    add_common_arguments(k, KERNELS_OUT)


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        from imgcls.insight import InsightError

        raise InsightError(f"--limit must be >= 1 (a number of test images), got {args.limit}")
    check_writable_folder(args.out)
    if args.what == "kernels":
        return _kernels(args)
    return _model(args)


def _model(args: argparse.Namespace) -> int:
    from imgcls.commands.options import checkpoint_from
    from imgcls.insight import InsightError
    from imgcls.insight.artifacts import log_to_wandb, wandb_session
    from imgcls.insight.testset import load_test_set
    from imgcls.insight.visualize import model_figures
    from imgcls.runs import net_label
    from imgcls.training.checkpoint_io import load_classifier

    if not args.ckpt:
        raise InsightError("give a model with --ckpt PATH, or use `imgcls visualize kernels`")
    path = checkpoint_from(args.ckpt, args.which)
    model = load_classifier(path)
    trained_on = model.hparams.dataset
    if args.dataset and args.dataset != trained_on:
        raise InsightError(
            f"{path} was trained on {trained_on!r}, not on --dataset {args.dataset!r}; "
            f"drop --dataset or pass a checkpoint trained on {args.dataset}"
        )
    test = load_test_set(trained_on, args.data_dir, args.limit)
    with wandb_session(args.wandb, "visualize", {"ckpt": str(path)}):
        paths, facts = model_figures(
            model,
            test,
            Path(args.out),
            args.image_index,
            label=net_label(model.hparams.net, model.hparams.net_args),
        )
        log_to_wandb("visualize", paths)
    print(
        f"[imgcls] {path}: accuracy {100 * facts['accuracy']:.2f} % "
        f"on {facts['n_images']} {trained_on} test images"
    )
    for name, p in paths.items():
        print(f"[imgcls] {name}: {p}")
    return 0


KERNEL_DEFAULT_INDEX = 18  # an MNIST 3, as in lecture 000's prong example


def _kernels(args: argparse.Namespace) -> int:
    from imgcls.insight.artifacts import log_to_wandb, wandb_session
    from imgcls.insight.testset import load_test_set
    from imgcls.insight.visualize import kernels_figures, load_image_file

    if args.image:
        image = load_image_file(args.image)
        title = f"classic kernels on {Path(args.image).name} (cross-correlation, same padding)"
    else:
        from imgcls.insight import InsightError

        index = KERNEL_DEFAULT_INDEX if args.index is None else args.index
        test = load_test_set(args.kernel_dataset, args.data_dir)
        if not 0 <= index < len(test):
            raise InsightError(
                f"--index {index} is outside the {args.kernel_dataset} test set "
                f"(0 … {len(test) - 1})"
            )
        image = test.images[index, 0]
        label = test.class_names[int(test.labels[index])]
        title = (
            f"classic kernels on {args.kernel_dataset} test image {index} ({label}); "
            "cross-correlation, same padding"
        )
    with wandb_session(args.wandb, "visualize-kernels", {}):
        png = kernels_figures(image, Path(args.out), title)
        log_to_wandb("kernels", {"kernels": png})
    print(f"[imgcls] kernels: {png}")
    return 0
