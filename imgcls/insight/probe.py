"""What a trained net computes: its first-layer filters or templates, the feature maps of its
conv layers, its penultimate layer (and a 2-D PCA of it), predictions and the confusion matrix.

All functions take the ``Net`` (``model.net``) of an ImageClassifier and uint8 images, and
normalise with the mean / std the model was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from imgcls.data.transforms import normalize
from imgcls.insight import InsightError
from imgcls.models.taps import conv_layers, feature_taps

__all__ = [
    "NoConvLayersError",
    "Outputs",
    "conv_layers",
    "feature_maps",
    "feature_taps",
    "first_conv_weights",
    "first_linear_templates",
    "neighbour_values",
    "pca_2d",
    "pooling_pair",
    "run_net",
]


class NoConvLayersError(InsightError):
    """The net has no convolutional layer (an MLP): it has no filters or feature maps to show."""


@dataclass
class Outputs:
    features: torch.Tensor  # (N, D) penultimate layer
    logits: torch.Tensor  # (N, classes)

    @property
    def preds(self) -> torch.Tensor:  # (N,)
        return self.logits.argmax(dim=1)


@torch.inference_mode()
def run_net(
    net: nn.Module, images: torch.Tensor, mean: float, std: float, batch_size: int = 1000
) -> Outputs:
    """Penultimate features and logits of ``images`` (N, C, H, W) uint8, in one pass per batch."""
    net.eval()
    feats, logits = [], []
    for start in range(0, len(images), batch_size):
        x = normalize(images[start : start + batch_size], mean, std)
        f = net.forward_features(x)  # type: ignore[operator]  # (B, D)
        feats.append(f.float())
        logits.append(net.head(f).float())  # type: ignore[operator]
    return Outputs(torch.cat(feats), torch.cat(logits))


def first_conv_weights(net: nn.Module) -> torch.Tensor:
    """The first conv layer's filters, (out_channels, in_channels, K, K).

    Raises:
        NoConvLayersError: the net has no conv layer (use ``first_linear_templates``).
    """
    convs = conv_layers(net)
    if not convs:
        raise NoConvLayersError(
            f"this {type(net).__name__} has no convolutional layers, so it has no filters to show; "
            "its first-layer weights are shown as templates instead"
        )
    return convs[0][1].weight.detach().float().cpu()


def first_linear_templates(net: nn.Module, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """An MLP's first-layer weights as images (units, C, H, W): lecture 002, fig. 3.

    Each hidden unit computes ⟨w_k, x⟩, so w_k is a template of the image it responds to.

    Raises:
        InsightError: the first linear layer does not read the raw pixels (a conv net).
    """
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    c, h, w = image_shape
    if not linears or linears[0].in_features != c * h * w or conv_layers(net):
        raise InsightError(
            "first-layer templates need a net whose first layer is fully connected on the pixels "
            "(an MLP)"
        )
    return linears[0].weight.detach().float().cpu().reshape(-1, c, h, w)


@torch.inference_mode()
def feature_maps(
    net: nn.Module, image: torch.Tensor, mean: float, std: float
) -> list[tuple[str, torch.Tensor]]:
    """The output of every conv layer for one uint8 image (C, H, W): [(label, (channels, H', W'))].

    Where the conv is followed (directly or after batch norm) by an activation in the same
    ``nn.Sequential``, the activation's output is taken, as the lectures show (after the ReLU);
    ``feature_taps`` says which module each map comes from.
    """
    if not conv_layers(net):
        raise NoConvLayersError(
            f"this {type(net).__name__} has no convolutional layers, so it has no feature maps"
        )
    taps = feature_taps(net, pools=False)
    maps = _outputs_of(net, [tap for _, _, tap in taps], image, mean, std)
    return [(label, m) for (label, _, _), m in zip(taps, maps, strict=True)]


def _outputs_of(
    net: nn.Module, modules: list[nn.Module], image: torch.Tensor, mean: float, std: float
) -> list[torch.Tensor]:
    """The output of each of ``modules`` (their first call) when ``net`` sees one uint8 image,
    batch dimension dropped, as float32 on the CPU."""
    outputs: dict[int, torch.Tensor] = {}

    def keep(i: int) -> Any:
        def hook(mod: nn.Module, args: Any, out: torch.Tensor) -> None:
            # Returns None: a hook that returned a value would replace the module's output.
            if i not in outputs:  # a module used twice in one forward keeps its first output
                outputs[i] = out[0].detach().float().cpu()

        return hook

    hooks = [m.register_forward_hook(keep(i)) for i, m in enumerate(modules)]
    net.eval()
    try:
        net(normalize(image[None], mean, std))
    finally:
        for h in hooks:
            h.remove()
    return [outputs[i] for i in range(len(modules))]


def pca_2d(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project (N, D) features on their first two principal components.

    Returns (N, 2) scores and the fraction of variance each component explains (2,).
    """
    x = features.double()
    x = x - x.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)  # exact; D is at most a few thousand
    scores = x @ vh[:2].T
    var = s**2
    total = var.sum()
    return scores.float(), (
        var[:2] / total if total > 0 else torch.zeros(2, dtype=var.dtype)
    ).float()


@torch.inference_mode()
def pooling_pair(
    net: nn.Module, image: torch.Tensor, mean: float, std: float
) -> tuple[str, torch.Tensor, str, torch.Tensor]:
    """The maps of one uint8 image (C, H, W) just before and just after the net's first pooling
    layer: (label before, (channels, H', W'), label after, (channels, H'', W'')).

    "Before" is the last conv tap (``feature_taps``: the activation after the conv) ahead of
    that pool: the first conv stage's activation in LeNet-5 (conv, activation, pool per stage),
    the last conv's activation in the default convnet, whose only pool follows both convs.
    Labels are those of ``feature_taps``.

    Raises:
        NoConvLayersError: the net has no conv layer (an MLP).
        InsightError: the net has no pooling layer with a map to show (strides only, or a
            global pool).
    """
    if not conv_layers(net):
        raise NoConvLayersError(
            f"this {type(net).__name__} has no convolutional layers, so nothing is pooled"
        )
    before: tuple[str, nn.Module] | None = None
    after: tuple[str, nn.Module] | None = None
    for label, kind, tap in feature_taps(net, pools=True):
        if kind == "conv":
            before = (label, tap)
        elif before is not None:
            after = (label, tap)
            break
    if before is None or after is None:
        raise InsightError(
            f"this {type(net).__name__} has no pooling layer after a convolution "
            "(it shrinks its maps by striding, or pools each map to a single number)"
        )
    maps = _outputs_of(net, [before[1], after[1]], image, mean, std)
    return before[0], maps[0], after[0], maps[1]


def neighbour_values(fmap: torch.Tensor, size: int = 5) -> dict[str, Any]:
    """The raw values around the strongest activation of one 2-D feature map, and how much
    neighbours differ (lecture 000: "the neighbouring values are largely redundant").

    Returns a JSON-ready dict:

    - ``peak``: [row, col] of the maximum (the first in row-major order on ties), ``max``;
    - ``window``: the ``size`` × ``size`` values around it, nested lists rounded to 3 decimals;
      the window is moved inwards at an edge so it stays inside the map (``top``, ``left``: its
      first row and column), and is cut only where the map itself is smaller than ``size``;
    - ``value_range``: max − min of the whole map;
    - ``mean_abs_neighbour_diff``: the mean |x[i, j] − x[i, j+1]| and |x[i, j] − x[i+1, j]| over
      the pairs where both values are non-zero (the activated region: after a ReLU the zeros
      around it would count every edge of it as a jump), divided by ``value_range``; 0.0 when
      no such pair exists or the map is constant. ``n_pairs``: how many pairs were averaged.
    """
    if fmap.dim() != 2:
        raise InsightError(
            f"neighbour_values needs one 2-D feature map, got shape {tuple(fmap.shape)}"
        )
    if size < 1:
        raise InsightError(f"the window size must be >= 1, got {size}")
    x = fmap.detach().double().cpu()
    h, w = x.shape
    flat = int(torch.argmax(x))
    r, c = divmod(flat, w)
    top = min(max(r - size // 2, 0), max(h - size, 0))
    left = min(max(c - size // 2, 0), max(w - size, 0))
    window = x[top : top + size, left : left + size]
    value_range = float(x.max() - x.min())
    nz = x != 0
    diffs = torch.cat(
        [
            (x[:, 1:] - x[:, :-1]).abs()[nz[:, 1:] & nz[:, :-1]],
            (x[1:, :] - x[:-1, :]).abs()[nz[1:, :] & nz[:-1, :]],
        ]
    )
    rel = float(diffs.mean()) / value_range if len(diffs) and value_range > 0 else 0.0
    return {
        "peak": [r, c],
        "max": round(float(x[r, c]), 3),
        "top": top,
        "left": left,
        "window": [[round(float(v), 3) for v in row] for row in window],
        "value_range": round(value_range, 3),
        "mean_abs_neighbour_diff": rel,
        "n_pairs": len(diffs),
    }
