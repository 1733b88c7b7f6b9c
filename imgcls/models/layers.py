"""Small building blocks shared by the nets: activations, padding, pooling, output sizes."""

from __future__ import annotations

from typing import Literal

from torch import nn

from imgcls.errors import ConfigError

Activation = Literal["relu", "tanh", "sigmoid", "gelu", "silu"]
Padding = Literal["valid", "same"]
Pool = Literal["max", "avg"]

_ACTS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def make_activation(name: str) -> nn.Module:
    try:
        return _ACTS[name]()
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; choose one of {sorted(_ACTS)}") from None


def fc_stack(
    width: int, hidden: list[int] | tuple[int, ...], activation: str, dropout: float
) -> tuple[list[nn.Module], int]:
    """Linear + activation (+ dropout) for each hidden width.

    Returns:
        The layers and the last width.
    """
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(width, h), make_activation(activation)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    return layers, width


def conv_padding(padding: str, kernel_size: int) -> int:
    """'valid' -> 0; 'same' -> k // 2 (exactly 'same' at stride 1 for odd k)."""
    if padding == "valid":
        return 0
    if padding == "same":
        return kernel_size // 2
    raise ConfigError(f"padding must be 'valid' or 'same', got {padding!r}")


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution or pooling window: ⌊(H + 2p − K) / s⌋ + 1."""
    out = (size + 2 * padding - kernel_size) // stride + 1
    if out < 1:
        raise ConfigError(
            f"a {kernel_size}-wide window with stride {stride} and padding {padding} "
            f"does not fit an input of {size}"
        )
    return out


def make_pool(kind: str, size: int) -> nn.Module:
    if kind == "max":
        return nn.MaxPool2d(size)
    if kind == "avg":
        return nn.AvgPool2d(size)
    raise ConfigError(f"pool must be 'max' or 'avg', got {kind!r}")


def as_hw(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


class Net(nn.Module):
    """Base of every net: ``features`` (input -> penultimate vector) then a linear ``head``.

    ``forward_features`` gives the last hidden layer, which the PCA plot and transfer use.
    """

    features: nn.Module
    head: nn.Linear

    def forward_features(self, x):  # (B, C, H, W) -> (B, D)
        return self.features(x)

    def forward(self, x):  # (B, C, H, W) -> (B, num_classes) logits
        return self.head(self.features(x))
