"""The NaN/inf guard of training: no host read of the loss on most steps, yet a NaN run stops
naming its window of steps before any checkpoint holds NaN weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from imgcls.data import MNISTDataModule
from imgcls.training.checkpoint_io import load_checkpoint
from imgcls.training.lightning_module import ImageClassifier, NonFiniteLossError
from tests.helpers.training import PoisonAt, small_trainer


def _data(root: Path) -> MNISTDataModule:
    return MNISTDataModule(data_dir=str(root), val_size=100, batch_size=50)  # 10 steps an epoch


def _all_finite(path: Path) -> bool:
    state = load_checkpoint(path)["state_dict"]  # load_checkpoint refuses NaN weights itself
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_nan_off_the_cadence_stops_at_the_next_check_naming_the_window(tiny_data, tmp_path):
    ckpt = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="val/acc", mode="max", filename="best", save_last=True
    )
    # Checks after steps 3, 7, 11, 15 (cadence 4) and at each epoch's end; the NaN comes at 13.
    trainer = small_trainer(
        tmp_path, max_epochs=3, log_every_n_steps=4, callbacks=[ckpt, PoisonAt(13)]
    )
    with pytest.raises(NonFiniteLossError, match=r"global steps 12\.\.15 \(epoch 1"):
        trainer.fit(ImageClassifier(), _data(tiny_data))
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["best.ckpt", "last.ckpt"]
    for name in files:
        ckpt_dict = load_checkpoint(tmp_path / "ckpt" / name)
        assert ckpt_dict["global_step"] == 10  # written at the end of epoch 0, never after
        assert _all_finite(tmp_path / "ckpt" / name)


def test_nan_is_caught_before_a_checkpoint_between_two_checks(tiny_data, tmp_path):
    # A checkpoint every 5 steps, the logger's cadence far away (50): the save itself checks.
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=5, save_top_k=-1)
    trainer = small_trainer(tmp_path, limit_val_batches=0, callbacks=[ckpt, PoisonAt(6)])
    with pytest.raises(NonFiniteLossError, match=r"global steps 5\.\.9 "):
        trainer.fit(ImageClassifier(), _data(tiny_data))
    files = list((tmp_path / "ckpt").iterdir())
    assert [p.name for p in files] == ["epoch=0-step=5.ckpt"]
    assert _all_finite(files[0])


def test_nan_after_the_last_check_of_an_epoch_stops_at_its_end(tiny_data, tmp_path):
    trainer = small_trainer(
        tmp_path, limit_val_batches=0, enable_checkpointing=False, callbacks=[PoisonAt(9)]
    )
    with pytest.raises(NonFiniteLossError, match=r"global steps 0\.\.9 \(epoch 0"):
        trainer.fit(ImageClassifier(), _data(tiny_data))


def test_the_guard_reads_the_host_only_on_the_cadence(tiny_data, tmp_path, monkeypatch):
    """No `.item()`, `bool()` or `.tolist()` of a tensor inside a training step off the
    logger's cadence, and the guard's read happens on the cadence and at epoch ends only."""
    reads: dict[int, int] = {}
    in_step: list[int] = []
    checks: list[int] = []

    def counting(name: str):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, **kw):
            if in_step:
                reads[in_step[-1]] = reads.get(in_step[-1], 0) + 1
            return original(self, *a, **kw)

        return wrapper

    for name in ("item", "__bool__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))

    class Counted(ImageClassifier):
        def training_step(self, batch, batch_idx):
            in_step.append(self.global_step)
            try:
                return super().training_step(batch, batch_idx)
            finally:
                in_step.pop()

        def check_finite(self) -> None:
            checks.append(self._last_step)
            super().check_finite()

    trainer = small_trainer(tmp_path, max_epochs=2, log_every_n_steps=4, enable_checkpointing=False)
    trainer.fit(Counted(), _data(tiny_data))
    assert trainer.global_step == 20
    cadence = [s for s in range(20) if (s + 1) % 4 == 0]
    assert sorted(reads) == cadence, reads  # steps 3, 7, 11, 15, 19: one read each
    assert all(n == 1 for n in reads.values()), reads
    # Checks with a step behind them: the cadence, validation and the end of each epoch.
    assert sorted(set(checks) - {-1}) == sorted({*cadence, 9, 19})
