"""Fully-connected nets: flatten, hidden layers, linear output.

Lecture 002 trains them with 10, 32 and 128 hidden units.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from imgcls.models.layers import (
    Activation,
    Net,
    as_hw,
    dropout_p,
    fc_stack,
    positive_ints,
)
from imgcls.models.registry import register_model


class MLP(Net):
    def __init__(
        self, in_features: int, hidden: list[int], num_classes: int, activation: str, dropout: float
    ) -> None:
        super().__init__()
        fc, width = fc_stack(in_features, hidden, activation, dropout)
        self.features = nn.Sequential(
            nn.Flatten(), *fc
        )  # (B, C, H, W) -> (B, C*H*W) -> (B, hidden[-1])
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
    """Fully-connected net with ``hidden`` layer widths.

    ``hidden=[]`` gives multinomial logistic regression.
    """
    h, w = as_hw(image_size)
    return MLP(
        in_channels * h * w,
        positive_ints("mlp: hidden", hidden, "[32] or [128, 64]; [] for no hidden layer"),
        num_classes,
        activation,
        dropout_p("mlp: dropout", dropout),
    )
