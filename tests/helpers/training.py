"""Tools of the training-side tests: a small CPU Trainer, a callback that poisons a weight, a
bare ``sys.argv`` for in-process LightningCLI (import ``plain_argv`` into a test module to make
it autouse there), and an untrained checkpoint of any net."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch


def small_trainer(tmp_path: Path, **kw) -> L.Trainer:
    base = {
        "default_root_dir": tmp_path,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "max_epochs": 1,
    }
    return L.Trainer(**{**base, **kw})


class PoisonAt(L.Callback):
    """Inject a NaN into the first weight at a given global step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    """In-process LightningCLI reads sys.argv too; give it a bare one, as a user's shell would."""
    monkeypatch.setattr(sys, "argv", ["imgcls"])


def make_checkpoint(
    path: Path, net: str = "mlp", net_args: dict | None = None, dataset: str = "mnist"
) -> Path:
    """An untrained imgcls checkpoint (state_dict + hyper_parameters).

    It is enough for load_classifier.
    """
    from imgcls.data import DATAMODULES
    from imgcls.training.lightning_module import ImageClassifier

    dm = DATAMODULES[dataset]
    torch.manual_seed(0)
    model = ImageClassifier(
        net=net,
        net_args=net_args or {},
        dataset=dataset,
        class_names=list(dm.class_names),
        mean=dm.mean,
        std=dm.std,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path
