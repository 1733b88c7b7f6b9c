"""The ledger of an exported net: every layer in the order it runs, with what the page prints
in its header (kind, kernel, stride, padding, output shape, parameters with their formula,
multiply-adds). Written into the export's metadata (``"layers"``) because the page and the
service run without torch. The figures follow ``imgcls.insight.cost``'s conventions (the
tests hold the two to each other): a convolution does (C_in/groups)·K·K' multiply-adds per
output element, a linear layer in·out, a batch norm one per element; parameters are counted
where a module first runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from imgcls.models.taps import probe

__all__ = ["ledger"]

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
POOLS = (nn.MaxPool2d, nn.AvgPool2d)
ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU)


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def _kind(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        return "conv"
    if isinstance(m, POOLS):
        return "pool"
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, ACTIVATIONS):
        return "activation"
    if isinstance(m, BATCH_NORMS):
        return "norm"
    if isinstance(m, nn.Flatten):
        return "flatten"
    if isinstance(m, nn.Dropout):
        return "dropout"
    return "other"


def _entry(name: str, m: nn.Module, x: torch.Tensor, out: torch.Tensor, first: bool) -> dict:
    per_image = out[0].numel()
    e: dict[str, Any] = {
        "name": name,
        "op": type(m).__name__,
        "kind": _kind(m),
        "input_shape": list(x.shape[1:]),
        "output_shape": list(out.shape[1:]),
        "params": 0,
        "params_text": "",
        "macs": 0,
    }
    own = sum(p.numel() for p in m.parameters(recurse=False)) if first else 0
    bias = getattr(m, "bias", None)
    nbias = bias.numel() if isinstance(bias, torch.Tensor) else 0
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        cin = m.in_channels // m.groups
        pad: Any = m.padding
        if isinstance(pad, str):  # "same" / "valid": the numbers the graph pads by
            pad = [(k - 1) // 2 for k in m.kernel_size] if pad == "same" else [0, 0]
        e.update(
            kernel=[kh, kw],
            stride=_pair(m.stride),
            padding=_pair(pad),
            in_channels=m.in_channels,
            out_channels=m.out_channels,
            groups=m.groups,
            macs=per_image * cin * kh * kw,
        )
        e["params_text"] = f"{m.out_channels}×{kh}×{kw}×{cin}" + (f"+{nbias}" if nbias else "")
    elif isinstance(m, nn.Linear):
        e.update(in_features=m.in_features, out_features=m.out_features)
        e["macs"] = per_image * m.in_features
        e["params_text"] = f"{m.out_features}×{m.in_features}" + (f"+{nbias}" if nbias else "")
    elif isinstance(m, POOLS):
        e.update(kernel=_pair(m.kernel_size), stride=_pair(m.stride), padding=_pair(m.padding))
    elif isinstance(m, BATCH_NORMS):
        e["macs"] = per_image
        if m.affine:
            e["params_text"] = f"{m.num_features}+{m.num_features}"
    elif isinstance(m, nn.Dropout):
        e["p"] = float(m.p)
    if first:
        e["params"] = int(own)
    else:
        e["params_text"] = ""  # a module that runs twice is counted where it first ran
    return e


def ledger(net: nn.Module, input_shape: tuple[int, int, int]) -> list[dict[str, Any]]:
    """One zero image of ``input_shape`` (C, H, W) through ``net`` (in eval mode): an entry per
    leaf module each time it runs."""
    records: list[dict[str, Any]] = []
    seen: set[int] = set()

    def hook(name: str) -> Any:
        def fn(m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if isinstance(out, torch.Tensor) and args and isinstance(args[0], torch.Tensor):
                records.append(_entry(name, m, args[0], out, id(m) not in seen))
                seen.add(id(m))

        return fn

    leaves = [(n, m) for n, m in net.named_modules() if not any(True for _ in m.children())]
    probe(net, input_shape, [(m, hook(n or type(m).__name__)) for n, m in leaves])
    return records
