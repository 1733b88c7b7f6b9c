"""Fully-connected nets: flatten, hidden layers, linear output (lecture 002: 10 / 32 / 128 units)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from imgcls.models.layers import Activation, Net, as_hw, make_activation
from imgcls.models.registry import register_model


class MLP(Net):
    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, activation: str, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]  # (B, C, H, W) -> (B, C*H*W)
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)


@register_model("mlp")
def mlp(
    *,
    hidden: Sequence[int] = (128,),
    activation: Activation = "relu",
    dropout: float = 0.0,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int | tuple[int, int] = 28,
) -> MLP:
    """Fully-connected net with ``hidden`` layer widths (``[]`` gives multinomial logistic regression)."""
    h, w = as_hw(image_size)
    return MLP(in_channels * h * w, list(hidden), num_classes, activation, dropout)
