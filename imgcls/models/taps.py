"""Where a net's feature maps come from: the modules whose outputs are its maps
(``feature_taps``), for the export's ``model.features.onnx`` and the insight figures alike.

Plain torch: it reads the module tree of any ``nn.Module``, Lightning is not involved.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

# The batch-norm layers torch names publicly (their common base class is private).
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

__all__ = ["BATCH_NORMS", "conv_layers", "feature_taps", "probe"]

_ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)


def conv_layers(net: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The conv layers of ``net``, [(qualified name, module)], in registration order."""
    return [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]


def _is_global_pool(m: nn.Module) -> bool:
    """An adaptive pool down to 1×1: one number per channel, no map to show."""
    if not isinstance(m, nn.AdaptiveMaxPool2d | nn.AdaptiveAvgPool2d):
        return False
    size = m.output_size
    sizes = size if isinstance(size, tuple | list) else (size, size)
    return all(s == 1 for s in sizes)


def feature_taps(net: nn.Module, pools: bool = True) -> list[tuple[str, str, nn.Module]]:
    """The modules whose outputs are a net's feature maps: [(label, kind, module)].

    For each conv layer (kind ``"conv"``): where it is followed in the same ``nn.Sequential``
    by an activation (directly or after batch norm), the activation, labelled
    ``"<conv name> + ReLU"``, as the lectures show the maps; else the batch norm after it, or
    the conv itself (a conv outside a Sequential, e.g. in a residual block). With ``pools``,
    also each pooling layer (kind ``"pool"``, labelled ``"<name> (MaxPool2d)"``), except an
    adaptive pool down to 1×1. In module registration order, which is the forward order of
    the nets built here.
    """
    convs = conv_layers(net)
    conv_ids = {id(m) for _, m in convs}
    taps: dict[int, tuple[str, nn.Module]] = {}
    for parent_name, parent in net.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for i, (child_name, child) in enumerate(children):
            if id(child) not in conv_ids:
                continue
            tap, label = child, f"{parent_name}.{child_name}".lstrip(".")
            for _, nxt in children[i + 1 : i + 3]:
                if isinstance(nxt, BATCH_NORMS):
                    tap = nxt
                    continue
                if isinstance(nxt, _ACTIVATIONS):
                    tap, label = nxt, label + f" + {type(nxt).__name__}"
                break
            taps[id(child)] = (label, tap)
    for name, m in convs:  # convs outside a Sequential (residual blocks): their own output
        taps.setdefault(id(m), (name, m))
    out: list[tuple[str, str, nn.Module]] = []
    for name, m in net.named_modules():
        if id(m) in conv_ids:
            label, tap = taps[id(m)]
            out.append((label, "conv", tap))
        elif pools and isinstance(m, _POOLS) and not _is_global_pool(m):
            out.append((f"{name} ({type(m).__name__})", "pool", m))
    return out


Hook = Callable[[nn.Module, tuple[Any, ...], Any], None]


def probe(
    net: nn.Module, input_shape: tuple[int, int, int], hooks: Sequence[tuple[nn.Module, Hook]]
) -> None:
    """Run ``net`` once on a zero image of ``input_shape`` (C, H, W) in eval mode with each
    forward ``hook`` on its module, then remove the hooks and restore the train/eval mode:
    what a layer outputs, found without guessing its arithmetic."""
    handles = [m.register_forward_hook(fn) for m, fn in hooks]
    was_training = net.training
    try:
        net.eval()
        with torch.inference_mode():
            net(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
