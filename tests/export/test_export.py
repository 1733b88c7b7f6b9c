"""Tests of the export stage (``imgcls.export``, ``imgcls export``, ``imgcls evaluate-onnx``).

Every registered net is exported from a short-trained real checkpoint and checked on a test
subset; one export of the session's trained LeNet-5 runs the full 10,000-image gate (with
fp16) through the command, and the metadata, dynamic batch and fp16 tests read it. The
bad-input tests check that nothing is written, and that a good export is replaced only by
one that passed the gate.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import imgcls.export.pipeline as export_mod
from imgcls.__main__ import main
from imgcls.data import get_datamodule
from imgcls.data.transforms import normalize
from imgcls.deploy.classifier import OnnxClassifier, read_metadata
from imgcls.errors import ExportError, GateError
from imgcls.export import default_export_dir, export_checkpoint
from imgcls.export.graph import to_onnx
from imgcls.models import create_model, list_models
from imgcls.training.checkpoint_io import CheckpointError, load_checkpoint, load_classifier
from imgcls.training.lightning_module import ImageClassifier
from tests.helpers import run_imgcls

real_data = pytest.mark.real_data
SUBSET = 500  # parity images for the per-net exports


def quiet(_: str) -> None:
    pass


def onnx_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.onnx"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def torch_logits(ckpt: Path, images: torch.Tensor) -> np.ndarray:
    """Independent reference: the checkpoint's model on normalised uint8 images."""
    model = load_classifier(ckpt)
    with torch.inference_mode():
        return model(normalize(images, model.hparams.mean, model.hparams.std)).numpy()


@pytest.fixture(scope="module")
def test_images(real_data_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    dm = get_datamodule("mnist", data_dir=str(real_data_root))
    dm.setup("test")
    assert dm.test_set is not None
    return dm.test_set.images, dm.test_set.labels


@pytest.fixture(scope="module")
def net_ckpts(real_data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real Lightning checkpoint of every registered net, after 3 training steps on real MNIST."""
    out = tmp_path_factory.mktemp("nets")
    dm = get_datamodule(
        "mnist", data_dir=str(real_data_root), batch_size=64, val_size=1000, train_subset=192
    )
    ckpts = {}
    for name in list_models():
        L.seed_everything(0, verbose=False)
        model = ImageClassifier(net=name)
        trainer = L.Trainer(
            max_steps=3,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        trainer.fit(model, datamodule=dm)
        ckpts[name] = out / f"{name}.ckpt"
        trainer.save_checkpoint(ckpts[name])
    return ckpts


@pytest.fixture(scope="module")
def full_export(
    trained_ckpt: Path, real_data_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """``imgcls export`` of the trained LeNet-5 with fp16, gated on the full test set
    (a subprocess)."""
    out = tmp_path_factory.mktemp("full") / "export" / "lenet5"
    proc = run_imgcls(
        "export",
        "--ckpt",
        str(trained_ckpt),
        "--out",
        str(out),
        "--fp16",
        "--json",
        "--data_dir",
        str(real_data_root),
        cwd=out.parents[1],
    )
    summary = json.loads(proc.stdout)
    assert summary["out_dir"] == str(out) and summary["n_images"] == 10000
    return out


# ----------------------------------------------------------------------------- every net
@real_data
@pytest.mark.parametrize("net", list_models())
def test_every_net_exports_and_passes_parity(
    net: str,
    net_ckpts: dict[str, Path],
    real_data_root: Path,
    test_images: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
) -> None:
    out = tmp_path / net
    result = export_checkpoint(
        net_ckpts[net], out, data_dir=real_data_root, parity_subset=SUBSET, log=quiet
    )
    features = [] if net == "mlp" else ["model.features.onnx"]  # the feature maps need a conv
    files = ["README.md", "metadata.json", "model.onnx", "parity.json", *features]
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    assert result.out_dir == out
    model = onnx.load(out / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["pixels"]
    assert [o.name for o in model.graph.output] == ["logits", "probabilities"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # batch axis symbolic
    assert {o.domain: o.version for o in model.opset_import}[""] == export_mod.OPSET

    parity = json.loads((out / "parity.json").read_text())
    fp32 = parity["fp32"]
    assert parity["n_images"] == SUBSET and not parity["full_test_set"]
    assert fp32["max_abs_logit_diff"] <= 1e-4 and fp32["top1_agreement"] == 1.0
    assert fp32["torch_accuracy"] == fp32["onnx_accuracy"]

    # Independently of the gate: raw onnxruntime on pixels/255 against the checkpoint's model.
    images, labels = test_images[0][:SUBSET], test_images[1][:SUBSET]
    ref = torch_logits(net_ckpts[net], images)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"pixels": images.numpy().astype(np.float32) / 255})[0]
    assert np.abs(got - ref).max() <= 1e-4
    assert fp32["torch_accuracy"] == pytest.approx(float((ref.argmax(1) == labels.numpy()).mean()))
    meta = json.loads((out / "metadata.json").read_text())
    assert (
        meta["net"] == net and meta["checkpoint"]["val_acc"] is None
    )  # no ModelCheckpoint in this run
    assert meta["test_accuracy"] == fp32["onnx_accuracy"] and meta["test_images"] == SUBSET


# ----------------------------------------------------------------------------- the full gate
@real_data
def test_full_test_set_gate(
    full_export: Path,
    trained_ckpt: Path,
    test_images: tuple[torch.Tensor, torch.Tensor],
    real_data_root: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    parity = json.loads((full_export / "parity.json").read_text())
    fp32 = parity["fp32"]
    assert parity["passed"] and parity["full_test_set"] and parity["n_images"] == 10000
    assert 0 <= fp32["max_abs_logit_diff"] <= 1e-4
    assert fp32["top1_agreement"] == 1.0 and fp32["disagreements"] == 0
    assert fp32["torch_accuracy"] == fp32["onnx_accuracy"] > 0.75  # a trained model, not chance
    images, labels = test_images
    ref = torch_logits(trained_ckpt, images)
    assert fp32["torch_accuracy"] == pytest.approx(
        float((ref.argmax(1) == labels.numpy()).mean()), abs=0
    )

    # evaluate-onnx reads the IDX files itself and must agree with the gate's figure.
    rc = main(
        [
            "evaluate-onnx",
            "--model",
            str(full_export / "model.onnx"),
            "--data_dir",
            str(real_data_root),
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["n_images"] == 10000
    assert report["accuracy"] == pytest.approx(fp32["onnx_accuracy"], abs=0)


@real_data
def test_metadata_round_trip(full_export: Path, trained_ckpt: Path) -> None:
    meta = json.loads((full_export / "metadata.json").read_text())
    model = onnx.load(full_export / "model.onnx")
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props == meta
    assert read_metadata(full_export / "model.onnx") == meta  # the runtime reads the same
    ckpt = load_checkpoint(trained_ckpt)
    state = next(iter(ckpt["callbacks"].values()))
    import hashlib

    assert meta["checkpoint"]["sha256"] == hashlib.sha256(trained_ckpt.read_bytes()).hexdigest()
    assert meta["checkpoint"]["best_val_acc"] == pytest.approx(float(state["best_model_score"]))
    assert meta["checkpoint"]["val_acc"] == pytest.approx(
        float(state["best_model_score"])
    )  # best.ckpt
    hp = ckpt["hyper_parameters"]
    assert meta["net"] == hp["net"] == "lenet5" and meta["dataset"] == "mnist"
    assert meta["class_names"] == [str(i) for i in range(10)]
    assert meta["input"] == {
        "name": "pixels",
        "shape": ["batch", 1, 28, 28],
        "dtype": "float32",
        "range": [0.0, 1.0],
        "layout": "NCHW",
    }
    assert meta["normalization"] == "in_graph" and (meta["mean"], meta["std"]) == (
        hp["mean"],
        hp["std"],
    )
    assert (
        meta["opset"] == export_mod.OPSET == {o.domain: o.version for o in model.opset_import}[""]
    )
    assert (
        meta["versions"]["torch"] == torch.__version__
        and meta["versions"]["onnx"] == onnx.__version__
    )
    # the page's ledger: every layer as insight.cost counts it
    from imgcls.insight.cost import layer_costs
    from imgcls.models.registry import create_model

    table = layer_costs(create_model(meta["net"], **meta["net_args"]))
    assert [
        (e["name"], tuple(e["output_shape"]), e["params"], e["macs"]) for e in meta["layers"]
    ] == [(c.name, c.output_shape, c.params, c.macs) for c in table]
    parity = json.loads((full_export / "parity.json").read_text())
    assert meta["test_accuracy"] == parity["fp32"]["onnx_accuracy"] and meta["test_images"] == 10000
    half = {
        p.key: json.loads(p.value)
        for p in onnx.load(full_export / "model.fp16.onnx").metadata_props
    }
    assert half["precision"] == "fp16" and half["test_accuracy"] == parity["fp16"]["onnx_accuracy"]
    assert {k: v for k, v in half.items() if k not in ("precision", "test_accuracy")} == {
        k: v for k, v in meta.items() if k not in ("precision", "test_accuracy")
    }


@real_data
@pytest.mark.parametrize("batch", [1, 7, 256])
def test_dynamic_batch(
    full_export: Path,
    trained_ckpt: Path,
    test_images: tuple[torch.Tensor, torch.Tensor],
    batch: int,
) -> None:
    images = test_images[0][1000 : 1000 + batch]
    sess = ort.InferenceSession(str(full_export / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, probs = sess.run(None, {"pixels": images.numpy().astype(np.float32) / 255})
    assert logits.shape == probs.shape == (batch, 10)
    np.testing.assert_allclose(logits, torch_logits(trained_ckpt, images), atol=1e-4, rtol=0)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


@real_data
def test_fp16_model(full_export: Path, test_images: tuple[torch.Tensor, torch.Tensor]) -> None:
    half = onnx.load(full_export / "model.fp16.onnx")
    onnx.checker.check_model(half, full_check=True)
    f32 = onnx.TensorProto.FLOAT
    assert [v.type.tensor_type.elem_type for v in (*half.graph.input, *half.graph.output)] == [
        f32,
        f32,
        f32,
    ]
    kinds = {t.data_type for t in half.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in kinds and f32 not in kinds  # weights really are half
    parity = json.loads((full_export / "parity.json").read_text())["fp16"]
    assert parity["top1_agreement_with_fp32"] >= 0.999
    x = test_images[0][:2000].numpy()
    p32 = OnnxClassifier(full_export / "model.onnx", device="cpu").predict(x)[0]
    p16 = OnnxClassifier(full_export / "model.fp16.onnx", device="cpu").predict(x)[0]
    assert (p16 == p32).mean() >= 0.999


# ----------------------------------------------------------------------------- gates that fail
@real_data
def test_failed_parity_gate_keeps_previous_export(
    trained_ckpt: Path, real_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "export" / "run"
    export_checkpoint(trained_ckpt, out, data_dir=real_data_root, parity_subset=200, log=quiet)
    before = snapshot(out)

    real = export_mod.reference_logits
    monkeypatch.setattr(
        export_mod, "reference_logits", lambda *a, **k: real(*a, **k) + 1e-3
    )  # a wrong model
    with pytest.raises(GateError, match=r"fp32 parity gate failed: max \|Δlogit\| 0.001"):
        export_checkpoint(trained_ckpt, out, data_dir=real_data_root, parity_subset=200, log=quiet)
    assert snapshot(out) == before
    assert [p.name for p in out.parent.iterdir()] == ["run"]  # no temp folder left behind
    monkeypatch.undo()

    # A changed checkpoint that passes replaces the export as a whole.
    ckpt = load_checkpoint(trained_ckpt)
    key = next(k for k in ckpt["state_dict"] if k.endswith("head.bias"))
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 0.5
    if (
        "imgcls_digest" in ckpt
    ):  # the checkpoint's integrity digest must describe the edited weights
        from imgcls.training.checkpoint_io import state_digest

        ckpt["imgcls_digest"] = state_digest(ckpt["state_dict"])
    changed = tmp_path / "changed.ckpt"
    torch.save(ckpt, changed)
    export_checkpoint(changed, out, data_dir=real_data_root, parity_subset=200, log=quiet)
    after = snapshot(out)
    assert after.keys() == before.keys() and after["model.onnx"] != before["model.onnx"]
    assert json.loads(after["metadata.json"])["checkpoint"]["path"] == str(changed)
    assert [p.name for p in out.parent.iterdir()] == ["run"]


@real_data
def test_failed_fp16_gate_keeps_previous_export(
    trained_ckpt: Path, real_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    export_checkpoint(trained_ckpt, out, data_dir=real_data_root, parity_subset=300, log=quiet)
    before = snapshot(out)
    torch.manual_seed(0)
    other = to_onnx(
        create_model("lenet5").eval(), 0.1307, 0.3081, (1, 28, 28)
    )  # untrained: disagrees
    real = export_mod.to_fp16

    def wrong_fp16(
        proto: onnx.ModelProto,
    ) -> onnx.ModelProto:  # converts another model, metadata kept
        other.metadata_props.extend(proto.metadata_props)
        return real(other)

    monkeypatch.setattr(export_mod, "to_fp16", wrong_fp16)
    with pytest.raises(GateError, match="fp16 parity gate failed: top-1 agreement with fp32"):
        export_checkpoint(
            trained_ckpt, out, fp16=True, data_dir=real_data_root, parity_subset=300, log=quiet
        )
    assert snapshot(out) == before and [p.name for p in tmp_path.iterdir()] == ["run"]


@real_data
def test_checker_failure_writes_nothing(
    trained_ckpt: Path, real_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def reject(*args: object, **kwargs: object) -> None:
        raise onnx.checker.ValidationError("node 0 is broken")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    with pytest.raises(GateError, match="onnx.checker gate failed: node 0 is broken"):
        export_checkpoint(
            trained_ckpt, tmp_path / "out", data_dir=real_data_root, parity_subset=50, log=quiet
        )
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- bad checkpoints
def _bad_checkpoints(tmp_path: Path, trained_ckpt: Path) -> dict[str, Path]:
    truncated = tmp_path / "truncated.ckpt"
    data = trained_ckpt.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    return {
        "missing": tmp_path / "missing.ckpt",
        "truncated": truncated,
        "foreign": foreign,
        "text": text,
    }


@real_data
@pytest.mark.parametrize("case", ["missing", "truncated", "foreign", "text"])
def test_bad_checkpoint_is_an_error_naming_it(
    case: str, trained_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _bad_checkpoints(tmp_path, trained_ckpt)[case]
    out = tmp_path / "export" / "x"
    with pytest.raises(CheckpointError, match=str(path)):
        export_checkpoint(path, out, log=quiet)
    rc = main(["export", "--ckpt", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("imgcls: error: ") and str(path) in err
    assert not out.parent.exists() and onnx_files(tmp_path) == []


def test_out_folder_with_foreign_files_is_refused(tmp_path: Path, trained_ckpt: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "README.md").write_text("keep me")
    with pytest.raises(ExportError, match="not part of an imgcls export"):
        export_checkpoint(trained_ckpt, out, log=quiet)
    assert [p.name for p in out.iterdir()] == ["README.md"]


def test_which_goes_with_a_folder_only(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "a.ckpt").write_bytes(b"x")
    assert main(["export", "--ckpt", str(tmp_path / "a.ckpt"), "--which", "last"]) == 2
    assert "--which picks a checkpoint of a folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- where things go
def test_default_export_dir(tmp_path: Path) -> None:
    ck = tmp_path / "runs" / "mnist-lenet5" / "version_3" / "checkpoints"
    assert default_export_dir(ck / "best.ckpt", "mnist", "lenet5") == Path(
        "export/mnist-lenet5-version_3"
    )
    assert default_export_dir(ck / "last.ckpt", "mnist", "lenet5") == Path(
        "export/mnist-lenet5-version_3-last"
    )
    assert default_export_dir(tmp_path / "model.ckpt", "fashion_mnist", "mlp") == Path(
        "export/fashion_mnist-mlp-model"
    )


@real_data
def test_export_command_defaults_to_export_run_name(
    trained_run: Path,
    real_data_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    rc = main(
        [
            "export",
            "--run_dir",
            str(trained_run.parent),
            "--which",
            "last",
            "--data_dir",
            str(real_data_root),
            "--parity_subset",
            "100",
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    expected = Path("export") / f"{trained_run.parent.name}-{trained_run.name}-last"
    assert rc == 0 and summary["out_dir"] == str(expected)
    # without --json: one line a person reads, naming the model file
    argv = ["export", "--run_dir", str(trained_run.parent), "--parity_subset", "100"]
    assert main([*argv, "--data_dir", str(real_data_root)]) == 0
    out = capsys.readouterr().out
    model = Path("export") / f"{trained_run.parent.name}-{trained_run.name}" / "model.onnx"
    assert out.startswith(f"[imgcls] ONNX model: {model} (test accuracy ") and out.count("\n") == 1
    assert (tmp_path / expected / "model.onnx").is_file()
    meta = json.loads((tmp_path / expected / "metadata.json").read_text())
    assert Path(meta["checkpoint"]["path"]).name == "last.ckpt"
