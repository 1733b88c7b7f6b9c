"""``imgcls.insight.methods``: what produced a checkpoint, read back from the checkpoint and its
run's config.yaml, for a run of ``imgcls fit`` and for a run the report trains."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml

from imgcls.data.provision import get_spec
from imgcls.insight.methods import epoch_seconds_of_run, methods_of
from imgcls.insight.training import TrainSpec, config_of, train
from imgcls.training.cli import ImgclsCLI
from tests.helpers import FAST
from tests.helpers.training import plain_argv as _plain_argv  # noqa: F401  (autouse)


def _fit(tiny_data: Path, root: Path, *extra: str) -> Path:
    """A 2-epoch ``imgcls fit`` of LeNet-5 on the tiny data, in-process; its run folder."""
    ImgclsCLI(
        args=[
            "fit",
            *FAST,
            "--trainer.max_epochs",
            "2",
            "--trainer.default_root_dir",
            str(root),
            "--data.data_dir",
            str(tiny_data),
            "--data.val_size",
            "100",
            "--data.train_subset",
            "300",
            "--data.batch_size",
            "50",
            "--data.seed",
            "7",
            *extra,
        ]
    )
    run = root / "mnist-lenet5" / "version_0"
    assert (run / "config.yaml").is_file()
    return run


def test_methods_of_an_imgcls_fit_run(tiny_data: Path, tmp_path: Path) -> None:
    run = _fit(tiny_data, tmp_path / "runs")
    config = yaml.safe_load((run / "config.yaml").read_text())
    data_args = config["data"]["init_args"]
    assert (data_args["train_subset"], data_args["val_size"], data_args["seed"]) == (300, 100, 7)
    total = get_spec("mnist").files[0].count  # 600 with the tiny data

    best = run / "checkpoints" / "best.ckpt"
    last = run / "checkpoints" / "last.ckpt"
    best_epoch = torch.load(best, map_location="cpu", weights_only=True)["epoch"] + 1
    last_ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert last_ckpt["epoch"] == 1  # 0-based: the second epoch

    m = methods_of(best)
    assert m["data"] == "MNIST"
    assert m["train_images"] == "300" and m["n_train"] == 300  # the subset, not total - val
    assert m["validation"] == f"100 of the {total:,}, seed 7" and m["n_val"] == 100
    assert m["net"] == "lenet5"
    assert m["loss"] == "cross_entropy"
    # defaults.yaml: Adam lr 0.001 (every other argument equals torch's default and is dropped)
    assert config["model"]["optimizer"]["class_path"] == "torch.optim.Adam"
    assert config["model"]["optimizer"]["init_args"]["lr"] == 0.001
    assert m["optimizer"] == "Adam(lr=0.001)"
    sched = config["model"]["scheduler"]["init_args"]
    assert (sched["max_lr"], sched["pct_start"]) == (0.005, 0.25)
    assert m["schedule"] == "OneCycleLR(max_lr=0.005, pct_start=0.25) per step"
    assert m["batch"] == "50"
    assert m["seed"] == config["seed_everything"] == 42
    assert m["epochs_done"] == best_epoch
    assert m["checkpoint"] == f"best.ckpt: best val/acc, epoch {best_epoch}"
    assert m["augmentation"] == "none"

    ml = methods_of(last)
    assert ml["epochs"].startswith("2") and ml["epochs_done"] == 2
    assert ml["global_step"] == last_ckpt["global_step"] == 12  # 300 / 50 = 6 steps x 2 epochs
    assert ml["epochs"] == "2 (12 steps)"
    assert ml["checkpoint"] == "last.ckpt (epoch 2)"

    # the epoch times of the same run, from its metrics.csv
    seconds = epoch_seconds_of_run(last)
    assert len(seconds) == 2 and all(s > 0 for s in seconds)


def test_a_fit_with_rotations_and_scalings_names_them(tiny_data: Path, tmp_path: Path) -> None:
    aug = ["--data.shift_augment", "2", "--data.rotate_augment", "10"]
    run = _fit(tiny_data, tmp_path / "runs", *aug, "--data.scale_augment", "0.1")
    m = methods_of(run / "checkpoints" / "last.ckpt")
    assert m["augmentation"] == "shift ±2 px, rotate ±10°, scale ±10%"


def test_methods_of_an_imgcls_fit_run_without_subset_counts_total_minus_val(
    tiny_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "r" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    spec = TrainSpec("mlp", {"hidden": [10]}, val_size=100, seed=3, batch_size=100)
    (run / "config.yaml").write_text(yaml.safe_dump(config_of(spec), sort_keys=False))
    ckpt = run / "checkpoints" / "last.ckpt"
    train(spec, tiny_data, checkpoint=ckpt)
    total = get_spec("mnist").files[0].count
    m = methods_of(ckpt)
    assert m["train_images"] == f"{total - 100:,}" and m["n_train"] == total - 100
    assert m["validation"] == f"100 of the {total:,}, seed 3"
    assert m["net"] == "mlp(hidden=[10])"
    assert m["optimizer"] == "Adam(lr=0.001)" and m["schedule"] == "none"


def _report_run(root: Path, name: str, spec: TrainSpec) -> Path:
    """The layout ``imgcls.insight.report.running._obtain`` gives a run it trains; the checkpoint
    path."""
    run = root / f"{name}-{spec.key()}" / "version_0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config_of(spec), sort_keys=False))
    return run / "checkpoints" / "last.ckpt"


def test_methods_of_a_run_the_report_trains(tiny_data: Path, tmp_path: Path) -> None:
    spec = TrainSpec(
        "mlp",
        {"hidden": [10]},
        train_subset=200,
        epochs=2,
        seed=1,
        batch_size=64,
        optimizer="torch.optim.Adadelta",
        optimizer_args={"lr": 1.0, "eps": 1e-6},
        scheduler="torch.optim.lr_scheduler.StepLR",
        scheduler_args={"step_size": 1, "gamma": 0.7},
    )
    ckpt = _report_run(tmp_path, "mlp-10", spec)
    result = train(spec, tiny_data, checkpoint=ckpt)
    assert result.epochs == 2
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["epoch"] == spec.epochs - 1  # like imgcls fit's: the last epoch run, 0-based
    steps = 2 * -(-200 // 64)  # 4 batches an epoch
    assert saved["global_step"] == steps

    m = methods_of(ckpt)
    assert m["data"] == "MNIST"
    assert m["train_images"] == "200"
    assert m["validation"] == "none" and m["n_val"] == 0
    assert m["net"] == "mlp(hidden=[10])"
    # eps 1e-6 equals torch.optim.Adadelta's own default, so _short_call drops it (only lr is
    # always stated); a run whose config.yaml has LightningCLI's 1e-8 shows eps=1e-08.
    assert m["optimizer"] == "Adadelta(lr=1.0)"
    assert m["schedule"] == "StepLR(step_size=1, gamma=0.7) per epoch"
    assert m["batch"] == "64"
    assert m["seed"] == 1
    assert m["epochs_done"] == 2
    assert m["epochs"] == f"2 ({steps} steps)"
    assert m["checkpoint"] == "last.ckpt (epoch 2)"
    assert epoch_seconds_of_run(ckpt) == []  # the report's runs keep no metrics.csv


def test_methods_of_a_report_run_in_steps(tiny_data: Path, tmp_path: Path) -> None:
    spec = TrainSpec("mlp", {"hidden": [10]}, train_subset=100, steps=5, batch_size=50)
    ckpt = _report_run(tmp_path, "overfit-100", spec)
    config = yaml.safe_load(ckpt.parent.parent.joinpath("config.yaml").read_text())
    assert config["trainer"] == {"max_epochs": -1, "max_steps": 5}
    result = train(spec, tiny_data, checkpoint=ckpt)
    assert result.epochs == 3  # 2 steps an epoch: epochs 0, 1 and the first step of 2
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 5
    m = methods_of(ckpt)
    assert m["global_step"] == 5
    assert "(5 steps)" in m["epochs"]
    assert m["epochs_done"] == saved["epoch"] + 1
    assert m["optimizer"] == "Adam(lr=0.001)" and m["schedule"] == "none"


def test_without_config_yaml_the_optimiser_is_not_recorded(tiny_data: Path, tmp_path: Path) -> None:
    spec = TrainSpec(
        "mlp",
        {"hidden": [10]},
        train_subset=100,
        batch_size=50,
        optimizer="torch.optim.SGD",
        optimizer_args={"lr": 0.1},
    )
    ckpt = _report_run(tmp_path, "x", spec)
    train(spec, tiny_data, checkpoint=ckpt)
    with_config = methods_of(ckpt)
    assert with_config["optimizer"] == "SGD(lr=0.1)"
    alone = tmp_path / "alone" / "model.ckpt"  # no run folder, no config.yaml
    alone.parent.mkdir()
    shutil.copy(ckpt, alone)
    m = methods_of(alone)
    assert m["optimizer"] == "not recorded"
    assert m["schedule"] == "none"
    assert m["seed"] is None
    assert m["checkpoint"] == "model.ckpt (epoch 1)"
    # the same file in a run folder whose config.yaml went missing
    ckpt.parent.parent.joinpath("config.yaml").unlink()
    assert methods_of(ckpt)["optimizer"] == "not recorded"


def _metrics_run(tmp_path: Path, text: str | None) -> Path:
    run = tmp_path / "exp" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    if text is not None:
        (run / "metrics.csv").write_text(text)
    return run / "checkpoints" / "last.ckpt"


def test_epoch_seconds_of_run_reads_metrics_csv(tmp_path: Path) -> None:
    ckpt = _metrics_run(
        tmp_path,
        "epoch,step,train/loss,time/train_epoch_s,val/acc\n"
        "0,9,0.5,,\n"
        "0,9,,1.5,0.9\n"
        "1,19,,2.5,0.95\n"
        "1,19,,2.25,\n"  # epoch 1 again (a resumed run): the last value wins
        "2,29,0.1,,\n"
        "2,29,,3.0,0.97\n",
    )
    assert epoch_seconds_of_run(ckpt) == [1.5, 2.25, 3.0]


def test_epoch_seconds_of_run_without_metrics(tmp_path: Path) -> None:
    assert epoch_seconds_of_run(_metrics_run(tmp_path, None)) == []
    # a metrics.csv without the column
    other = tmp_path / "other"
    other.mkdir()
    assert epoch_seconds_of_run(_metrics_run(other, "epoch,step,val/acc\n0,9,0.9\n")) == []
    # a checkpoint outside any run folder
    assert epoch_seconds_of_run(tmp_path / "loose.ckpt") == []
