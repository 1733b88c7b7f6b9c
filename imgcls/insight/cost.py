"""What a net costs: output shape, parameters and multiply-adds of every layer.

Lecture 000's arithmetic, made general. Conventions:

- output size of a convolution or pooling window: ⌊(H + 2p − K)/s⌋ + 1 (valid: p = 0;
  same: p = (K − 1)/2 for odd K; pooling: s = K by default). Lecture 000 prints the pooling
  formula as (H − K)/(s + 1); that is a typo for the one above, which its own example obeys.
- multiply-adds (MACs) per image: a convolution does (C_in/groups)·K·K' of them for each
  output element (10 filters of 5×5×3 on a same-padded 32×32×3 image: 75 × 1,024 × 10 =
  768,000); a linear layer in·out; batch norm one per element (a scale and a shift).
  Biases, activations, pooling and residual additions are not multiply-adds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from imgcls.insight import InsightError
from imgcls.models.taps import BATCH_NORMS

__all__ = [
    "MAX_INPUT_CHANNELS",
    "MAX_INPUT_SIDE",
    "MAX_NUM_CLASSES",
    "LayerCost",
    "check_spec",
    "conv_macs",
    "conv_params",
    "human",
    "layer_costs",
    "measure_speed",
    "net_from_spec",
    "output_size",
    "output_size_text",
    "summary_table",
    "totals",
]


def output_size(size: int, kernel: int, stride: int = 1, padding: str | int = "valid") -> int:
    """Output length of a conv / pooling window over ``size`` inputs: ⌊(H + 2p − K)/s⌋ + 1.

    ``padding``: "valid" (p = 0), "same" (p = (K − 1)/2, odd K only) or an int p.

    Raises:
        InsightError: a window that does not fit, a non-positive stride, or "same" with even K.
    """
    if kernel < 1 or stride < 1 or size < 1:
        raise InsightError(
            f"size, kernel and stride must be >= 1 (got H={size}, K={kernel}, s={stride})"
        )
    p = _padding(kernel, padding)
    out = (size + 2 * p - kernel) // stride + 1
    if out < 1:
        raise InsightError(
            f"a {kernel}-wide window does not fit an input of {size} with padding {p}"
        )
    return out


def _padding(kernel: int, padding: str | int) -> int:
    if padding == "valid":
        return 0
    if padding == "same":
        if kernel % 2 == 0:
            raise InsightError(
                f"'same' padding needs an odd kernel (p = (K − 1)/2); got K = {kernel}"
            )
        return (kernel - 1) // 2
    if isinstance(padding, int) and padding >= 0:
        return padding
    raise InsightError(f"padding must be 'valid', 'same' or an int >= 0, got {padding!r}")


def output_size_text(size: int, kernel: int, stride: int = 1, padding: str | int = "valid") -> str:
    """One line with the formula filled in.

    For example '28 → 28  (⌊(28 + 2·2 − 5)/1⌋ + 1, padding same)'.
    """
    p = _padding(kernel, padding)
    out = output_size(size, kernel, stride, padding)
    return f"{size} → {out}  (⌊({size} + 2·{p} − {kernel})/{stride}⌋ + 1, padding {padding})"


def conv_params(
    in_channels: int, out_channels: int, kernel: int | tuple[int, int], bias: bool = True
) -> int:
    """Weights (+ biases) of a conv layer: out · in · K · K' (+ out)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return out_channels * in_channels * kh * kw + (out_channels if bias else 0)


def conv_macs(
    in_channels: int, out_channels: int, kernel: int | tuple[int, int], out_hw: tuple[int, int]
) -> int:
    """Multiply-adds of a conv layer per image: (in · K · K') per output element."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return in_channels * kh * kw * out_channels * out_hw[0] * out_hw[1]


@dataclass
class LayerCost:
    name: str  # qualified module name, e.g. "features.0"
    kind: str  # e.g. "Conv2d 1→6, 5×5, pad 2"
    output_shape: tuple[int, ...]  # per image, without the batch axis
    params: int
    macs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _describe(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        extra = [f"{kh}×{kw}"]
        if m.stride != (1, 1):
            extra.append(f"stride {m.stride[0]}")
        if m.padding not in ((0, 0), "valid"):
            pad = m.padding if isinstance(m.padding, str) else m.padding[0]
            extra.append(f"pad {pad}")
        return f"Conv2d {m.in_channels}→{m.out_channels}, " + ", ".join(extra)
    if isinstance(m, nn.Linear):
        return f"Linear {m.in_features}→{m.out_features}"
    if isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
        k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
        s = m.stride if isinstance(m.stride, int) else m.stride[0]
        return f"{type(m).__name__} {k}×{k}" + (f", stride {s}" if s != k else "")
    if isinstance(m, nn.Dropout):
        return f"Dropout {m.p:g}"
    return type(m).__name__


def _macs(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    per_image = out[0].numel()
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return per_image * (m.in_channels // m.groups) * kh * kw
    if isinstance(m, nn.Linear):
        return per_image * m.in_features
    if isinstance(m, BATCH_NORMS):
        return per_image
    return 0


def layer_costs(net: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28)) -> list[LayerCost]:
    """Run one zero image of ``input_shape`` (C, H, W) through ``net`` and record every leaf layer.

    Layers appear in the order they run. The params column sums to all of ``net``'s parameters.
    """
    records: list[LayerCost] = []
    hooks = []
    seen: set[int] = set()

    def hook(name: str):
        def fn(m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if not isinstance(out, torch.Tensor):
                return
            first = id(m) not in seen  # a module called twice has its parameters counted once
            seen.add(id(m))
            params = sum(p.numel() for p in m.parameters(recurse=False)) if first else 0
            records.append(
                LayerCost(name, _describe(m), tuple(out.shape[1:]), params, _macs(m, args[0], out))
            )

        return fn

    for name, m in net.named_modules():
        if not any(True for _ in m.children()):  # leaves only (the net itself if it is one layer)
            hooks.append(m.register_forward_hook(hook(name or type(m).__name__)))
    was_training = net.training
    try:
        net.eval()
        with torch.inference_mode():
            net(torch.zeros(1, *input_shape))
    except RuntimeError as e:
        raise InsightError(f"the net does not take inputs of shape {input_shape}: {e}") from e
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    # Parameters of non-leaf modules (none in imgcls nets) or of leaves that never ran.
    counted = sum(r.params for r in records)
    total = sum(p.numel() for p in net.parameters())
    if counted != total:
        records.append(
            LayerCost("(unused)", "parameters not used in forward", (), total - counted, 0)
        )
    return records


def _shape(s: tuple[int, ...]) -> str:
    return "×".join(str(v) for v in s) if s else "-"


def summary_table(costs: list[LayerCost]) -> tuple[list[str], list[list[Any]]]:
    """Markdown-ready rows: layer, type, output shape, params, MACs, and a totals row."""
    columns = ["layer", "type", "output shape", "params", "multiply-adds"]
    rows: list[list[Any]] = [
        [c.name, c.kind, _shape(c.output_shape), f"{c.params:,}", f"{c.macs:,}"] for c in costs
    ]
    rows.append(
        [
            "**total**",
            "",
            "",
            f"**{sum(c.params for c in costs):,}**",
            f"**{sum(c.macs for c in costs):,}**",
        ]
    )
    return columns, rows


def totals(costs: list[LayerCost]) -> tuple[int, int]:
    """(parameters, multiply-adds per image)."""
    return sum(c.params for c in costs), sum(c.macs for c in costs)


def human(n: float) -> str:
    """1,199,882 -> '1.20 M'; 416,520 -> '417 k'."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} G"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.0f} k"
    return f"{n:g}"


# The largest input a net is built for from a spec: a net's first linear layer grows with
# H·W (the default convnet at 1×1024×1024 holds 2 G parameters, 9.7 GB), so a bigger input
# would exhaust the memory before any layer is measured. 256×256 RGBA covers MNIST, CIFAR
# and ImageNet crops.
MAX_INPUT_CHANNELS = 4
MAX_INPUT_SIDE = 256
MAX_NUM_CLASSES = 10_000


def check_spec(input_shape: tuple[int, ...], num_classes: int) -> None:
    """Refuse an input shape or a class count outside what ``net_from_spec`` builds for.

    Raises:
        InsightError: not three positive integers, more than ``MAX_INPUT_CHANNELS`` channels,
            a side over ``MAX_INPUT_SIDE``, or a class count outside 1..``MAX_NUM_CLASSES``.
    """
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise InsightError(
            f"the input shape must be three positive integers C,H,W, got {input_shape}"
        )
    c, h, w = input_shape
    if c > MAX_INPUT_CHANNELS or max(h, w) > MAX_INPUT_SIDE:
        raise InsightError(
            f"input {c}×{h}×{w} is over the limit of {MAX_INPUT_CHANNELS} channels and "
            f"{MAX_INPUT_SIDE}×{MAX_INPUT_SIDE} pixels that a net is built for here"
        )
    if not 1 <= num_classes <= MAX_NUM_CLASSES:
        raise InsightError(
            f"the number of classes must be in 1..{MAX_NUM_CLASSES:,}, got {num_classes}"
        )


def net_from_spec(
    net: str,
    net_args: dict[str, Any] | None = None,
    input_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
) -> nn.Module:
    """Build a registered net for ``input_shape`` (C, H, W).

    Unknown names or arguments, and an input or class count over the limits of
    ``check_spec``, are an InsightError (checked before anything is allocated).
    """
    from imgcls.models import create_model

    check_spec(input_shape, num_classes)
    c, h, w = input_shape
    try:
        return create_model(
            net,
            **(net_args or {}),
            in_channels=c,
            num_classes=num_classes,
            image_size=h if h == w else (h, w),
        )
    except (ValueError, TypeError) as e:
        raise InsightError(str(e)) from e


def measure_speed(
    net: nn.Module,
    input_shape: tuple[int, ...] = (1, 28, 28),
    batch: int = 64,
    steps: int = 20,
    warmup: int = 3,
) -> dict[str, float]:
    """Wall time of a training step (forward, cross-entropy, backward; batch ``batch``) and of
    inference (images/s at batch 256) of ``net`` on the CPU, median of ``steps`` repeats.

    Nets compared by the report are measured one after another in the same process, so their
    ratio holds on a loaded machine too; the absolute figures are this machine's only. The net
    is copied: its weights and gradients are untouched.
    """
    import copy
    import statistics
    import time

    model = copy.deepcopy(net).cpu()
    x = torch.randn(batch, *input_shape)
    y = torch.randint(0, 10, (batch,))
    model.train()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    model.eval()
    xi = torch.randn(256, *input_shape)
    infer = []
    with torch.inference_mode():
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            model(xi)
            if i >= warmup:
                infer.append(time.perf_counter() - t0)
    return {
        "train_step_ms": 1000 * statistics.median(times),
        "train_images_per_s": batch / statistics.median(times),
        "infer_images_per_s": 256 / statistics.median(infer),
        "batch": float(batch),
    }
