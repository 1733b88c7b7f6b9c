"""Tests of ``model.features.onnx``: the exported net with its feature maps as extra outputs.

The session's trained LeNet-5 is exported twice on a 500-image parity subset, with and
without the features file; the maps are checked against forward hooks placed by hand on the
net's own layers (not through ``probe.feature_taps``), on real test images the gate did not
look at.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import imgcls.export.features as features_mod
from imgcls.__main__ import main
from imgcls.data import get_datamodule
from imgcls.data.transforms import normalize
from imgcls.deploy.classifier import OnnxClassifier, read_metadata
from imgcls.errors import GateError
from imgcls.export import export_checkpoint
from imgcls.export.features import feature_outputs
from imgcls.export.graph import set_metadata, to_features_onnx
from imgcls.insight.probe import feature_maps
from imgcls.models import create_model
from imgcls.models.taps import feature_taps
from imgcls.training.checkpoint_io import load_classifier
from tests.helpers.training import make_checkpoint

real_data = pytest.mark.real_data
SUBSET = 500
FEATURES = "model.features.onnx"
# LeNet-5 on 28×28: conv 6@5×5 pad 2 + ReLU, 2×2 max-pool, conv 16@5×5 + ReLU, 2×2 max-pool
LENET5_MAPS = [
    {"output": "fmap_0", "label": "features.0 + ReLU", "kind": "conv", "shape": [6, 28, 28]},
    {"output": "fmap_1", "label": "features.2 (MaxPool2d)", "kind": "pool", "shape": [6, 14, 14]},
    {"output": "fmap_2", "label": "features.3 + ReLU", "kind": "conv", "shape": [16, 10, 10]},
    {"output": "fmap_3", "label": "features.5 (MaxPool2d)", "kind": "pool", "shape": [16, 5, 5]},
]


def props(path: Path) -> dict:
    return {p.key: json.loads(p.value) for p in onnx.load(path).metadata_props}


def run_onnx(path: Path, images: torch.Tensor) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"pixels": images.numpy().astype(np.float32) / 255})


@pytest.fixture(scope="module")
def test_images(real_data_root: Path) -> torch.Tensor:
    dm = get_datamodule("mnist", data_dir=str(real_data_root))
    dm.setup("test")
    assert dm.test_set is not None
    return dm.test_set.images


@pytest.fixture(scope="module")
def exports(
    trained_ckpt: Path, real_data_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The trained LeNet-5 exported with (default) and without the features file."""
    root = tmp_path_factory.mktemp("features")
    out = {"with": root / "with", "without": root / "without"}
    for key, features in (("with", True), ("without", False)):
        export_checkpoint(
            trained_ckpt,
            out[key],
            features=features,
            data_dir=real_data_root,
            parity_subset=SUBSET,
            log=lambda _: None,
        )
    return out


# ----------------------------------------------------------------------------- LeNet-5
@real_data
def test_features_file_outputs_and_metadata(exports: dict[str, Path], trained_ckpt: Path) -> None:
    out = exports["with"]
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "metadata.json",
        FEATURES,
        "model.onnx",
        "parity.json",
    ]
    model = onnx.load(out / FEATURES)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["pixels"]
    names = [o.name for o in model.graph.output]
    assert names == ["logits", "probabilities", "fmap_0", "fmap_1", "fmap_2", "fmap_3"]
    for value, fm in zip(model.graph.output[2:], LENET5_MAPS, strict=True):
        t = value.type.tensor_type
        assert t.elem_type == onnx.TensorProto.FLOAT
        assert t.shape.dim[0].dim_param  # dynamic batch
        assert [d.dim_value for d in t.shape.dim[1:]] == fm["shape"]

    # The expected shapes follow from the net definition itself.
    net = load_classifier(trained_ckpt).net
    conv1, conv2 = net.features[0], net.features[3]
    assert isinstance(conv1, nn.Conv2d) and isinstance(conv2, nn.Conv2d)
    assert (conv1.out_channels, conv1.kernel_size, conv1.padding) == (6, (5, 5), (2, 2))
    assert (conv2.out_channels, conv2.kernel_size, conv2.padding) == (16, (5, 5), (0, 0))
    assert isinstance(net.features[1], nn.ReLU) and isinstance(net.features[4], nn.ReLU)
    assert isinstance(net.features[2], nn.MaxPool2d) and isinstance(net.features[5], nn.MaxPool2d)

    meta = props(out / FEATURES)
    plain = json.loads((out / "metadata.json").read_text())
    assert meta["feature_maps"] == LENET5_MAPS
    assert meta["features_of"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert {k: v for k, v in meta.items() if k not in ("feature_maps", "features_of")} == plain
    assert "feature_maps" not in plain and props(out / "model.onnx") == plain
    assert read_metadata(out / FEATURES) == meta

    parity = json.loads((out / "parity.json").read_text())
    feats = parity["features"]
    assert feats["n_images"] == SUBSET and feats["outputs"] == names[2:]
    assert feats["top1_agreement_with_fp32"] == 1.0 and feats["disagreements"] == 0
    assert 0 <= feats["max_abs_logit_diff_vs_fp32"] <= 1e-4
    assert feats["fmap_images"] == 16 and 0 <= feats["max_abs_fmap_diff_vs_torch"] <= 1e-4
    assert (
        parity["model_sha256"][FEATURES]
        == hashlib.sha256((out / FEATURES).read_bytes()).hexdigest()
    )


@real_data
@pytest.mark.parametrize("batch", [1, 64])
def test_fmaps_match_pytorch_hooks(
    exports: dict[str, Path], trained_ckpt: Path, test_images: torch.Tensor, batch: int
) -> None:
    """Hooks placed by hand on ReLU 1, pool 1, ReLU 2, pool 2, on images after the gate's."""
    images = test_images[3000 : 3000 + batch]
    model = load_classifier(trained_ckpt)
    taps = [model.net.features[i] for i in (1, 2, 4, 5)]
    ref: list[torch.Tensor] = []
    hooks = [t.register_forward_hook(lambda m, a, o: ref.append(o.clone())) for t in taps]
    try:
        with torch.inference_mode():
            ref_logits = model(normalize(images, model.hparams.mean, model.hparams.std))
    finally:
        for h in hooks:
            h.remove()
    got = run_onnx(exports["with"] / FEATURES, images)
    assert len(got) == 6
    np.testing.assert_allclose(got[0], ref_logits.numpy(), atol=1e-4, rtol=0)
    for fm, onnx_map, torch_map in zip(LENET5_MAPS, got[2:], ref, strict=True):
        assert onnx_map.shape == (batch, *fm["shape"]) and onnx_map.dtype == np.float32
        assert np.abs(onnx_map - torch_map.numpy()).max() <= 1e-4
    assert (got[2] >= 0).all() and got[2].max() > 0  # after the ReLU, and not all dead
    # pool of the ReLU map, inside the ONNX graph itself
    pooled = torch.nn.functional.max_pool2d(torch.from_numpy(got[2]), 2).numpy()
    np.testing.assert_array_equal(got[3], pooled)

    # probe.feature_maps (the insight figures) shows the same conv maps
    shown = feature_maps(model.net, images[0], model.hparams.mean, model.hparams.std)
    assert [label for label, _ in shown] == ["features.0 + ReLU", "features.3 + ReLU"]
    for (_, m), onnx_map in zip(shown, (got[2], got[4]), strict=True):
        assert np.abs(m.numpy() - onnx_map[0]).max() <= 1e-4


@real_data
def test_logits_equal_model_onnx(exports: dict[str, Path], test_images: torch.Tensor) -> None:
    out = exports["with"]
    images = test_images[:SUBSET]
    plain_logits, plain_probs = run_onnx(out / "model.onnx", images)
    feats = run_onnx(out / FEATURES, images)
    assert np.abs(feats[0] - plain_logits).max() <= 1e-4
    assert (feats[0].argmax(1) == plain_logits.argmax(1)).all()
    np.testing.assert_allclose(feats[1], plain_probs, atol=1e-6, rtol=0)
    # the serving runtime loads it like model.onnx
    labels, _ = OnnxClassifier(out / FEATURES, device="cpu").predict(images.numpy())
    np.testing.assert_array_equal(labels, plain_logits.argmax(1))


@real_data
def test_model_onnx_is_unchanged_by_the_option(exports: dict[str, Path]) -> None:
    with_, without = (onnx.load(exports[k] / "model.onnx") for k in ("with", "without"))
    assert [o.name for o in with_.graph.output] == ["logits", "probabilities"]
    assert with_.graph.SerializeToString() == without.graph.SerializeToString()
    meta_with, meta_without = (
        props(exports["with"] / "model.onnx"),
        props(exports["without"] / "model.onnx"),
    )
    assert meta_with.pop("created_at") and meta_without.pop("created_at")
    assert meta_with == meta_without
    # byte for byte, once the export time is the same
    set_metadata(without, {**props(exports["with"] / "model.onnx")})
    assert without.SerializeToString() == (exports["with"] / "model.onnx").read_bytes()

    assert sorted(p.name for p in exports["without"].iterdir()) == [
        "README.md",
        "metadata.json",
        "model.onnx",
        "parity.json",
    ]
    parity = json.loads((exports["without"] / "parity.json").read_text())
    assert "features" not in parity and FEATURES not in parity["model_sha256"]


# ----------------------------------------------------------------------------- other nets
@real_data
def test_mlp_gets_no_features_file(real_data_root: Path, tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "mlp.ckpt", "mlp", {"hidden": [16]})
    messages: list[str] = []
    out = tmp_path / "out"
    result = export_checkpoint(
        ckpt, out, data_dir=real_data_root, parity_subset=100, log=messages.append
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "metadata.json",
        "model.onnx",
        "parity.json",
    ]
    assert "features" not in result.parity
    why = [m for m in messages if FEATURES in m]
    assert len(why) == 1 and "no convolutional layers" in why[0]


@pytest.mark.parametrize(
    ("net", "args"),
    [("resnet", {"widths": [4, 8], "blocks": 1}), ("convnet", {"batch_norm": True})],
)
def test_taps_of_nets_with_batch_norm_and_residual_blocks(net: str, args: dict) -> None:
    """Convs inside residual blocks show their own output; the 1×1 global pool is no map."""
    torch.manual_seed(0)
    model = create_model(net, **args).eval()
    with torch.no_grad():  # batch norm with non-trivial statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    outs = feature_outputs(model, (1, 28, 28))
    if net == "resnet":
        assert [(label, kind, shape) for label, kind, _, shape in outs] == [
            ("features.0 + ReLU", "conv", (4, 28, 28)),
            ("features.3.conv1", "conv", (4, 28, 28)),
            ("features.3.conv2", "conv", (4, 28, 28)),
            ("features.4 + ReLU", "conv", (8, 14, 14)),
            ("features.7.conv1", "conv", (8, 14, 14)),
            ("features.7.conv2", "conv", (8, 14, 14)),
        ]
        assert isinstance(outs[1][2], nn.Conv2d)
    else:
        assert [(label, kind, shape) for label, kind, _, shape in outs] == [
            ("features.0 + ReLU", "conv", (32, 26, 26)),
            ("features.3 + ReLU", "conv", (64, 24, 24)),
            ("features.6 (MaxPool2d)", "pool", (64, 12, 12)),
        ]
    proto = to_features_onnx(model, 0.1307, 0.3081, (1, 28, 28), [m for _, _, m, _ in outs])
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = torch.rand(3, 1, 28, 28)
    got = sess.run(None, {"pixels": pixels.numpy()})
    ref: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda mod, a, o: ref.append(o.clone())) for _, _, m, _ in outs
    ]
    try:
        with torch.inference_mode():
            logits = model((pixels - 0.1307) / 0.3081)
    finally:
        for h in hooks:
            h.remove()
    assert not any(m._forward_hooks for m in model.modules())  # the export removed its hooks
    assert np.abs(got[0] - logits.numpy()).max() <= 1e-4
    for onnx_map, torch_map in zip(got[2:], ref, strict=True):
        assert np.abs(onnx_map - torch_map.numpy()).max() <= 1e-4


def test_taps_follow_the_forward_order_and_skip_global_pools() -> None:
    class Net(nn.Module):  # registered in another order than the forward pass runs them
        def __init__(self) -> None:
            super().__init__()
            self.late = nn.Conv2d(4, 2, 3)
            self.early = nn.Conv2d(1, 4, 3)
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.grid = nn.AdaptiveMaxPool2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.late(self.early(x))
            return (self.gap(y) + self.grid(y).amax((2, 3), keepdim=True)).flatten(1)

    net = Net()
    assert [(label, kind) for label, kind, _ in feature_taps(net)] == [
        ("late", "conv"),
        ("early", "conv"),
        ("grid (AdaptiveMaxPool2d)", "pool"),
    ]
    assert [(label, shape) for label, _, _, shape in feature_outputs(net, (1, 10, 10))] == [
        ("early", (4, 8, 8)),
        ("late", (2, 6, 6)),
        ("grid (AdaptiveMaxPool2d)", (2, 3, 3)),
    ]
    assert feature_outputs(create_model("mlp"), (1, 28, 28)) == []


# ----------------------------------------------------------------------------- the gate
@real_data
def test_failed_features_gate_writes_nothing(
    trained_ckpt: Path, real_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    real = features_mod.to_features_onnx

    def other_net(net: nn.Module, *args: object, **kwargs: object) -> onnx.ModelProto:
        torch.manual_seed(0)
        untrained = create_model("lenet5").eval()
        taps = [m for _, _, m, _ in feature_outputs(untrained, (1, 28, 28))]
        return real(untrained, args[0], args[1], args[2], taps)  # type: ignore[arg-type]

    monkeypatch.setattr(features_mod, "to_features_onnx", other_net)
    with pytest.raises(GateError, match="features parity gate failed: max \\|Δlogit\\| vs model"):
        export_checkpoint(
            trained_ckpt, out, data_dir=real_data_root, parity_subset=100, log=lambda _: None
        )
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the command
@real_data
def test_export_command_writes_features_unless_told_not_to(
    trained_ckpt: Path, real_data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["export", "--ckpt", str(trained_ckpt), "--data_dir", str(real_data_root)]
    out = tmp_path / "with"
    assert main([*base, "--out", str(out), "--parity_subset", "100", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["features_model"] == str(out / FEATURES) and (out / FEATURES).is_file()
    assert str(out / FEATURES) in summary["files"] and summary["feature_maps"] == 4
    assert props(out / FEATURES)["feature_maps"] == LENET5_MAPS

    # the line a person reads names the file too
    again = tmp_path / "again"
    assert main([*base, "--out", str(again), "--parity_subset", "50"]) == 0
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and f"feature maps: {again / FEATURES} (4 maps)" in line

    none = tmp_path / "without"
    argv = [*base, "--out", str(none), "--parity_subset", "100", "--no-features", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["features_model"] is None and not (none / FEATURES).exists()
    assert sorted(p.name for p in none.iterdir()) == [
        "README.md",
        "metadata.json",
        "model.onnx",
        "parity.json",
    ]
