"""The lecture's 2-conv net (PyTorch's MNIST example): 3×3 convs of 32 then 64 channels,
2×2 max-pool, flatten (9,216 features), fc 128, 10 outputs, dropout.

Padding (valid / same), stride, pooling (max / avg), channels and kernel size are arguments,
because lecture 000 compares them; ``batch_norm`` is for the training recipes in
``configs/recipes/``. ``pool_after="each"`` pools after every conv instead of once after the
last (conv 32 – pool – conv 64 – pool, 1,600 features), to test lecture 002's "to get better
translation invariance we can introduce more pooling into the network".
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from imgcls.errors import ConfigError
from imgcls.models.layers import (
    Activation,
    Net,
    Padding,
    Pool,
    PoolAfter,
    as_hw,
    conv_output_size,
    conv_padding,
    dropout_p,
    make_activation,
    make_pool,
    one_of,
    positive_int,
    positive_ints,
)
from imgcls.models.registry import register_model


class ConvNet(Net):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hw: tuple[int, int],
        channels: Sequence[int],
        kernel_size: int,
        padding: str,
        stride: int,
        pool: str,
        pool_size: int,
        hidden: int,
        dropout: tuple[float, float],
        activation: str,
        batch_norm: bool,
        pool_after: str = "last",
    ) -> None:
        super().__init__()
        pad = conv_padding(padding, kernel_size)
        h, w = hw
        sizes = [f"{h}×{w}"]  # the maps' sizes so far, for the error message

        def shrink(what: str, k: int, s: int, p: int) -> None:
            nonlocal h, w
            try:
                h, w = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
            except ConfigError as e:
                raise ConfigError(
                    f"convnet: {what} would shrink the maps ({' → '.join(sizes)}) below 1×1 "
                    f"({e}); use fewer or smaller layers, padding 'same', a larger image_size "
                    "or pool_after 'last'"
                ) from None
            sizes.append(f"{h}×{w}")

        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(channels):
            layers.append(
                nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=pad, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(make_activation(activation))
            shrink(f"conv {i + 1}", kernel_size, stride, pad)
            cin = cout
            # A pool size of 1 pools nothing, so it adds no layer either way.
            last = i == len(channels) - 1
            if pool_size > 1 and (pool_after == "each" or last):
                layers.append(make_pool(pool, pool_size))
                shrink(f"pool after conv {i + 1}", pool_size, pool_size, 0)
        layers += [nn.Dropout(dropout[0]), nn.Flatten()]  # (B, C*H*W): 64*12*12 = 9216 by default
        self.flat_features = cin * h * w
        layers += [
            nn.Linear(self.flat_features, hidden),
            make_activation(activation),
            nn.Dropout(dropout[1]),
        ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, num_classes)


@register_model("convnet")
def convnet(
    *,
    channels: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    padding: Padding = "valid",
    stride: int = 1,
    pool: Pool = "max",
    pool_size: int = 2,
    hidden: int = 128,
    dropout: tuple[float, float] = (0.25, 0.5),
    activation: Activation = "relu",
    batch_norm: bool = False,
    pool_after: PoolAfter = "last",
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int | tuple[int, int] = 28,
) -> ConvNet:
    """conv 32@3×3 – conv 64@3×3 – max-pool 2 – dropout – fc 128 – dropout – fc classes.

    1,199,882 parameters with the defaults on 1×28×28. ``pool_after="each"`` puts a pool
    (the same ``pool`` and ``pool_size``) after every conv's activation instead: 26 → 13 → 11
    → 5, 64·5·5 = 1,600 features and 225,034 parameters with the other defaults.
    """
    if isinstance(dropout, str | bytes) or not isinstance(dropout, Sequence) or len(dropout) != 2:
        raise ConfigError(
            f"convnet: dropout must be two probabilities [after conv, after fc], got {dropout!r}"
        )
    return ConvNet(
        in_channels,
        num_classes,
        as_hw(image_size),
        positive_ints("convnet: channels", channels, "[32, 64]"),
        positive_int("convnet: kernel_size", kernel_size),
        padding,
        positive_int("convnet: stride", stride),
        pool,
        positive_int("convnet: pool_size", pool_size),
        positive_int("convnet: hidden", hidden),
        (
            dropout_p("convnet: dropout[0]", dropout[0]),
            dropout_p("convnet: dropout[1]", dropout[1]),
        ),
        activation,
        batch_norm,
        one_of("convnet: pool_after", pool_after, PoolAfter),
    )
