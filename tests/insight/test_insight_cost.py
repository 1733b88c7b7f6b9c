"""Tests of ``imgcls.insight.cost`` / ``kernels`` and ``imgcls summary``: lecture 000's worked
examples reproduced exactly, and the registered nets' totals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from imgcls.__main__ import main
from imgcls.insight import InsightError
from imgcls.insight.cost import (
    conv_macs,
    conv_params,
    layer_costs,
    net_from_spec,
    output_size,
    output_size_text,
    summary_table,
    totals,
)
from imgcls.insight.kernels import (
    KERNELS,
    apply_kernels,
    cross_correlate1d,
    cross_correlate2d,
    max_pool2d,
)
from imgcls.insight.report.running import worked_examples
from imgcls.models import create_model


# ----------------------------------------------------------------------------- lecture 000
def test_1d_convolution_of_the_lecture() -> None:
    assert cross_correlate1d([1, 2, 3, 4, 5, 6], [1, 2]).tolist() == [5, 8, 11, 14, 17]


def test_valid_convolution_sizes() -> None:
    assert cross_correlate2d(torch.ones(3, 3), torch.ones(2, 2)).shape == (2, 2)
    assert cross_correlate2d(torch.ones(4, 4), torch.ones(3, 3)).shape == (2, 2)
    assert cross_correlate2d(torch.ones(4, 3), torch.ones(2, 2)).shape == (3, 2)
    assert (output_size(3, 2), output_size(4, 3), output_size(4, 2)) == (2, 2, 3)
    # c11 = a11 w11 + a12 w12 + a21 w21 + a22 w22 (lecture 000's 2-D example, unflipped)
    a = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])
    w = torch.tensor([[1.0, 10], [100, 1000]])
    assert cross_correlate2d(a, w).tolist() == [
        [1 + 20 + 400 + 5000, 2 + 30 + 500 + 6000],
        [4 + 50 + 700 + 8000, 5 + 60 + 800 + 9000],
    ]


def test_same_and_strided_sizes() -> None:
    assert output_size(28, 5, padding="same") == 28
    assert output_size(32, 5, padding="same") == 32
    assert output_size(28, 5, padding=2) == 28
    assert output_size(28, 5) == 24  # valid: 28 − 5 + 1
    assert output_size(28, 3, stride=2, padding="same") == 14  # ⌊(28 + 2 − 3)/2⌋ + 1
    assert output_size(7, 3, stride=2) == 3
    assert (
        output_size(24, 2, stride=2) == 12
    )  # 2×2 max-pool of the 2-conv net: 64×24×24 -> 64×12×12
    assert output_size(3, 2, stride=1) == 2  # the lecture's pooling example
    assert "⌊(28 + 2·2 − 5)/1⌋ + 1" in output_size_text(28, 5, 1, "same")
    with pytest.raises(InsightError, match="odd"):
        output_size(28, 4, padding="same")
    with pytest.raises(InsightError, match="does not fit"):
        output_size(3, 5)


def test_max_pool_of_the_lecture() -> None:
    assert max_pool2d([[1, 2, 3], [4, 5, 6], [7, 8, 9]], 2, stride=1).tolist() == [[5, 6], [8, 9]]
    assert max_pool2d(
        [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]], 2
    ).tolist() == [[6, 8], [14, 16]]


def test_conv_weights_versus_fully_connected() -> None:
    assert conv_params(1, 6, 5, bias=False) == 150  # a 5×5×6 conv
    assert (
        layer_costs(nn.Linear(28 * 28, 6, bias=False), (28 * 28,))[0].params == 4704
    )  # 6 units on 28×28
    assert nn.Conv2d(1, 6, 5, bias=False).weight.numel() == 150


def test_rgb_conv_cost_of_the_lecture() -> None:
    conv = nn.Conv2d(3, 10, 5, padding=2)
    (cost,) = layer_costs(conv, (3, 32, 32))
    assert cost.output_shape == (10, 32, 32)
    assert cost.macs == 768_000 == conv_macs(3, 10, 5, (32, 32)) == 75 * 1024 * 10
    assert conv.weight.numel() == 750 and conv.bias is not None and conv.bias.numel() == 10
    assert cost.params == 760 == conv_params(3, 10, 5)


def test_report_worked_examples_all_match() -> None:
    examples = worked_examples()
    assert len(examples) == 12 and all(e["match"] for e in examples), [
        e for e in examples if not e["match"]
    ]
    rgb = {e["claim"]: e["ours"] for e in examples}
    assert rgb["features of a 28×28×3 image"] == "2,352"
    assert rgb["weights of 128 fully-connected units on it"] == "301,056"


# ----------------------------------------------------------------------------- nets
@pytest.mark.parametrize(
    ("net", "kwargs", "params", "macs"),
    [
        ("lenet5", {}, 61_706, 117_600 + 240_000 + 48_000 + 10_080 + 840),
        ("convnet", {}, 1_199_882, 194_688 + 10_616_832 + 1_179_648 + 1_280),
        ("lenet5_small", {}, 5_142, 6 * 24 * 24 * 25 + 16 * 8 * 8 * 150 + 256 * 10),
        ("mlp", {"hidden": [10]}, 7_960, 7_840 + 100),
        ("mlp", {"hidden": [32]}, 25_450, 25_088 + 320),
    ],
)
def test_net_totals(net: str, kwargs: dict, params: int, macs: int) -> None:
    model = create_model(net, **kwargs)
    costs = layer_costs(model)
    assert totals(costs) == (params, macs)
    assert params == sum(p.numel() for p in model.parameters())


def test_lenet5_layers() -> None:
    costs = layer_costs(create_model("lenet5"))
    convs = [c for c in costs if c.kind.startswith("Conv2d")]
    assert [(c.output_shape, c.params, c.macs) for c in convs] == [
        ((6, 28, 28), 156, 117_600),
        ((16, 10, 10), 2_416, 240_000),
    ]
    pools = [c.output_shape for c in costs if c.kind.startswith("MaxPool2d")]
    assert pools == [(6, 14, 14), (16, 5, 5)]
    assert costs[-1].name == "head" and costs[-1].output_shape == (10,)
    cols, rows = summary_table(costs)
    assert rows[-1] == ["**total**", "", "", "**61,706**", "**416,520**"]


def test_every_registered_net_is_counted_in_full() -> None:
    from imgcls.models import list_models

    for name in list_models():
        model = create_model(name)
        params, macs = totals(layer_costs(model))
        assert params == sum(p.numel() for p in model.parameters()) and macs > 0, name


def test_resnet_counts_batch_norm_as_one_multiply_add_per_element() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))
    costs = layer_costs(net, (1, 8, 8))
    assert [c.macs for c in costs] == [4 * 8 * 8 * 9, 4 * 8 * 8]


def test_unknown_net_is_an_insight_error() -> None:
    with pytest.raises(InsightError, match="valid names"):
        net_from_spec("nope")


# ----------------------------------------------------------------------------- kernels
def test_kernels_are_cross_correlation_not_convolution() -> None:
    delta = torch.zeros(7, 7)
    delta[3, 3] = 1.0
    for name, k in KERNELS.items():
        kt = torch.tensor(k, dtype=torch.float64)
        r = kt.shape[0] // 2
        response = cross_correlate2d(delta, kt, padding="same")[
            3 - r : 3 + r + 1, 3 - r : 3 + r + 1
        ]
        # Cross-correlating a delta gives the kernel rotated by 180°; a true convolution would
        # give it as is.
        assert torch.equal(response, torch.flip(kt, dims=(0, 1))), name


def test_sobel_sees_vertical_edges_only_in_the_vertical_kernel() -> None:
    img = torch.zeros(8, 8, dtype=torch.uint8)
    img[:, 4:] = 255  # a vertical edge
    out = apply_kernels(img)
    assert list(out) == list(KERNELS) and all(v.shape == (8, 8) for v in out.values())
    inner = (slice(1, -1), slice(1, -1))  # away from the zero padding
    assert out["Sobel vertical"][inner].abs().max() == 4.0  # 1 + 2 + 1 across the edge
    assert out["Sobel horizontal"][inner].abs().max() == 0.0
    assert torch.allclose(
        out["sharpen"][inner][:, :2], torch.zeros(6, 2, dtype=torch.float64)
    )  # flat dark area
    assert out["prong (lecture 000)"].shape == (8, 8)


# ----------------------------------------------------------------------------- the command
def test_summary_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["summary", "--net", "convnet"]) == 0
    out = capsys.readouterr().out
    assert (
        "1,199,882 parameters" in out
        and "| features.7 | Linear 9216→128 | 128 | 1,179,776 | 1,179,648 |" in out
    )
    assert (
        main(["summary", "--net", "mlp", "--net_args", '{"hidden": [32]}', "--out", str(tmp_path)])
        == 0
    )
    data = json.loads((tmp_path / "summary.json").read_text())
    assert (data["params"], data["macs"]) == (25_450, 25_408)
    assert (tmp_path / "summary.md").read_text().count("\n| ") >= 5
    assert (
        (tmp_path / "summary.csv")
        .read_text()
        .startswith("layer,type,output shape,params,multiply-adds")
    )


def test_summary_output_size_helper(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "--size", "28", "--kernel", "5", "--padding", "same"]) == 0
    assert capsys.readouterr().out.startswith("28 → 28")
    assert main(["summary", "--size", "24", "--kernel", "2", "--pool"]) == 0
    assert capsys.readouterr().out.startswith("24 → 12")
    assert (
        main(["summary", "--size", "32", "--kernel", "3", "--stride", "2", "--padding", "1"]) == 0
    )
    assert capsys.readouterr().out.startswith("32 → 16")


def test_summary_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["summary", "--net", "nope"]) == 2
    assert "unknown net 'nope'" in capsys.readouterr().err
    missing = tmp_path / "missing.ckpt"
    assert main(["summary", "--ckpt", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main(["summary", "--net", "mlp", "--net_args", "{hidden"]) == 2
    assert "--net_args" in capsys.readouterr().err
    assert main(["summary", "--size", "4", "--kernel", "2", "--padding", "same"]) == 2
    assert "odd" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("net_args", "expected"),
    [
        ('{"hidden": -5}', "mlp: hidden must be a list of positive integers"),
        ('{"hidden": [-5]}', "mlp: hidden must be a list of positive integers"),
        ('{"hidden": "32"}', "mlp: hidden must be a list of positive integers"),
        ('{"hiden": [32]}', "net 'mlp' takes no argument(s) ['hiden']"),
        ('{"hidden": [32], "dropout": 2}', "mlp: dropout must be a probability"),
        ("[32]", "--net_args must be a JSON object"),
    ],
)
def test_summary_bad_net_args_is_one_line(
    net_args: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["summary", "--net", "mlp", "--net_args", net_args]) == 2
    captured = capsys.readouterr()
    assert (
        captured.err.startswith("imgcls: error: ")
        and captured.err.count("\n") == 1
        and expected in captured.err
    )
    assert captured.out == ""


def test_summary_bad_input_shape_or_classes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "--net", "mlp", "--num_classes", "-1"]) == 2
    assert "--num_classes must be positive" in capsys.readouterr().err
    assert main(["summary", "--net", "mlp", "--input", "1,-3,28"]) == 2
    assert "got --input 1,-3,28" in capsys.readouterr().err


def test_summary_of_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers.training import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "m.ckpt", "lenet5")
    assert main(["summary", "--ckpt", str(ckpt)]) == 0
    assert "61,706 parameters, 416,520 multiply-adds" in capsys.readouterr().out
