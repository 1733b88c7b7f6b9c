"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied to document
recognition") adapted to 28×28 inputs, and LeNet5Small, lecture 000's smaller variant.

LeNet-5 took 32×32 inputs; padding the first 5×5 conv by 2 on 28×28 gives the same 28×28
C1 maps. The 1998 net used scaled tanh and trainable average "subsampling"; ``activation``
and ``pool`` select that ("tanh", "avg") or the modern ReLU + max-pool default.
"""

from __future__ import annotations

from torch import nn

from imgcls.models.layers import (
    Activation,
    Net,
    Pool,
    as_hw,
    conv_output_size,
    dropout_p,
    fc_stack,
    make_activation,
    make_pool,
)
from imgcls.models.registry import register_model


def _conv_stage(cin: int, cout: int, k: int, pad: int, act: str, pool: str) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=pad), make_activation(act), make_pool(pool, 2)]


class LeNet5(Net):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hw: tuple[int, int],
        activation: str,
        pool: str,
        first_padding: int,
        fc: tuple[int, ...],
        dropout: float,
    ) -> None:
        super().__init__()
        h, w = hw
        for pad in (first_padding, 0):  # C1 (+S2), C3 (+S4): 5×5 convs, 2×2 pools
            h = conv_output_size(h, 5, 1, pad) // 2
            w = conv_output_size(w, 5, 1, pad) // 2
        layers: list[nn.Module] = [
            *_conv_stage(in_channels, 6, 5, first_padding, activation, pool),  # (B, 6, 14, 14)
            *_conv_stage(6, 16, 5, 0, activation, pool),  # (B, 16, 5, 5)
            nn.Flatten(),  # (B, 400)
        ]
        hidden, width = fc_stack(16 * h * w, fc, activation, dropout)  # F5 (C5 in 1998) 120, F6 84
        self.features = nn.Sequential(*layers, *hidden)
        self.head = nn.Linear(width, num_classes)


@register_model("lenet5")
def lenet5(
    *,
    activation: Activation = "relu",
    pool: Pool = "max",
    dropout: float = 0.0,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int | tuple[int, int] = 28,
) -> LeNet5:
    """LeNet-5: conv 6@5×5 (pad 2) – pool – conv 16@5×5 – pool – fc 120 – fc 84 – fc classes.

    61,706 parameters on 1×28×28 with 10 classes.
    """
    hw = as_hw(image_size)
    first_pad = 2 if hw == (28, 28) else 0  # 32×32 inputs are LeCun's own size
    return LeNet5(
        in_channels,
        num_classes,
        hw,
        activation,
        pool,
        first_pad,
        (120, 84),
        dropout_p("lenet5: dropout", dropout),
    )


@register_model("lenet5_small")
def lenet5_small(
    *,
    activation: Activation = "relu",
    pool: Pool = "max",
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int | tuple[int, int] = 28,
) -> LeNet5:
    """LeNet5Small: 6 filters of 5×5 (150 weights), pool, 16 filters of 5×5, pool, linear output.

    No fully-connected hidden layers: 5,142 parameters on 1×28×28, a twelfth of LeNet-5.
    """
    return LeNet5(in_channels, num_classes, as_hw(image_size), activation, pool, 0, (), 0.0)
