"""A small residual net for 28×28 images, with two kinds of residual block.

- ``block="standard"`` (He et al. 2016, the default): conv–BN–σ–conv–BN, the identity added,
  then σ after the sum: f_k = σ(f_{k−1} + BN(W₁ σ(BN(W₂ f_{k−1})))). With ``batch_norm=False``
  the BNs are identities and both convs have biases. This is not lecture 002's eq. (6): it
  has an activation after the sum (so a block's output is never negative with ReLU) and, by
  default, batch norm inside.
- ``block="lecture"``: lecture 002's eq. (6) exactly, f_k = f_{k−1} + W₁ σ(W₂ f_{k−1} + b):
  conv W₂ with bias b, σ, conv W₁ without bias, added to f_{k−1}; nothing after the sum and
  no batch norm inside the block whatever ``batch_norm`` says.

W₁, W₂ are 3×3 convolutions. Stages of ``blocks`` blocks each; each stage after the first
halves the resolution with a strided 3×3 conv that widens to the next of ``widths``.
Global average pooling then a linear head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from imgcls.errors import ConfigError
from imgcls.models.layers import (
    Activation,
    Net,
    ResBlock,
    dropout_p,
    make_activation,
    one_of,
    positive_ints,
)
from imgcls.models.registry import register_model


def conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


def _norm(c: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(c) if batch_norm else nn.Identity()


class ResidualBlock(nn.Module):
    """σ(f + BN(W₁ σ(BN(W₂ f)))), He et al.'s block: the identity path keeps the shape, so
    blocks can stack deep."""

    def __init__(self, width: int, activation: str, batch_norm: bool) -> None:
        super().__init__()
        self.conv1 = conv3x3(width, width, bias=not batch_norm)  # W₂ (+ b)
        self.bn1 = _norm(width, batch_norm)
        self.act = make_activation(activation)  # σ
        self.conv2 = conv3x3(width, width, bias=not batch_norm)  # W₁
        self.bn2 = _norm(width, batch_norm)
        self.out_act = make_activation(activation)

    def forward(self, f: torch.Tensor) -> torch.Tensor:  # (B, W, H, W) -> same
        return self.out_act(f + self.bn2(self.conv2(self.act(self.bn1(self.conv1(f))))))


class LectureResidualBlock(nn.Module):
    """f + W₁ σ(W₂ f + b), lecture 002's eq. (6) term for term.

    W₁ has no bias because the equation gives it none (b belongs to W₂). Nothing follows the
    sum, so the block can output negative values and, with W₁ = 0, is exactly the identity;
    there is no batch norm, so the block is the lecture's function and not a normalised one.
    """

    def __init__(self, width: int, activation: str) -> None:
        super().__init__()
        self.conv1 = conv3x3(width, width, bias=True)  # W₂ + b
        self.act = make_activation(activation)  # σ
        self.conv2 = conv3x3(width, width, bias=False)  # W₁

    def forward(self, f: torch.Tensor) -> torch.Tensor:  # (B, W, H, W) -> same
        return f + self.conv2(self.act(self.conv1(f)))


class ResNet(Net):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int],
        blocks: int,
        activation: str,
        batch_norm: bool,
        dropout: float,
        block: str = "standard",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            conv3x3(in_channels, widths[0], bias=not batch_norm),
            _norm(widths[0], batch_norm),
            make_activation(activation),
        ]  # stem: (B, w0, H, W)
        prev = widths[0]
        for i, w in enumerate(widths):
            if i > 0:  # downsample: (B, prev, H, W) -> (B, w, H/2, W/2)
                layers += [
                    conv3x3(prev, w, stride=2, bias=not batch_norm),
                    _norm(w, batch_norm),
                    make_activation(activation),
                ]
            layers += [
                LectureResidualBlock(w, activation)
                if block == "lecture"
                else ResidualBlock(w, activation, batch_norm)
                for _ in range(blocks)
            ]
            prev = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]  # (B, w_last)
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(prev, num_classes)


@register_model("resnet")
def resnet(
    *,
    widths: Sequence[int] = (16, 32, 64),
    blocks: int = 2,
    activation: Activation = "relu",
    batch_norm: bool = True,
    dropout: float = 0.0,
    block: ResBlock = "standard",
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int | tuple[int, int] = 28,
) -> ResNet:
    """Small ResNet: stem 3×3, then per width ``blocks`` residual blocks.

    Depth = 2·blocks·stages + stages + 1 layers. ``block`` picks He et al.'s block
    ("standard") or lecture 002's eq. (6) ("lecture"); with "lecture", ``batch_norm`` only
    applies to the stem and the downsampling convs, since the equation has none.
    """
    del image_size  # global average pooling makes the net size-agnostic
    widths = positive_ints("resnet: widths", widths, "[16, 32, 64]")
    if not widths or isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
        raise ConfigError(
            f"resnet needs at least one width and blocks >= 0, got widths {widths}, "
            f"blocks {blocks!r}"
        )
    kind = one_of("resnet: block", block, ResBlock)
    return ResNet(
        in_channels,
        num_classes,
        widths,
        blocks,
        activation,
        batch_norm,
        dropout_p("resnet: dropout", dropout),
        kind,
    )
