"""Training through the CLI and the LightningModule: real short runs on real MNIST, run
directories, resume, configs, bad input, NaN, W&B offline."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from imgcls import runs
from imgcls.data import FashionMNISTDataModule, MNISTDataModule
from imgcls.deploy.teach import run_curves
from imgcls.errors import CheckpointError, ConfigError
from imgcls.training.callbacks import DataCheck, Snapshots
from imgcls.training.checkpoint_io import load_checkpoint, load_classifier
from imgcls.training.cli import ImgclsCLI
from imgcls.training.curves import run_series
from imgcls.training.lightning_module import ImageClassifier, NonFiniteLossError
from tests.helpers import FAST, ROOT, run_imgcls
from tests.helpers.training import PoisonAt, small_trainer
from tests.helpers.training import plain_argv as _plain_argv  # noqa: F401  (autouse)

CONFIGS = ROOT / "configs"


def _metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


def _last(rows: list[dict[str, str]], key: str) -> float:
    return float([r[key] for r in rows if r.get(key)][-1])


NO_SCHED = ("--model.scheduler", "null")


def small_fit(cwd: Path, data_root: Path, *extra: str, config: str = "model/lenet5.yaml") -> None:
    run_imgcls(
        "fit",
        "--config",
        str(CONFIGS / config),
        *FAST,
        "--data.init_args.data_dir",
        str(data_root),
        "--data.init_args.train_subset",
        "600",
        "--data.init_args.val_size",
        "500",
        *extra,
        cwd=cwd,
    )


# ----------------------------------------------------------------------------- real training
@pytest.mark.real_data
def test_fit_then_test_learns_and_lays_out_the_run(trained_run, real_data_root, tmp_path):
    ckpts = sorted(p.name for p in (trained_run / "checkpoints").iterdir())
    assert ckpts == ["best.ckpt", "last.ckpt"]
    assert (trained_run / "config.yaml").is_file()
    rows = _metrics(trained_run)
    assert {r["epoch"] for r in rows if r.get("val/acc")} == {"0", "1"}
    assert _last(rows, "val/acc") > 0.9  # 6,000 images, 2 epochs: far above chance (0.1)
    train_acc = {
        r["epoch"]: float(r["train/acc"]) for r in rows if r.get("train/acc")
    }  # once an epoch
    assert set(train_acc) == {"0", "1"} and 0.5 < train_acc["0"] < train_acc["1"] < 1.0
    train_loss = {
        r["epoch"]: float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")
    }
    assert 0 < train_loss["1"] < train_loss["0"] < 2.3  # below chance's ln 10 and falling
    assert [int(r["step"]) for r in rows if r.get("train/loss")] == [
        49
    ]  # the logger's step (every 50)
    # the page's curves (torch-free) are the ones curves.png draws
    curves = run_curves(trained_run / "metrics.csv")
    series = run_series(trained_run / "metrics.csv")
    assert {k: (c["epochs"], c["values"]) for k, c in curves.items()} == {
        k: series[k] for k in ("train/loss", "val/loss", "train/acc", "val/acc")
    }
    # --snapshots.epochs "[0, 1, -1]": the weights before training and after each epoch, small
    snaps = {e: load_checkpoint(p) for e, p in runs.snapshots(trained_run).items()}
    assert sorted(snaps) == [0, 1, 2]
    last = load_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    assert [snaps[e]["epoch"] for e in (0, 1, 2)] == [0, 0, last["epoch"]] == [0, 0, 1]
    assert "optimizer_states" not in snaps[2]
    final, start = snaps[2]["state_dict"], snaps[0]["state_dict"]
    assert all(torch.equal(final[k], last["state_dict"][k]) for k in last["state_dict"])
    assert all(not torch.equal(start[k], final[k]) for k in final if k.endswith("weight"))
    assert not torch.equal(snaps[1]["state_dict"]["net.head.weight"], final["net.head.weight"])
    size = runs.snapshot_of(trained_run, 2).stat().st_size
    assert size < 0.5 * (trained_run / "checkpoints" / "last.ckpt").stat().st_size
    # a snapshot belongs to its run (evaluations and exports of it are named by it), and a fit
    # cannot resume from its weights alone: one line, and the run's files untouched
    assert runs.run_of(runs.snapshot_of(trained_run, 1)) == trained_run
    before = (trained_run / "metrics.csv").read_bytes()
    proc = run_imgcls(
        "fit",
        "--config",
        str(trained_run / "config.yaml"),
        "--ckpt_path",
        str(runs.snapshot_of(trained_run, 1)),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "holds weights only" in proc.stderr.strip().splitlines()[-1]
    assert (trained_run / "metrics.csv").read_bytes() == before
    # test: a copy of the run, so the shared fixture stays untouched
    run = tmp_path / "runs" / "mnist-lenet5" / "version_0"
    shutil.copytree(trained_run, run)
    run_imgcls(
        "test",
        "--config",
        str(CONFIGS / "model/lenet5.yaml"),
        *FAST,
        "--ckpt_path",
        "best",
        "--data.init_args.data_dir",
        str(real_data_root),
        cwd=tmp_path,
    )
    test_dir = run / "test" / "version_0"
    acc = _last(_metrics(test_dir), "test/acc")
    assert 0.9 < acc < 1.0
    assert _last(_metrics(test_dir), "test/n_images") == 10000
    cm = list(csv.reader((test_dir / "confusion_matrix.csv").read_text().splitlines()))
    counts = [[int(v) for v in row[1:]] for row in cm[1:]]
    assert sum(map(sum, counts)) == 10000
    assert sum(counts[i][i] for i in range(10)) / 10000 == pytest.approx(acc, abs=1e-4)


@pytest.mark.real_data
def test_new_run_never_overwrites_and_resume_continues(real_data_root, tmp_path):
    # No one-cycle schedule here: this test resumes with more epochs than the run was laid out for.
    snap = ("--snapshots.epochs", "[0, 1, -1]")
    small_fit(tmp_path, real_data_root, *NO_SCHED, *snap, "--trainer.max_epochs", "1")
    small_fit(tmp_path, real_data_root, *NO_SCHED, "--trainer.max_epochs", "1")
    exp = tmp_path / "runs" / "mnist-lenet5"
    assert sorted(p.name for p in exp.iterdir()) == ["version_0", "version_1"]
    config_before = (exp / "version_0" / "config.yaml").read_bytes()
    kept = {e: p.read_bytes() for e, p in runs.snapshots(exp / "version_0").items()}
    assert sorted(kept) == [0, 1] and not runs.snapshots(exp / "version_1")
    small_fit(
        tmp_path,
        real_data_root,
        *NO_SCHED,
        *snap,
        "--trainer.max_epochs",
        "3",
        "--ckpt_path",
        str(exp / "version_0"),
    )
    # the resume keeps the snapshots saved before, byte for byte, and adds the last epoch's
    after = runs.snapshots(exp / "version_0")
    assert sorted(after) == [0, 1, 3]
    assert all(after[e].read_bytes() == b for e, b in kept.items())
    final = load_checkpoint(exp / "version_0" / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.equal(load_checkpoint(after[3])["state_dict"][k], v) for k, v in final.items())
    assert sorted(p.name for p in exp.iterdir()) == ["version_0", "version_1"], "resumed in place"
    run = exp / "version_0"
    assert (run / "config.yaml").read_bytes() == config_before, "config.yaml never overwritten"
    assert (run / "config.resume-1.yaml").is_file()
    epochs = [r["epoch"] for r in _metrics(run) if r.get("val/acc")]
    assert epochs == ["0", "1", "2"], "epoch 0 kept, not repeated; 1 and 2 added"
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 2
    # `--ckpt_path last` picks the newest run that has a last.ckpt (version_1) and continues it.
    small_fit(
        tmp_path, real_data_root, *NO_SCHED, "--trainer.max_epochs", "2", "--ckpt_path", "last"
    )
    assert [r["epoch"] for r in _metrics(exp / "version_1") if r.get("val/acc")] == ["0", "1"]


@pytest.mark.real_data
def test_predict_writes_csv(trained_run, real_data_root, tmp_path):
    run = tmp_path / "runs" / "mnist-lenet5" / "version_0"
    shutil.copytree(trained_run, run)
    run_imgcls(
        "predict",
        "--config",
        str(CONFIGS / "model/lenet5.yaml"),
        *FAST,
        "--ckpt_path",
        str(run / "checkpoints" / "best.ckpt"),
        "--data.init_args.data_dir",
        str(real_data_root),
        cwd=tmp_path,
    )
    out = run / "predict" / "version_0" / "predictions.csv"  # evaluations live inside the run
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert len(rows) == 10000 and [int(r["index"]) for r in rows[:3]] == [0, 1, 2]
    acc = sum(r["pred"] == r["target"] for r in rows) / len(rows)
    assert acc > 0.85
    assert all(0.1 <= float(r["confidence"]) <= 1.0 for r in rows[:100])


def test_snapshot_epochs_that_are_not_epochs_are_refused() -> None:
    for bad in ([-2], [1.5], [True]):
        with pytest.raises(ConfigError, match="--snapshots.epochs"):
            Snapshots(epochs=bad)  # type: ignore[list-item]
    assert Snapshots(epochs=[5, 0, -1, 0]).epochs == [-1, 0, 5]


# ----------------------------------------------------------------------------- configs
# Every data x model file and every recipe: tests/training/test_configs.py.
@pytest.mark.parametrize(
    "preset",
    [
        "trainer/cpu.yaml",
        "trainer/ddp_cpu.yaml",
        "trainer/bf16_cpu.yaml",
        "logger/csv.yaml",
        "logger/wandb.yaml",
        "logger/tensorboard.yaml",
        "logger/all.yaml",
        "logger/mlflow.yaml",
        "callbacks/early_stopping.yaml",
        "callbacks/snapshots.yaml",
        "debug/profiler.yaml",
        "debug/overfit.yaml",
        "debug/fast.yaml",
    ],
)
def test_presets_instantiate(preset, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = ImgclsCLI(
        args=[
            "--config",
            str(CONFIGS / "model/lenet5.yaml"),
            "--config",
            str(CONFIGS / preset),
            "--data.init_args.data_dir",
            str(tiny_data),
            "--data.init_args.val_size",
            "100",
        ],
        run=False,
    )
    assert isinstance(cli.trainer, L.Trainer)
    kept = [c.epochs for c in cli.trainer.callbacks if isinstance(c, Snapshots)]  # type: ignore[attr-defined]
    assert kept == ([[-1, 0, 1, 2, 5]] if preset == "callbacks/snapshots.yaml" else [[]])


@pytest.mark.parametrize("preset", ["trainer/gpu.yaml", "trainer/multinode.yaml"])
def test_gpu_presets_parse(preset, capsys):
    with pytest.raises(SystemExit) as e:
        ImgclsCLI(
            args=[
                "fit",
                "--config",
                str(CONFIGS / "model/convnet.yaml"),
                "--config",
                str(CONFIGS / preset),
                "--print_config",
            ]
        )
    assert e.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["trainer"]["strategy"] == "ddp" and cfg["trainer"]["accelerator"] == "gpu"


def test_print_config_reruns_unchanged(tmp_path):
    first = run_imgcls(
        "fit", "--config", str(CONFIGS / "model/mlp32.yaml"), "--print_config", cwd=tmp_path
    ).stdout
    (tmp_path / "printed.yaml").write_text(first)
    second = run_imgcls(
        "fit", "--config", str(tmp_path / "printed.yaml"), "--print_config", cwd=tmp_path
    ).stdout
    assert first == second
    cfg = yaml.safe_load(first)
    assert (
        cfg["model"]["net_args"] == {"hidden": [32]}
        and cfg["model"]["optimizer"]["init_args"]["lr"] == 0.001
    )


def test_unknown_yaml_key_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (CONFIGS / "model/lenet5.yaml")
        .read_text()
        .replace("  net: lenet5", "  net: lenet5\n  learning_rate: 0.1")
    )
    proc = run_imgcls(
        "fit", "--config", str(bad), "--trainer.max_epochs", "0", cwd=tmp_path, check=False
    )
    assert proc.returncode != 0 and "learning_rate" in proc.stderr
    assert not (tmp_path / "runs").exists(), "nothing ran"


def test_unknown_net_lists_valid_names(tiny_data, tmp_path):
    proc = run_imgcls(
        "fit",
        "--config",
        str(CONFIGS / "model/lenet5.yaml"),
        "--model.net",
        "alexnet",
        "--data.init_args.data_dir",
        str(tiny_data),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    assert "alexnet" in proc.stderr and "lenet5_small" in proc.stderr and "convnet" in proc.stderr


# ----------------------------------------------------------------------------- module-level checks
def test_model_data_mismatch_fails_before_training(tiny_data, tmp_path):
    model = ImageClassifier(net="lenet5", num_classes=10, dataset="mnist")
    dm = FashionMNISTDataModule(data_dir=str(tiny_data), val_size=100)
    trainer = small_trainer(tmp_path, enable_checkpointing=False, callbacks=[DataCheck()])
    with pytest.raises(ConfigError, match="dataset: model 'mnist' vs data 'fashion_mnist'"):
        trainer.fit(model, dm)
    assert trainer.global_step == 0
    with pytest.raises(ConfigError, match="num_classes"):
        small_trainer(tmp_path, enable_checkpointing=False, callbacks=[DataCheck()]).fit(
            ImageClassifier(num_classes=5, class_names=list("abcde")),
            MNISTDataModule(data_dir=str(tiny_data), val_size=100),
        )


def test_checkpoint_of_another_dataset_is_refused(trained_ckpt, tmp_path):
    model = ImageClassifier(net="lenet5", dataset="fashion_mnist")
    with pytest.raises(CheckpointError, match="dataset: checkpoint 'mnist'"):
        model.on_load_checkpoint(load_checkpoint(trained_ckpt))


def test_nan_loss_stops_with_step_and_never_becomes_best(tiny_data, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    dm = MNISTDataModule(data_dir=str(tiny_data), val_size=100, batch_size=50)  # 10 steps an epoch
    ckpt = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="val/acc", mode="max", filename="best", save_last=True
    )
    trainer = small_trainer(tmp_path, max_epochs=3, callbacks=[ckpt, PoisonAt(13)])
    with pytest.raises(NonFiniteLossError, match=r"global steps 10\.\.19 \(epoch 1"):
        trainer.fit(ImageClassifier(), dm)
    best = load_checkpoint(tmp_path / "ckpt" / "best.ckpt")
    assert best["epoch"] == 0 and best["global_step"] == 10
    assert all(
        torch.isfinite(v).all() for v in best["state_dict"].values() if v.is_floating_point()
    )
    load_classifier(tmp_path / "ckpt" / "best.ckpt")  # loads: finite


def test_label_smoothing_and_onecycle_scheduler(tiny_data, tmp_path):
    from functools import partial

    model = ImageClassifier(
        net="lenet5_small",
        label_smoothing=0.1,
        scheduler_interval="step",
        optimizer=partial(torch.optim.SGD, lr=0.05),
        scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1),
    )
    trainer = small_trainer(tmp_path, max_epochs=2, enable_checkpointing=False)
    trainer.fit(model, MNISTDataModule(data_dir=str(tiny_data), val_size=100, batch_size=100))
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert (
        sched.total_steps == 100
    )  # 500 images / 100 per batch x 2 epochs = 10, raised to the floor of 100
    assert (
        0.004 < trainer.optimizers[0].param_groups[0]["lr"] < 0.1
    )  # warming up from max_lr/25 after 10 of 100 steps
    long = ImageClassifier(
        net="lenet5_small",
        optimizer=partial(torch.optim.SGD, lr=0.05),
        scheduler_interval="step",
        scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1),
    )
    trainer = small_trainer(
        tmp_path, max_epochs=25, enable_checkpointing=False, limit_val_batches=0
    )
    trainer.fit(long, MNISTDataModule(data_dir=str(tiny_data), val_size=100, batch_size=100))
    assert (
        trainer.lr_scheduler_configs[0].scheduler.total_steps == 125
    )  # 5 steps x 25 epochs, from the trainer
    assert trainer.optimizers[0].param_groups[0]["lr"] < 0.001  # annealed by the end


# ----------------------------------------------------------------------------- precision, W&B
@pytest.mark.real_data
def test_bf16_mixed_on_cpu(real_data_root, tmp_path):
    small_fit(
        tmp_path,
        real_data_root,
        "--config",
        str(CONFIGS / "trainer/bf16_cpu.yaml"),
        "--trainer.max_epochs",
        "2",
        "--data.init_args.train_subset",
        "3000",
    )
    run = tmp_path / "runs" / "mnist-lenet5" / "version_0"
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["precision"] == "bf16-mixed"
    assert _last(_metrics(run), "val/acc") > 0.75
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    assert state["net.features.0.weight"].dtype == torch.float32  # mixed: weights stay fp32


@pytest.mark.real_data
def test_wandb_offline_run_holds_the_metrics(real_data_root, tmp_path):
    from tests.helpers.wandb_offline import read_offline_run

    small_fit(
        tmp_path,
        real_data_root,
        "--config",
        str(CONFIGS / "logger/wandb.yaml"),
        "--trainer.max_epochs",
        "1",
    )
    run = tmp_path / "runs" / "mnist-lenet5" / "version_0"
    offline = next((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    logged = read_offline_run(offline)
    val = [h["val/acc"] for h in logged["history"] if "val/acc" in h]
    assert val and val[-1] == pytest.approx(_last(_metrics(run), "val/acc"), abs=1e-6)
    assert logged["summary"]["best_model_path"].endswith("checkpoints/best.ckpt")
    assert (
        "lenet5" in str(logged["config"].get("config", "")) and logged["config"]["net"] == "lenet5"
    )


def test_wandb_failure_to_start_does_not_kill_training(tiny_data, tmp_path, monkeypatch):
    import wandb

    from imgcls.training.loggers import WandbLogger

    def broken_init(*a, **kw):
        if kw.get("mode") == "disabled":
            return real_init(*a, **kw)
        raise RuntimeError("W&B backend unreachable")

    real_init = wandb.init
    monkeypatch.setattr(wandb, "init", broken_init)
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    trainer = small_trainer(
        tmp_path,
        logger=logger,
        enable_checkpointing=False,
        limit_train_batches=3,
        limit_val_batches=1,
    )
    with pytest.warns(UserWarning, match="W&B failed to start"):
        trainer.fit(ImageClassifier(), MNISTDataModule(data_dir=str(tiny_data), val_size=100))
    assert trainer.global_step == 3
    wandb.finish()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_fit_16_mixed(real_data_root, tmp_path):
    small_fit(
        tmp_path,
        real_data_root,
        "--trainer.accelerator",
        "gpu",
        "--trainer.devices",
        "1",
        "--trainer.precision",
        "16-mixed",
        "--trainer.max_epochs",
        "1",
    )
    assert _last(_metrics(tmp_path / "runs" / "mnist-lenet5" / "version_0"), "val/acc") > 0.5
