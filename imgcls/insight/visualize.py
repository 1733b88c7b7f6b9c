"""The figures of ``imgcls visualize``: one trained model, its test set, a folder of PNGs.

- first-layer filters (conv nets) or first-layer templates (MLPs, lecture 002 fig. 3);
- feature maps of every conv layer for one test image (lecture 002 figs. 6–7);
- 2-D PCA of the penultimate layer on the test set, coloured by class (lecture 000);
- confusion matrix and a gallery of misclassified images;
and ``kernels_figures`` for ``imgcls visualize kernels`` (lecture 002's classic kernels and
lecture 000's prong filter).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from imgcls.deploy.images import decode_image
from imgcls.errors import ImgclsError
from imgcls.insight import InsightError
from imgcls.insight.artifacts import save_figure
from imgcls.insight.figures import (
    confusion_figure,
    feature_maps_figure,
    filters_figure,
    kernels_figure,
    misclassified_figure,
    pca_figure,
    templates_figure,
)
from imgcls.insight.kernels import KERNELS, apply_kernels
from imgcls.insight.probe import (
    conv_layers,
    feature_maps,
    first_conv_weights,
    first_linear_templates,
    pca_2d,
    run_net,
)
from imgcls.insight.testset import TestSet

__all__ = ["KERNELS_MAX_SIDE", "kernels_figures", "load_image_file", "model_figures"]

# ``visualize kernels --image``: a larger image is scaled down to this longest side first.
KERNELS_MAX_SIDE = 1024


def model_figures(
    model: Any,
    test: TestSet,
    out_dir: str | os.PathLike[str],
    image_index: int = 0,
    prefix: str = "",
    label: str | None = None,
    log: Any = print,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write every figure of ``model`` (an ImageClassifier) to ``out_dir``.

    Returns ({figure name: path}, facts: accuracy, n_images, notes such as the MLP message).

    Raises:
        InsightError: ``image_index`` outside the test set.
    """
    out = Path(out_dir)
    if not 0 <= image_index < len(test):
        raise InsightError(
            f"--image_index {image_index} is outside the test set (0 … {len(test) - 1})"
        )
    hp, net = model.hparams, model.net
    name = label or hp.net
    mean, std = float(hp.mean), float(hp.std)
    paths: dict[str, Path] = {}
    notes: list[str] = []

    def save(key: str, fig: Any) -> None:
        paths[key] = save_figure(fig, out / f"{prefix}{key}.png")

    if conv_layers(net):
        save("filters", filters_figure(first_conv_weights(net), f"{name}: first-layer filters"))
        img = test.images[image_index]
        true = test.class_names[int(test.labels[image_index])]
        save(
            "feature_maps",
            feature_maps_figure(
                img,
                feature_maps(net, img, mean, std),
                f"{name}: feature maps of test image {image_index} ({true})",
            ),
        )
    else:
        msg = (
            f"{name} has no convolutional layers, so it has no filters or feature maps; "
            f"its first-layer weights are drawn as {hp.image_size}×{hp.image_size} templates "
            f"instead ({prefix}templates.png)"
        )
        notes.append(msg)
        log(f"[imgcls] {msg}")
    try:
        templates = first_linear_templates(net, (hp.in_channels, hp.image_size, hp.image_size))
        save("templates", templates_figure(templates, f"{name}: first-layer weights as templates"))
    except InsightError:
        pass  # a conv net: its first layer is not a set of templates over the whole image

    outputs = run_net(net, test.images, mean, std)
    preds = outputs.preds
    scores, explained = _two_components(*pca_2d(outputs.features))
    save(
        "pca",
        pca_figure(
            scores,
            test.labels,
            test.class_names,
            explained,
            f"{name}: 2-D PCA of the penultimate layer ({outputs.features.shape[1]} dims, "
            f"{len(test)} test images)",
        ),
    )
    cm = multiclass_confusion_matrix(preds, test.labels, num_classes=len(test.class_names))
    acc = float((preds == test.labels).double().mean())
    save(
        "confusion",
        confusion_figure(
            cm,
            test.class_names,
            f"{name}: confusion matrix, accuracy {100 * acc:.2f} % on {len(test)} test images",
        ),
    )
    wrong = torch.nonzero(preds != test.labels).flatten()
    save(
        "misclassified",
        misclassified_figure(
            test.images[wrong],
            test.labels[wrong],
            preds[wrong],
            test.class_names,
            f"{name}: {len(wrong)} misclassified of {len(test)}",
        ),
    )
    facts = {
        "accuracy": acc,
        "n_images": len(test),
        "n_wrong": len(wrong),
        "notes": notes,
        "pca_explained": [float(v) for v in explained],
        "confusion": cm.tolist(),
    }
    return paths, facts


def _two_components(
    scores: torch.Tensor, explained: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA scores (N, 2) and explained fractions (2,) for the figure. N points have at most N
    components (one test image: one, at the origin); a missing one is all zeros, explaining
    no variance, so the scatter has its two axes whatever the number of images."""
    k = scores.shape[1]
    if k >= 2:
        return scores, explained
    pad = torch.zeros(scores.shape[0], 2 - k, dtype=scores.dtype)
    return torch.cat([scores, pad], dim=1), torch.cat(
        [explained, torch.zeros(2 - len(explained), dtype=explained.dtype)]
    )


def load_image_file(path: str | os.PathLike[str]) -> torch.Tensor:
    """A greyscale (H, W) uint8 tensor from an image file, at the image's own size, or scaled
    down (aspect kept, with a warning) to at most ``KERNELS_MAX_SIDE`` pixels a side.

    Decoded by the deployment's decoder (``decode_image``), so the kernels see what
    ``imgcls infer`` would: its pixel limit, transparency composited, colour to luma. Asked
    for the image's own size, it neither frames nor resizes it. The bound keeps a small file
    that declares thousands of pixels a side from costing gigabytes in the convolutions and
    the figure.

    Raises:
        InsightError: a missing, unreadable or too large file (the message names it).
    """
    import warnings

    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise InsightError(f"{p}: image file not found")
    try:
        with Image.open(p) as im:  # reads the header only: the size to ask the decoder for
            width, height = im.size
        scale = min(1.0, KERNELS_MAX_SIDE / max(width, height, 1))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*resized from", category=UserWarning)
            pixels = decode_image(p, channels=1, size=size, preprocess="none")
    except ImgclsError as e:  # the decoder's own errors name the file already
        raise InsightError(str(e)) from e
    except MemoryError:
        raise
    except Exception as e:  # Pillow's plug-ins fail on damaged headers in many ways
        raise InsightError(f"{p}: not a readable image file ({type(e).__name__}: {e})") from e
    if scale < 1.0:
        warnings.warn(
            f"{p}: scaled down from {width}x{height} to {size[1]}x{size[0]} (the kernels "
            f"figure shows at most {KERNELS_MAX_SIDE} pixels a side)",
            stacklevel=2,
        )
    return torch.from_numpy(pixels[0].copy())  # the decoder may hand back a read-only view


def kernels_figures(
    image: torch.Tensor, out_dir: str | os.PathLike[str], title: str, name: str = "kernels"
) -> Path:
    """Cross-correlate ``image`` (H, W) with every classic kernel, side by side, as ``name``.png."""
    responses = apply_kernels(image)
    return save_figure(
        kernels_figure(
            image.double() / (255.0 if image.dtype == torch.uint8 else 1.0),
            responses,
            KERNELS,
            title,
        ),
        Path(out_dir) / f"{name}.png",
    )
