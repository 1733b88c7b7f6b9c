"""The lecture's alternative loss, −Σ f(x_i)ᵀ y_i / ‖f(x_i)‖ ("works equally well"), as
``ImageClassifier(loss="cosine")``: its value, its scale invariance, a short run, configs."""

from __future__ import annotations

import math
import sys
from functools import partial

import pytest
import torch
import yaml

from imgcls.data import MNISTDataModule
from imgcls.errors import ConfigError
from imgcls.training.checkpoint_io import load_classifier
from imgcls.training.cli import ImgclsCLI
from imgcls.training.lightning_module import ImageClassifier, cosine_loss
from tests.helpers import CONFIGS_DIR
from tests.helpers.training import small_trainer


def test_cosine_loss_is_the_lecture_formula_on_hand_made_logits():
    logits = torch.tensor([[3.0, 4.0, 0.0], [1.0, -1.0, 1.0], [0.0, 0.0, -2.0]])
    y = torch.tensor([1, 2, 2])
    # f·y / ‖f‖: 4/5, 1/√3, −2/2; the loss is minus their mean.
    expected = -(4 / 5 + 1 / math.sqrt(3) + -1.0) / 3
    assert float(cosine_loss(logits, y)) == pytest.approx(expected, abs=1e-6)
    model = ImageClassifier(net="mlp", net_args={"hidden": [8]}, loss="cosine")
    assert float(model._loss(logits, y, 0.0)) == pytest.approx(expected, abs=1e-6)
    # A right answer pointing exactly along its one-hot vector scores the minimum, −1.
    assert float(cosine_loss(torch.tensor([[0.0, 7.0]]), torch.tensor([1]))) == -1.0


def test_cosine_loss_gradient_is_orthogonal_to_the_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 10, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 10, (16,), generator=g)
    cosine_loss(logits, y).backward()
    grad = logits.grad
    assert grad is not None and float(grad.abs().max()) > 1e-3  # not trivially zero
    # Scale invariance: L(c·f) = L(f), so d/dc at c = 1, Σ_j f_j ∂L/∂f_j, vanishes per sample.
    dots = (grad * logits.detach()).sum(dim=1)
    assert float(dots.abs().max()) < 1e-12
    assert float(cosine_loss(3.0 * logits.detach(), y)) == pytest.approx(
        float(cosine_loss(logits.detach(), y)), abs=1e-12
    )


def test_short_run_with_the_cosine_loss_learns(tiny_data, tmp_path):
    model = ImageClassifier(
        net="mlp",
        net_args={"hidden": [32]},
        loss="cosine",
        optimizer=partial(torch.optim.Adam, lr=0.003),
    )
    dm = MNISTDataModule(data_dir=str(tiny_data), val_size=100, batch_size=50)
    trainer = small_trainer(tmp_path, max_epochs=3, enable_checkpointing=False)
    before = trainer.validate(model, dm, verbose=False)[0]
    trainer.fit(model, dm)
    after = trainer.validate(model, dm, verbose=False)[0]
    # val/loss is the cosine loss too (in [−1, 1]; cross-entropy is never negative).
    assert -1.0 <= after["val/loss"] < before["val/loss"] - 0.2
    assert after["val/loss"] < 0
    assert after["val/acc"] > 0.5  # chance is 0.1 on the ten learnable fake digits
    # The checkpoint records the loss; one from before the option (no key) loads as before.
    trainer.save_checkpoint(tmp_path / "cosine.ckpt")
    assert load_classifier(tmp_path / "cosine.ckpt").hparams["loss"] == "cosine"
    ckpt = torch.load(tmp_path / "cosine.ckpt", weights_only=True)
    del ckpt["hyper_parameters"]["loss"]
    torch.save(ckpt, tmp_path / "old.ckpt")
    assert load_classifier(tmp_path / "old.ckpt").hparams["loss"] == "cross_entropy"


def test_old_hparams_without_loss_build_a_cross_entropy_model():
    hp = dict(ImageClassifier(net="mlp", net_args={"hidden": [8]}).hparams)
    del hp["loss"]
    assert ImageClassifier(**hp).hparams["loss"] == "cross_entropy"


def test_label_smoothing_with_the_cosine_loss_is_a_config_error():
    with pytest.raises(ConfigError, match="label_smoothing=0.1 needs loss cross_entropy"):
        ImageClassifier(loss="cosine", label_smoothing=0.1)
    with pytest.raises(ConfigError, match="loss must be one of"):
        ImageClassifier(loss="hinge")  # type: ignore[arg-type]
    ImageClassifier(loss="cosine", label_smoothing=0.0)  # fine


def test_cli_accepts_model_loss_cosine(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["imgcls"])
    with pytest.raises(SystemExit) as e:
        ImgclsCLI(
            args=[
                "fit",
                "--config",
                str(CONFIGS_DIR / "model/mlp32.yaml"),
                "--model.loss",
                "cosine",
                "--print_config",
            ]
        )
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    assert "loss: cosine" in out and yaml.safe_load(out)["model"]["loss"] == "cosine"
