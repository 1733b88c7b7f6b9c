"""Every registered net: shapes, parameter counts, finiteness, gradients, other input sizes."""

from __future__ import annotations

import pytest
import torch

from imgcls.models import create_model, list_models, register_model
from imgcls.models.layers import Net

NETS = list_models()

# Parameter counts with default arguments on 1×28×28, 10 classes, worked out by hand:
EXPECTED_PARAMS = {
    "convnet": 320 + 18_496 + 9216 * 128 + 128 + 1290,  # 1,199,882 (lecture 002's net)
    "lenet5": 156 + 2_416 + 400 * 120 + 120 + 120 * 84 + 84 + 850,  # 61,706
    "lenet5_small": 156 + 2_416 + 256 * 10 + 10,  # 5,142
    "mlp": 784 * 128 + 128 + 1290,  # 101,770
}


def test_registry_lists_the_lectures_nets():
    assert set(NETS) >= {"mlp", "lenet5_small", "lenet5", "convnet", "resnet"}


@pytest.mark.parametrize("name", NETS)
def test_forward_finite_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    net = create_model(name)
    assert isinstance(net, Net)
    x = torch.randn(4, 1, 28, 28)
    out = net(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    assert net.forward_features(x).shape[0] == 4
    out.logsumexp(1).sum().backward()
    missing = [
        n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
    ]
    assert not missing, f"no gradient for {missing}"
    assert any(p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts(name):
    assert sum(p.numel() for p in create_model(name).parameters()) == EXPECTED_PARAMS[name]


def test_convnet_flattens_to_9216_and_lenet5_small_first_layer_has_150_weights():
    assert create_model("convnet").flat_features == 9216
    first = next(
        m for m in create_model("lenet5_small").modules() if isinstance(m, torch.nn.Conv2d)
    )
    assert first.weight.numel() == 150 and first.weight.shape == (6, 1, 5, 5)


@pytest.mark.parametrize("name", NETS)
def test_three_channel_32x32(name):
    net = create_model(name, in_channels=3, num_classes=7, image_size=32)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize(
    ("kw", "flat"),
    [
        ({"padding": "same"}, 64 * 14 * 14),
        ({"stride": 2}, 64 * 3 * 3),
        ({"pool": "avg"}, 9216),
        ({"channels": [8, 16], "kernel_size": 5}, 16 * 10 * 10),
        ({"pool_after": "last"}, 9216),  # the default, spelled out
        ({"pool_after": "each"}, 64 * 5 * 5),  # 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5
        ({"pool_after": "each", "padding": "same"}, 64 * 7 * 7),  # 28 -> 14 -> 7
    ],
)
def test_convnet_options_change_the_geometry(kw, flat):
    net = create_model("convnet", **kw)
    assert net.flat_features == flat
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_mlp_hidden_sizes_and_resnet_depth():
    assert (
        sum(p.numel() for p in create_model("mlp", hidden=[10]).parameters()) == 784 * 10 + 10 + 110
    )
    deeper = create_model("resnet", blocks=3)
    shallower = create_model("resnet", blocks=1)
    assert sum(p.numel() for p in deeper.parameters()) > sum(
        p.numel() for p in shallower.parameters()
    )


def test_residual_block_is_identity_plus_residual():
    from imgcls.models.resnet import ResidualBlock

    block = ResidualBlock(4, "relu", batch_norm=False)
    torch.nn.init.zeros_(block.conv2.weight)
    torch.nn.init.zeros_(block.conv2.bias)
    f = torch.rand(
        2, 4, 6, 6
    )  # non-negative, so the output ReLU keeps it: W1 = 0 gives f_k = f_{k-1}
    assert torch.equal(block(f), f)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        create_model("alexnet")
    assert all(n in str(e.value) for n in NETS)


def test_unknown_argument_is_an_error():
    with pytest.raises(ValueError, match="hidden"):
        create_model("lenet5", hidden=[3])


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register_model("mlp")(lambda **kw: None)


@pytest.mark.parametrize(
    ("name", "kw", "message"),
    [
        ("mlp", {"hidden": -5}, "mlp: hidden must be a list of positive integers.*got -5"),
        ("mlp", {"hidden": [32, -5]}, r"mlp: hidden must be .*got \[32, -5\]"),
        ("mlp", {"hidden": "32"}, "mlp: hidden must be .*got '32'"),
        ("mlp", {"hidden": [1.5]}, r"mlp: hidden must be .*got \[1.5\]"),
        ("mlp", {"hidden": [True]}, r"mlp: hidden must be .*got \[True\]"),
        ("mlp", {"dropout": 1.5}, r"mlp: dropout must be a probability in \[0, 1\), got 1.5"),
        ("convnet", {"channels": [0, 8]}, r"convnet: channels must be .*got \[0, 8\]"),
        ("convnet", {"hidden": 0}, "convnet: hidden must be a positive integer, got 0"),
        ("convnet", {"stride": "2"}, "convnet: stride must be a positive integer, got '2'"),
        ("convnet", {"dropout": 0.5}, "convnet: dropout must be two probabilities"),
        ("lenet5", {"dropout": -0.1}, "lenet5: dropout must be a probability"),
        ("resnet", {"widths": 16}, "resnet: widths must be a list of positive integers"),
        ("resnet", {"blocks": -1}, "resnet needs at least one width and blocks >= 0"),
        (
            "resnet",
            {"block": "bottleneck"},
            r"resnet: block must be one of \['standard', 'lecture'\], got 'bottleneck'",
        ),
        (
            "convnet",
            {"pool_after": "first"},
            r"convnet: pool_after must be one of \['last', 'each'\], got 'first'",
        ),
        (  # 28 -> 26 -> 13 -> 11 -> 5 -> 3 -> 1, and a 4th 3×3 conv does not fit 1×1
            "convnet",
            {"channels": [8, 8, 8, 8], "pool_after": "each"},
            r"convnet: conv 4 would shrink the maps \(28×28 → 26×26 → 13×13 → 11×11 → 5×5 → "
            r"3×3 → 1×1\) below 1×1",
        ),
        (  # 28 -5×5-> 24 -pool 4-> 6 -5×5-> 2, and a 4×4 pool does not fit 2×2
            "convnet",
            {"kernel_size": 5, "pool_size": 4, "pool_after": "each"},
            r"convnet: pool after conv 2 would shrink the maps \(28×28 → 24×24 → 6×6 → 2×2\) "
            "below 1×1",
        ),
    ],
)
def test_bad_net_arguments_are_config_errors_naming_the_argument(name, kw, message):
    from imgcls.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        create_model(name, **kw)


def test_valid_edge_arguments_still_build():
    assert isinstance(create_model("mlp", hidden=[]).head, torch.nn.Linear)  # logistic regression
    assert create_model("mlp", hidden=(8, 4)).head.in_features == 4
    assert create_model("resnet", blocks=0)(torch.randn(1, 1, 28, 28)).shape == (1, 10)


# ----------------------------------------------------------------------------- resnet blocks
def _blocks(net: torch.nn.Module) -> list[torch.nn.Module]:
    from imgcls.models.resnet import LectureResidualBlock, ResidualBlock

    return [m for m in net.modules() if isinstance(m, ResidualBlock | LectureResidualBlock)]


def test_lecture_block_is_eq_6_term_for_term():
    """f_k = f_{k−1} + W₁ σ(W₂ f_{k−1} + b): conv1 is W₂ + b, conv2 is W₁ (no bias)."""
    from imgcls.models.resnet import LectureResidualBlock

    torch.manual_seed(0)
    block = LectureResidualBlock(4, "relu")
    assert block.conv1.bias is not None and block.conv2.bias is None
    assert sorted(block.state_dict()) == ["conv1.bias", "conv1.weight", "conv2.weight"]
    f = torch.randn(2, 4, 6, 6)
    by_hand = f + torch.nn.functional.conv2d(
        torch.relu(torch.nn.functional.conv2d(f, block.conv1.weight, block.conv1.bias, padding=1)),
        block.conv2.weight,
        padding=1,
    )
    assert torch.allclose(block(f), by_hand, atol=1e-6)
    torch.nn.init.zeros_(block.conv2.weight)  # W₁ = 0: exactly the identity, negatives kept
    assert torch.equal(block(f), f)


def test_lecture_blocks_have_no_batch_norm_or_activation_after_the_sum():
    torch.manual_seed(0)
    net = create_model("resnet", widths=[4, 8], blocks=2, block="lecture", batch_norm=True)
    blocks = _blocks(net)
    assert len(blocks) == 4
    for b in blocks:
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in b.modules())
        assert b.conv2.bias is None
        f = torch.randn(2, b.conv1.in_channels, 7, 7)
        assert (b(f) < 0).any()  # nothing clips the sum
    # batch_norm still applies outside the blocks: the stem and the downsampling conv
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 2


def test_standard_block_is_unchanged():
    """He et al.: BN inside, ReLU after the sum, so a block never outputs a negative value."""
    torch.manual_seed(0)
    net = create_model("resnet", widths=[4, 8], blocks=2).eval()
    blocks = _blocks(net)
    assert len(blocks) == 4
    for b in blocks:
        assert isinstance(b.bn1, torch.nn.BatchNorm2d) and isinstance(b.bn2, torch.nn.BatchNorm2d)
        assert b.conv1.bias is None and b.conv2.bias is None  # BN's shift replaces the bias
        assert (b(torch.randn(2, b.conv1.in_channels, 7, 7)) >= 0).all()
    assert (
        net.state_dict().keys()
        == create_model("resnet", widths=[4, 8], blocks=2, block="standard").state_dict().keys()
    )


# widths [16, 32], 2 blocks, batch_norm, 1×28×28, 10 classes, by hand:
#   stem conv 1→16 (no bias) 144 + BN 32                                       =    176
#   standard block 16: 2 convs 16·16·9 = 2,304 each (no bias) + 2 BN of 32     =  4,672 (×2)
#   downsample conv 16→32: 32·16·9 = 4,608 (no bias) + BN 64                  =  4,672
#   standard block 32: 2 convs 32·32·9 = 9,216 each + 2 BN of 64               = 18,560 (×2)
#   head 32·10 + 10                                                            =    330
#   standard: 176 + 2·4,672 + 4,672 + 2·18,560 + 330                           = 51,642
#   lecture block 16: conv1 2,304 + 16 bias, conv2 2,304, no BN                =  4,624 (×2)
#   lecture block 32: conv1 9,216 + 32 bias, conv2 9,216, no BN                = 18,464 (×2)
#   lecture: 176 + 2·4,624 + 4,672 + 2·18,464 + 330                            = 51,354
@pytest.mark.parametrize(("block", "params"), [("standard", 51_642), ("lecture", 51_354)])
def test_resnet_parameter_counts_by_block(block, params):
    net = create_model("resnet", widths=[16, 32], blocks=2, block=block)
    assert sum(p.numel() for p in net.parameters()) == params


def test_resnet_default_block_is_standard():
    assert create_model("resnet").state_dict().keys() == (
        create_model("resnet", block="standard").state_dict().keys()
    )


@pytest.mark.parametrize("block", ["standard", "lecture"])
def test_layer_costs_describe_both_blocks(block):
    from imgcls.insight.cost import layer_costs, totals

    net = create_model("resnet", widths=[16, 32], blocks=2, block=block)
    costs = layer_costs(net)
    assert totals(costs)[0] == sum(p.numel() for p in net.parameters())
    assert all(c.name != "(unused)" for c in costs)
    kinds = {c.name: c.kind for c in costs}
    assert kinds["features.3.conv1"] == "Conv2d 16→16, 3×3, pad 1"
    assert ("features.3.bn1" in kinds) == (block == "standard")


# ----------------------------------------------------------------------------- convnet pooling
def test_convnet_pool_after_each_is_conv_pool_conv_pool():
    net = create_model("convnet", pool_after="each")
    kinds = [type(m).__name__ for m in net.features][:6]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d"]
    # 320 + 18,496 conv weights, 1,600·128 + 128 fc, 128·10 + 10 head
    assert sum(p.numel() for p in net.parameters()) == 320 + 18_496 + 1600 * 128 + 128 + 1290
    bn = create_model("convnet", pool_after="each", pool="avg", batch_norm=True)
    kinds = [type(m).__name__ for m in bn.features][:8]
    assert kinds == [
        *("Conv2d", "BatchNorm2d", "ReLU", "AvgPool2d"),
        *("Conv2d", "BatchNorm2d", "ReLU", "AvgPool2d"),
    ]
    assert bn.flat_features == 1600


@pytest.mark.parametrize(
    ("net", "args", "maps"),
    [
        (
            "convnet",
            {"pool_after": "each"},
            [
                ("features.0 + ReLU", "conv", (32, 26, 26)),
                ("features.2 (MaxPool2d)", "pool", (32, 13, 13)),
                ("features.3 + ReLU", "conv", (64, 11, 11)),
                ("features.5 (MaxPool2d)", "pool", (64, 5, 5)),
            ],
        ),
        (
            "resnet",
            {"widths": [4], "blocks": 1, "block": "lecture"},
            [
                ("features.0 + ReLU", "conv", (4, 28, 28)),
                ("features.3.conv1", "conv", (4, 28, 28)),
                ("features.3.conv2", "conv", (4, 28, 28)),
            ],
        ),
    ],
)
def test_new_variants_export_their_feature_maps_to_onnx(net, args, maps):
    import numpy as np
    import onnxruntime as ort

    from imgcls.export.features import feature_outputs, to_features_onnx

    torch.manual_seed(0)
    model = create_model(net, **args).eval()
    outs = feature_outputs(model, (1, 28, 28))
    assert [(label, kind, shape) for label, kind, _, shape in outs] == maps
    proto = to_features_onnx(model, 0.0, 1.0, (1, 28, 28), [m for _, _, m, _ in outs])
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = torch.rand(2, 1, 28, 28)
    got = sess.run(None, {"pixels": pixels.numpy()})
    with torch.inference_mode():
        logits = model(pixels)
    assert np.abs(got[0] - logits.numpy()).max() <= 1e-4
    assert [g.shape[1:] for g in got[2:]] == [shape for _, _, shape in maps]
