"""Tests of ``imgcls export`` with several checkpoints: one ONNX graph that averages the
members' softmax probabilities (``imgcls.export.ensemble``), and test-time augmentation
inside the graph.

The members are the session's trained LeNet-5 (best.ckpt and last.ckpt) and an untrained
MLP (a different net); the ONNX answers are held against the members' probabilities computed
here in PyTorch, member by member, on real test images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from imgcls.__main__ import main
from imgcls.data import get_datamodule
from imgcls.data.transforms import normalize
from imgcls.errors import ConfigError
from imgcls.export import export_ensemble
from imgcls.export.ensemble import EnsembleNet, check_tta
from imgcls.training.checkpoint_io import load_classifier
from tests.deploy import test_page
from tests.deploy.test_static_page import Visit
from tests.helpers.training import make_checkpoint

real_data = pytest.mark.real_data
SUBSET = 300


def quiet(_: str) -> None:
    pass


def real_test_images(dataset: str, root: Path, n: int) -> tuple[torch.Tensor, np.ndarray]:
    dm = get_datamodule(dataset, data_dir=str(root))
    dm.setup("test")
    assert dm.test_set is not None
    return dm.test_set.images[:n], dm.test_set.labels[:n].numpy()


def run_onnx(path: Path, images: torch.Tensor) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"pixels": images.numpy().astype(np.float32) / 255})


def member_probs(ckpt: Path, images: torch.Tensor, hflip: bool = False) -> np.ndarray:
    model = load_classifier(ckpt)
    x = normalize(images, model.hparams.mean, model.hparams.std)
    if hflip:
        x = torch.flip(x, dims=(3,))
    with torch.inference_mode():
        return torch.softmax(model.net(x).double(), dim=1).numpy()


@pytest.fixture(scope="module")
def members(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    ckpts = trained_run / "checkpoints"
    mlp = make_checkpoint(tmp_path_factory.mktemp("mlp") / "mlp.ckpt", "mlp", {"hidden": [16]})
    return [ckpts / "best.ckpt", ckpts / "last.ckpt", mlp]


@pytest.fixture(scope="module")
def ensemble(
    members: list[Path], real_data_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("ensemble") / "ens"
    export_ensemble(members, out, data_dir=real_data_root, parity_subset=SUBSET, log=quiet)
    return out


@real_data
def test_graph_averages_the_members_probabilities(
    ensemble: Path, members: list[Path], real_data_root: Path
) -> None:
    # images past the parity subset: the gate never saw them
    images, _ = real_test_images("mnist", real_data_root, 1000)
    images = images[SUBSET:]
    logits, probs = run_onnx(ensemble / "model.onnx", images)
    expected = np.mean([member_probs(c, images) for c in members], axis=0)
    assert np.abs(probs - expected).max() <= 1e-5
    # the logits are the log of the average: softmax of them gives it back
    assert np.abs(logits - np.log(expected)).max() <= 1e-4
    # not any one member's answer: the average differs from each
    for c in members:
        assert np.abs(member_probs(c, images) - expected).max() > 1e-3


@real_data
def test_metadata_card_and_parity(
    ensemble: Path, members: list[Path], real_data_root: Path
) -> None:
    meta = json.loads((ensemble / "metadata.json").read_text())
    parity = json.loads((ensemble / "parity.json").read_text())
    images, labels = real_test_images("mnist", real_data_root, SUBSET)
    expected = np.mean([member_probs(c, images) for c in members], axis=0)
    own = [float((member_probs(c, images).argmax(1) == labels).mean()) for c in members]

    params = [sum(p.numel() for p in load_classifier(c).net.parameters()) for c in members]
    assert meta["net"] == "ensemble of 3"
    assert meta["net_args"] == {"members": ["lenet5", "lenet5", "mlp"]}
    assert meta["parameters"] == sum(params)
    assert meta["test_accuracy"] == pytest.approx(float((expected.argmax(1) == labels).mean()))
    ens = meta["ensemble"]
    assert [m["checkpoint"]["path"] for m in ens["members"]] == [str(c) for c in members]
    assert [m["parameters"] for m in ens["members"]] == params
    assert [m["torch_accuracy"] for m in ens["members"]] == pytest.approx(own)
    assert ens["views"] == ["identity"]
    assert [m["torch_accuracy"] for m in parity["members"]] == pytest.approx(own)
    assert parity["fp32"]["top1_agreement"] == 1.0
    assert parity["fp32"]["max_abs_logit_diff"] <= 1e-4
    assert parity["shift"]["unshifted"] == pytest.approx(meta["test_accuracy"])
    # the page's ledger: the first member's layers, named as in the graph
    assert meta["layers"][0]["name"] == "members.0.features.0"
    assert all(e["name"].startswith("members.0.") for e in meta["layers"])

    card = (ensemble / "README.md").read_text()
    assert "ensemble of 3" in card and "## Ensemble" in card
    for c, acc in zip(members, own, strict=True):
        assert str(c) in card and f"{100 * acc:.2f} %" in card
    assert f"{sum(params):,} parameters" in card
    assert f"**{100 * meta['test_accuracy']:.2f} %**" in card


@real_data
def test_features_model_is_the_first_member_alone(
    ensemble: Path, members: list[Path], real_data_root: Path
) -> None:
    from imgcls.deploy.classifier import read_metadata
    from imgcls.deploy.onnx_weights import float_initializers

    images, _ = real_test_images("mnist", real_data_root, 8)
    model_out = run_onnx(ensemble / "model.onnx", images)
    feats = run_onnx(ensemble / "model.features.onnx", images)
    # member 0's own answer, not the ensemble's: a client takes that from model.onnx
    assert np.abs(feats[1] - member_probs(members[0], images)).max() <= 1e-5
    assert np.abs(feats[1] - model_out[1]).max() > 1e-2
    fmeta = read_metadata(ensemble / "model.features.onnx")
    assert fmeta["answer_of"] == "member 0"
    parity = json.loads((ensemble / "parity.json").read_text())["features"]
    assert parity["answer_of"] == "member 0" and parity["top1_agreement_with_fp32"] == 1.0
    assert parity["max_abs_logit_diff_vs_fp32"] <= 1e-4
    # the first map: member 0's first conv + ReLU, by hand
    model = load_classifier(members[0])
    x = normalize(images, model.hparams.mean, model.hparams.std)
    with torch.inference_mode():
        fmap0 = torch.relu(model.net.features[0](x)).numpy()
    assert np.abs(feats[2] - fmap0).max() <= 1e-4
    assert [m["label"] for m in fmeta["feature_maps"]][0] == "members.0.features.0 + ReLU"
    # the other members' weights are not carried twice (a few floats more: mean and std)
    member0 = sum(p.numel() for p in model.net.parameters())
    carried = sum(a.size for a in float_initializers(ensemble / "model.features.onnx").values())
    whole = sum(a.size for a in float_initializers(ensemble / "model.onnx").values())
    assert member0 <= carried <= member0 + 8 < whole


@real_data
def test_served_features_of_an_ensemble_answer_as_predict(
    ensemble: Path, real_data_root: Path
) -> None:
    """``/features`` of an ensemble: the ensemble's answer (as ``/predict``), member 0's maps."""
    import asyncio

    import httpx

    from imgcls.deploy.serve_routes import build_app
    from imgcls.deploy.serve_settings import ServeOptions
    from imgcls.deploy.serve_workers import make_service

    images, _ = real_test_images("mnist", real_data_root, 4)
    svc = make_service(
        ServeOptions(
            model=ensemble / "model.onnx", features=ensemble / "model.features.onnx", device="cpu"
        )
    )
    _, expected = run_onnx(ensemble / "model.onnx", images)
    body = {"pixels": (images.numpy()[:, 0] / 255).tolist()}

    async def go() -> list[dict[str, Any]]:
        transport = httpx.ASGITransport(app=build_app(svc))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            out = []
            for k in range(len(images)):
                one = {"pixels": body["pixels"][k]}
                r = await c.post("/features", json=one)
                assert r.status_code == 200, r.text
                out.append(r.json())
            return out

    answers = asyncio.run(go())
    for k, a in enumerate(answers):
        assert np.abs(np.asarray(a["probabilities"]) - expected[k]).max() <= 1e-5
        assert a["label"] == int(expected[k].argmax())
        assert a["maps"][0]["label"] == "members.0.features.0 + ReLU"


@real_data
def test_hflip_tta_inside_the_graph(real_fashion_root: Path, tmp_path: Path) -> None:
    a = make_checkpoint(tmp_path / "a.ckpt", "mlp", {"hidden": [16]}, dataset="fashion_mnist")
    out = tmp_path / "tta"
    result = export_ensemble(
        [a], out, tta=["hflip"], data_dir=real_fashion_root, parity_subset=100, log=quiet
    )
    assert result.metadata["ensemble"]["views"] == ["identity", "hflip"]
    assert result.metadata["net"] == "ensemble of 1"
    images, _ = real_test_images("fashion_mnist", real_fashion_root, 200)
    _, probs = run_onnx(out / "model.onnx", images)
    expected = (member_probs(a, images) + member_probs(a, images, hflip=True)) / 2
    assert np.abs(probs - expected).max() <= 1e-5
    assert np.abs(probs - member_probs(a, images)).max() > 1e-3  # the flip counts


def test_members_must_share_data_and_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digits = make_checkpoint(tmp_path / "digits.ckpt", dataset="mnist")
    fashion = make_checkpoint(tmp_path / "fashion.ckpt", dataset="fashion_mnist")
    out = tmp_path / "o"
    argv = ["export", "--ckpt", str(digits), "--ckpt", str(fashion), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(fashion) in err and "data set is fashion_mnist" in err and "mnist" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--tta", "hflip"], "--tta hflip: not for mnist"),
        (["--ckpt", "{digits}", "--int8"], "--int8 is not offered for an ensemble"),
        (["--ckpt", "{digits}"], "the same checkpoint as --ckpt"),
    ],
)
def test_refusals_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], words: str
) -> None:
    digits = make_checkpoint(tmp_path / "digits.ckpt", dataset="mnist")
    out = tmp_path / "o"
    extra = [a.format(digits=digits) for a in extra]
    assert main(["export", "--ckpt", str(digits), *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
    assert not out.exists()


# the page tests' browser (module-scoped; skips, or fails in CI, as they do where none is)
chromium, chromium_path = test_page.chromium, test_page.chromium_path


def test_combine_is_the_log_of_the_mean() -> None:
    lp = torch.log_softmax(torch.randn(3, 2, 5, 10, dtype=torch.float64), dim=-1)
    got = EnsembleNet.combine(lp).exp()
    assert torch.allclose(got, lp.exp().mean(dim=(0, 1)), atol=1e-12)
    # no log(0): a probability that underflows in every member still gives a finite logit
    lp[..., 0] = -1e4
    assert torch.isfinite(EnsembleNet.combine(lp)).all()
    with pytest.raises(ConfigError, match="unknown"):
        check_tta(["vflip"], "fashion_mnist")


@pytest.mark.browser
@pytest.mark.slow
def test_page_of_an_ensemble(
    chromium: Any, ensemble: Path, members: list[Path], tmp_path: Path
) -> None:
    """The static page of an ensemble: the averaged answer, and member 0's layers, whose
    dense units are member 0's own (its head gives its logits, not the ensemble's)."""
    from imgcls.deploy import site
    from tests.deploy.test_page import DIGITS, draw, wait_for_prediction

    out = tmp_path / "site"
    site.build_site(ensemble / "model.onnx", out, log=quiet)
    with Visit(chromium, out) as v:
        pg = v.page
        assert "ensemble of 3" in (pg.text_content("#title") or "")
        draw(pg, DIGITS[7])
        wait_for_prediction(pg)
        x = torch.tensor(pg.evaluate("window.imgclsPage.input()"), dtype=torch.uint8)
        x = x.reshape(1, 1, 28, 28)
        answer = pg.evaluate("window.imgclsPage.answers()")[0]["probabilities"]
        head = pg.evaluate("window.imgclsPage.units()")["members.0.head"]
        assert "first of the 3 members of an ensemble" in (pg.text_content(".layer-note") or "")
    _, probs = run_onnx(ensemble / "model.onnx", x)
    assert np.abs(np.asarray(answer) - probs[0]).max() <= 1e-4
    # not the feature model's own answer, which is member 0's alone
    assert np.abs(np.asarray(answer) - member_probs(members[0], x)[0]).max() > 1e-2
    assert json.loads((out / "metadata.json").read_text())["features_answer"] is False
    model = load_classifier(members[0])
    with torch.inference_mode():
        own = model.net(normalize(x, model.hparams.mean, model.hparams.std))[0].numpy()
    assert np.abs(np.asarray(head) - own).max() <= 1e-3
