"""The lectures' protocol: configs/lecture/protocol.yaml (for ``imgcls fit``) and the report's
``LECTURE_PROTOCOL`` say the same thing, and a fit without a validation split behaves."""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from imgcls.insight.report.catalogue import (
    EXPERIMENTS,
    LECTURE_EPOCHS,
    LECTURE_PROTOCOL,
    lecture_spec,
)
from imgcls.insight.training import config_of
from imgcls.training.cli import ImgclsCLI
from tests.helpers import FAST, ROOT
from tests.helpers.training import plain_argv as _plain_argv  # noqa: F401  (autouse)

PROTOCOL = ROOT / "configs" / "lecture" / "protocol.yaml"


def test_protocol_yaml_and_report_protocol_agree() -> None:
    cfg = yaml.safe_load(PROTOCOL.read_text())
    model, data = cfg["model"], cfg["data"]["init_args"]
    assert model["net"] == "convnet"
    assert model["optimizer"] == {
        "class_path": LECTURE_PROTOCOL["optimizer"],
        "init_args": LECTURE_PROTOCOL["optimizer_args"],
    }
    assert LECTURE_PROTOCOL["optimizer"] == "torch.optim.Adadelta"
    assert LECTURE_PROTOCOL["optimizer_args"] == {"lr": 1.0, "eps": 1e-6}
    assert model["scheduler"] == {
        "class_path": LECTURE_PROTOCOL["scheduler"],
        "init_args": LECTURE_PROTOCOL["scheduler_args"],
    }
    assert LECTURE_PROTOCOL["scheduler"] == "torch.optim.lr_scheduler.StepLR"
    assert LECTURE_PROTOCOL["scheduler_args"] == {"step_size": 1, "gamma": 0.7}
    assert model["scheduler_interval"] == "epoch"
    assert data["batch_size"] == LECTURE_PROTOCOL["batch_size"] == 64
    assert data["val_size"] == 0
    assert cfg["seed_everything"] == LECTURE_PROTOCOL["seed"] == 1
    assert cfg["trainer"]["max_epochs"] == LECTURE_EPOCHS == 14
    assert cfg["data"]["class_path"] == "imgcls.data.MNISTDataModule"

    # the report's own config.yaml for the lecture CNN says the same, key by key
    ours = config_of(lecture_spec("convnet"))
    assert ours["seed_everything"] == cfg["seed_everything"]
    for key in ("net", "optimizer", "scheduler", "scheduler_interval"):
        assert ours["model"][key] == model[key], key
    assert ours["data"]["class_path"] == cfg["data"]["class_path"]
    assert {k: ours["data"]["init_args"][k] for k in data} == data
    assert ours["trainer"]["max_epochs"] == cfg["trainer"]["max_epochs"]


def _printed(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    with pytest.raises(SystemExit) as e:
        ImgclsCLI(args=["fit", *args, "--print_config"])
    assert e.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_protocol_yaml_through_lightningcli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = _printed(capsys, "--config", str(PROTOCOL))
    opt = cfg["model"]["optimizer"]
    assert opt["class_path"] == "torch.optim.Adadelta"
    assert opt["init_args"]["lr"] == 1.0 and opt["init_args"]["eps"] == 1e-6  # not 1e-8
    sched = cfg["model"]["scheduler"]
    assert sched["class_path"] == "torch.optim.lr_scheduler.StepLR"
    assert sched["init_args"]["gamma"] == 0.7 and sched["init_args"]["step_size"] == 1
    assert cfg["model"]["net"] == "convnet"
    assert cfg["data"]["init_args"]["batch_size"] == 64
    assert cfg["data"]["init_args"]["val_size"] == 0
    assert cfg["trainer"]["max_epochs"] == 14 and cfg["seed_everything"] == 1

    # the report's config_of(lecture_spec("convnet")), read by the same parser, agrees
    mine = tmp_path / "report.yaml"
    mine.write_text(yaml.safe_dump(config_of(lecture_spec("convnet")), sort_keys=False))
    again = _printed(capsys, "--config", str(mine))
    assert again["model"]["optimizer"] == opt
    assert again["model"]["scheduler"] == sched
    assert again["data"]["init_args"]["batch_size"] == 64
    assert again["data"]["init_args"]["val_size"] == 0
    assert again["data"]["init_args"]["seed"] == 1
    assert again["trainer"]["max_epochs"] == 14 and again["seed_everything"] == 1


def test_fit_without_validation_keeps_best_as_last(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ImgclsCLI(
            args=[
                "fit",
                *FAST,
                "--model.net",
                "lenet5_small",
                "--trainer.max_epochs",
                "1",
                "--trainer.default_root_dir",
                str(root),
                "--data.data_dir",
                str(tiny_data),
                "--data.val_size",
                "0",
                "--data.train_subset",
                "200",
                "--data.batch_size",
                "50",
            ]
        )
    out = capsys.readouterr()
    text = out.out + out.err
    assert "no validation split: the latest epoch" in text
    assert "best checkpoint" in text and "(val/acc" not in text
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "monitored key" in m], messages
    assert "could not find the monitored key" not in text.lower()

    ckpts = root / "mnist-lenet5_small" / "version_0" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]
    best = torch.load(ckpts / "best.ckpt", map_location="cpu", weights_only=True)
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == last["epoch"] == 0
    assert best["global_step"] == last["global_step"] == 4
    for k, v in last["state_dict"].items():
        assert torch.equal(best["state_dict"][k], v), k


def test_every_lecture_experiment_uses_the_protocol() -> None:
    lectures = [e for e in EXPERIMENTS if e.study == "lectures"]
    assert {e.name for e in lectures} >= {"mlp-10", "mlp-32", "convnet", "fashion-convnet"}
    for e in lectures:
        for spec, which in ((e.full, "full"), (e.quick, "quick")):
            fields = asdict(spec)
            got = {k: fields[k] for k in LECTURE_PROTOCOL}
            assert got == LECTURE_PROTOCOL, (e.name, which)
            assert spec.val_size == 0 and spec.steps is None and spec.loss == "cross_entropy"
        assert e.full.epochs == LECTURE_EPOCHS and e.full.train_subset is None, e.name
        assert e.quick.epochs == 1 and e.quick.train_subset is not None, e.name
        # apart from subset and epochs, quick == full
        strip = {"train_subset": None, "epochs": 0}
        assert {**asdict(e.quick), **strip} == {**asdict(e.full), **strip}, e.name
