"""Small building blocks shared by the nets: activations, padding, pooling, output sizes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

from torch import nn

from imgcls.errors import ConfigError

Activation = Literal["relu", "tanh", "sigmoid", "gelu", "silu"]
Padding = Literal["valid", "same"]
Pool = Literal["max", "avg"]
# "standard": He et al. 2016's block; "lecture": lecture 002's eq. (6) exactly (see resnet.py).
ResBlock = Literal["standard", "lecture"]
# Where a conv net pools: once after the last conv, or after every conv (lecture 002's
# "more pooling" for translation invariance).
PoolAfter = Literal["last", "each"]

_ACTS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def positive_int(name: str, value: object) -> int:
    """``value`` if it is an int >= 1 (a width, a kernel size, a stride), else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def positive_ints(name: str, value: object, example: str = "[128]") -> list[int]:
    """``value`` as a list of ints >= 1 (layer widths), else a ConfigError.

    A string is refused although it is a sequence: ``"32"`` would read as widths 3 and 2.
    """
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ConfigError(
            f"{name} must be a list of positive integers, e.g. {example}, got {value!r}"
        )
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ConfigError(
            f"{name} must be a list of positive integers, e.g. {example}, got {list(value)!r}"
        )
    return list(value)


def one_of(name: str, value: object, choices: object) -> str:
    """``value`` if it is one of the ``Literal`` alias ``choices``' strings, else a ConfigError
    that lists them (a typo in a config should say what was meant)."""
    valid = get_args(choices)
    if value not in valid:
        raise ConfigError(f"{name} must be one of {list(valid)}, got {value!r}")
    return str(value)


def dropout_p(name: str, value: object) -> float:
    """``value`` as a drop probability in [0, 1), else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ConfigError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


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
