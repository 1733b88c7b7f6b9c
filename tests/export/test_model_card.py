"""Tests of the model card (``imgcls.export.model_card``): the README.md of every export.

The card must carry the figures the export measured (parity.json), the facts of the
checkpoint and its run (net, parameter count, optimiser), and be rewritten by a re-export.
The per-class and shift figures are checked against independent computations.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from imgcls.data import get_datamodule
from imgcls.export import export_checkpoint
from imgcls.export.model_card import MARKER
from imgcls.insight.shift import OnnxPredictor, evaluate_shift
from imgcls.training.checkpoint_io import load_classifier

real_data = pytest.mark.real_data
N = 1000  # parity images: the shared export's (conftest.exported_lenet)


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def export_dir(exported_lenet: Path) -> Path:
    return exported_lenet


def pct(v: float) -> str:
    return f"{100 * v:.2f} %"


@real_data
def test_card_carries_the_measured_figures(
    export_dir: Path, trained_ckpt: Path, trained_run: Path, real_data_root: Path
) -> None:
    card = (export_dir / "README.md").read_text()
    parity = json.loads((export_dir / "parity.json").read_text())
    meta = json.loads((export_dir / "metadata.json").read_text())
    assert card.splitlines()[0] == MARKER

    assert f"**{pct(parity['fp32']['onnx_accuracy'])}** on {N:,} test images" in card
    assert parity["test_set_images"] == 10_000 and "official 10,000-image MNIST test set" in card
    rows = parity["per_class"]
    assert [r["class"] for r in rows] == list(range(10))
    assert sum(r["correct"] for r in rows) == round(parity["fp32"]["onnx_accuracy"] * N)
    assert sum(r["n_images"] for r in rows) == N
    for r in rows:
        line = f"| {r['class']} | {r['name']} | {r['n_images']:,} | {r['correct']:,} | "
        assert line + f"{pct(r['accuracy'])} |" in card

    shift = parity["shift"]
    assert shift["n_images"] == N
    assert [r["distance_px"] for r in shift["distances"]] == [1, 2, 3]
    for r in shift["distances"]:
        assert f"| {r['distance_px']} px | {pct(r['mean'])} | {pct(r['worst'])} (" in card
    # the same figures from imgcls.insight.shift, run independently on the exported model
    dm = get_datamodule("mnist", data_dir=str(real_data_root), val_size=0)
    dm.setup("test")
    assert dm.test_set is not None
    images, labels = dm.test_set.images[:N], dm.test_set.labels[:N]
    ref = evaluate_shift(
        OnnxPredictor(export_dir / "model.onnx"), images, labels, max_shift=3, progress=False
    )
    assert np.allclose([r["mean"] for r in shift["distances"]], ref.mean[1:])
    assert np.allclose([r["worst"] for r in shift["distances"]], ref.worst[1:])
    assert shift["unshifted"] == pytest.approx(parity["fp32"]["onnx_accuracy"])

    model = load_classifier(trained_ckpt)
    n_params = sum(p.numel() for p in model.net.parameters())
    assert f"- net: `{meta['net']}` (default arguments), {n_params:,} parameters" in card
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    optimizer = config["model"]["optimizer"]
    assert f"- optimiser: `{optimizer['class_path']}(lr={optimizer['init_args']['lr']!r}" in card
    assert "- batch size: 128" in card
    assert "- validation split: 1,000 images" in card and "- training images: 6,000" in card
    assert f"sha256 `{meta['checkpoint']['sha256']}`" in card
    assert f"imgcls infer --model {export_dir / 'model.onnx'}" in card
    assert f"imgcls serve --model {export_dir / 'model.onnx'}" in card
    assert "tritonserver --model-repository=/models" in card


@real_data
def test_re_export_rewrites_the_card(
    export_dir: Path, trained_ckpt: Path, real_data_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lenet5"
    export_checkpoint(
        trained_ckpt, out, data_dir=real_data_root, parity_subset=300, features=False, log=quiet
    )
    before = (out / "README.md").read_text()
    # another checkpoint, outside a run folder: no config.yaml tells the optimiser
    ckpt = torch.load(trained_ckpt, map_location="cpu", weights_only=True)
    ckpt["epoch"] = 41
    other = tmp_path / "other.ckpt"
    torch.save(ckpt, other)
    export_checkpoint(
        other, out, data_dir=real_data_root, parity_subset=300, features=False, log=quiet
    )
    after = (out / "README.md").read_text()
    assert after != before
    sha = hashlib.sha256(other.read_bytes()).hexdigest()
    assert f"`{other}` (sha256 `{sha}`), epoch 42" in after
    assert "- optimiser: `not recorded (no config.yaml beside the checkpoint)" in after
    assert "- epochs: 42 done" in after
