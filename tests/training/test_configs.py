"""The YAML configs: every data file stacks with every model file, every recipe stands alone, and
each data x net pair gives exactly the hyper-parameters of the one-file config it replaced.

Nothing here trains or reads data: the CLI parses and instantiates (``run=False``) only, with
``data_dir`` an empty folder (instantiating an IDX DataModule reads no file) and the real data
sets' sizes, so that the configs' val_size of 5000 is checked as given; the folder data module
gets a few generated PNG files (it reads its classes and decodes its images when built).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import EMAWeightAveraging

from imgcls.data import FashionMNISTDataModule, ImageFolderDataModule, MNISTDataModule
from imgcls.data.datamodule import ImageDataModule
from imgcls.training.cli import ImgclsCLI
from imgcls.training.lightning_module import ImageClassifier
from tests.helpers import CONFIGS_DIR as CONFIGS
from tests.helpers.folders import stripes, write_folder_dataset

IDX_CLASSES = {"mnist": MNISTDataModule, "fashion_mnist": FashionMNISTDataModule}
DATA_CLASSES = {**IDX_CLASSES, "folder": ImageFolderDataModule}
DATA_FILES = sorted(p.stem for p in (CONFIGS / "data").glob("*.yaml"))
MODEL_FILES = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
RECIPE_FILES = sorted(p.stem for p in (CONFIGS / "recipes").glob("*.yaml"))

# What each model file trains: (net, net_args).
NETS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "lenet5": ("lenet5", None),
    "lenet5_small": ("lenet5_small", None),
    "convnet": ("convnet", None),
    "mlp10": ("mlp", {"hidden": [10]}),
    "mlp32": ("mlp", {"hidden": [32]}),
    "mlp128": ("mlp", {"hidden": [128]}),
    "resnet": ("resnet", {"widths": [16, 32, 64], "blocks": 2}),
}


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process LightningCLI reads sys.argv too; give it a bare one, as a user's shell would."""
    monkeypatch.setattr(sys, "argv", ["imgcls"])


@pytest.fixture()
def no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data folder, the working directory a temporary one, the real data set specs."""
    monkeypatch.delenv("IMGCLS_DATASET_SPECS", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "no_data").mkdir()
    return tmp_path / "no_data"


def parse(*args: str, data_dir: Path, root: Path | None = None) -> ImgclsCLI:
    """``imgcls fit <args>`` parsed and instantiated, not run; no logger, nothing written.
    ``root``: a folder data set's root, given instead of ``data_dir``."""
    data = (
        ["--data.init_args.root", str(root)]
        if root
        else ["--data.init_args.data_dir", str(data_dir)]
    )
    cli = ImgclsCLI(args=[*args, *data, "--trainer.logger", "false"], run=False)
    assert not any(data_dir.iterdir()) and not (data_dir.parent / "runs").exists()
    return cli


def configs(*names: str) -> list[str]:
    return [a for name in names for a in ("--config", str(CONFIGS / f"{name}.yaml"))]


def test_the_layout_is_complete() -> None:
    assert sorted(DATA_CLASSES) == DATA_FILES
    assert sorted(NETS) == MODEL_FILES
    assert sorted(FORMER_RECIPES) == RECIPE_FILES
    assert not (CONFIGS / "mnist").exists() and not (CONFIGS / "fashion_mnist").exists()


# ----------------------------------------------------------------------------- each fact once
# The CLI's built-in defaults; no config file restates one. (Every file names its net and its
# data set, though, default or not: they are what the file is.)
BUILT_IN = {
    ("seed_everything",): 42,
    ("model", "scheduler_interval"): "step",
    ("model", "optimizer", "class_path"): "torch.optim.Adam",
    ("model", "scheduler", "init_args", "max_lr"): 0.005,  # of the default one-cycle schedule
    ("model", "scheduler", "init_args", "pct_start"): 0.25,
    ("data", "init_args", "batch_size"): 128,
    ("data", "init_args", "val_size"): 5000,
    ("trainer", "max_epochs"): 3,
    ("trainer", "accelerator"): "auto",
    ("trainer", "devices"): 1,
}


_ABSENT = object()


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return _ABSENT
        tree = tree[key]
    return tree


@pytest.mark.parametrize(
    "path",
    [f"data/{n}" for n in DATA_FILES]
    + [f"model/{n}" for n in MODEL_FILES]
    + [f"recipes/{n}" for n in RECIPE_FILES],
)
def test_no_file_restates_a_built_in_default(path: str) -> None:
    tree = yaml.safe_load((CONFIGS / f"{path}.yaml").read_text())
    restated = [".".join(key) for key, value in BUILT_IN.items() if _get(tree, key) == value]
    assert not restated, f"{path}.yaml restates the built-in {restated}"


@pytest.mark.parametrize("name", DATA_FILES)
def test_a_data_file_names_only_its_data_set(name: str) -> None:
    tree = yaml.safe_load((CONFIGS / "data" / f"{name}.yaml").read_text())
    assert tree == {"data": {"class_path": f"imgcls.data.{DATA_CLASSES[name].__name__}"}}


@pytest.mark.parametrize("name", MODEL_FILES)
def test_a_model_file_says_nothing_of_the_data(name: str) -> None:
    tree = yaml.safe_load((CONFIGS / "model" / f"{name}.yaml").read_text())
    assert set(tree) <= {"model", "trainer"} and set(tree.get("trainer", {})) <= {"max_epochs"}


# ----------------------------------------------------------------------------- data x model
@pytest.mark.parametrize("model", MODEL_FILES)
@pytest.mark.parametrize("data", DATA_FILES)
def test_every_data_and_model_file_stack(data, model, no_data):
    root = None
    if data == "folder":  # three classes: the net's output follows the folder
        x, y = stripes(12, 3)
        root = write_folder_dataset(no_data.parent / "folder", {"train": (x, y)}, "abc")
    cli = parse(*configs(f"data/{data}", f"model/{model}"), data_dir=no_data, root=root)
    assert type(cli.datamodule) is DATA_CLASSES[data]
    assert isinstance(cli.model, ImageClassifier)
    net, net_args = NETS[model]
    hp = cli.model.hparams
    assert (hp.net, hp.net_args, hp.dataset) == (net, net_args, data)
    classes = 3 if data == "folder" else 10
    assert cli.model(torch.zeros(2, 1, 28, 28)).shape == (2, classes)
    assert hp.class_names == list(cli.datamodule.class_names)


def test_data_short_form(no_data):
    """``imgcls fit -c configs/model/convnet.yaml --data FashionMNISTDataModule``."""
    cli = parse(*configs("model/convnet"), "--data", "FashionMNISTDataModule", data_dir=no_data)
    assert type(cli.datamodule) is FashionMNISTDataModule
    assert (cli.model.hparams.net, cli.model.hparams.dataset) == ("convnet", "fashion_mnist")


# ----------------------------------------------------------------------------- former configs
def _signature_defaults(cls: type) -> dict[str, Any]:
    return {
        k: p.default
        for k, p in inspect.signature(cls).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _class_args(ns: Any) -> tuple[type, dict[str, Any]] | None:
    """A parsed ``class_path`` / ``init_args`` as (the class, every init arg it is given).

    An argument that the class takes through ``**kwargs`` (not in its own signature) counts
    only when it is set.
    """
    if ns is None:
        return None
    module, _, name = ns.class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    own = inspect.signature(cls).parameters
    return cls, {k: v for k, v in vars(ns.init_args).items() if v is not None or k in own}


def _full(cls: type, **stated: Any) -> tuple[type, dict[str, Any]]:
    """What a config stating ``stated`` for ``cls`` parses to: the rest are the class defaults."""
    return cls, {**_signature_defaults(cls), **stated}


@dataclass
class Former:
    """Every hyper-parameter a one-file config gave before the split (hard-coded)."""

    net: str
    net_args: dict[str, Any] | None = None
    optimizer: tuple[type, dict[str, Any]] = (torch.optim.Adam, {"lr": 0.001})
    scheduler: tuple[type, dict[str, Any]] | None = None
    # Only meaningful with a scheduler: the former files without one left it unset.
    scheduler_interval: str | None = None
    label_smoothing: float = 0.0
    channels_last: bool = True  # the module's default: no former file set it
    data_args: dict[str, Any] = field(default_factory=dict)
    max_epochs: int = 3
    callbacks: list[tuple[type, dict[str, Any]]] = field(default_factory=list)
    seed: int = 42
    batch_size: int = 128
    val_size: int = 5000
    accelerator: str = "auto"
    devices: int = 1


ONE_CYCLE = (torch.optim.lr_scheduler.OneCycleLR, {"max_lr": 0.005, "pct_start": 0.25})
EMA = (EMAWeightAveraging, {"decay": 0.999})

# configs/mnist/<net>.yaml before the split; configs/fashion_mnist/<net>.yaml were the same
# files with FashionMNISTDataModule.
FORMER_PAIRS = {
    "lenet5": Former("lenet5", scheduler=ONE_CYCLE, scheduler_interval="step"),
    "convnet": Former("convnet", scheduler=ONE_CYCLE, scheduler_interval="step"),
    "lenet5_small": Former("lenet5_small", max_epochs=5),
    "mlp10": Former("mlp", {"hidden": [10]}, max_epochs=10),
    "mlp32": Former("mlp", {"hidden": [32]}, max_epochs=10),
    "mlp128": Former("mlp", {"hidden": [128]}, max_epochs=10),
    "resnet": Former("resnet", {"widths": [16, 32, 64], "blocks": 2}, max_epochs=5),
}

# configs/recipes/<name>.yaml before defaults were no longer restated: (data set, former values).
FORMER_RECIPES = {
    # the recipe of the shipped models (imgcls/zoo/) that is not a cut of another, below
    "fashion_short": (
        "fashion_mnist",
        Former(
            "lenet5",
            label_smoothing=0.05,
            optimizer=(torch.optim.AdamW, {"lr": 0.003, "weight_decay": 0.0005}),
            scheduler=(torch.optim.lr_scheduler.OneCycleLR, {"max_lr": 0.004, "pct_start": 0.2}),
            scheduler_interval="step",
            data_args={"shift_augment": 2, "hflip": True},
            max_epochs=10,
        ),
    ),
    "fashion_best": (
        "fashion_mnist",
        Former(
            "resnet",
            {"widths": [16, 32, 64], "blocks": 3, "batch_norm": True},
            label_smoothing=0.1,
            channels_last=True,
            optimizer=(
                torch.optim.SGD,
                {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0005},
            ),
            scheduler=(torch.optim.lr_scheduler.OneCycleLR, {"max_lr": 0.1, "pct_start": 0.15}),
            scheduler_interval="step",
            data_args={"shift_augment": 3, "hflip": True, "random_erase": 0.5},
            max_epochs=50,
            callbacks=[EMA],
        ),
    ),
    "mnist_best": (
        "mnist",
        Former(
            "resnet",
            {"widths": [16, 32, 64], "blocks": 1, "batch_norm": True},
            label_smoothing=0.1,
            optimizer=(torch.optim.AdamW, {"lr": 0.002, "weight_decay": 0.0005}),
            scheduler=(torch.optim.lr_scheduler.OneCycleLR, {"max_lr": 0.004, "pct_start": 0.2}),
            scheduler_interval="step",
            data_args={"shift_augment": 3},
            max_epochs=15,
            callbacks=[EMA],
        ),
    ),
    "mnist_lenet5": (
        "mnist",
        Former(
            "lenet5",
            label_smoothing=0.05,
            optimizer=(torch.optim.AdamW, {"lr": 0.003, "weight_decay": 0.0005}),
            scheduler=(torch.optim.lr_scheduler.OneCycleLR, {"max_lr": 0.005, "pct_start": 0.2}),
            scheduler_interval="step",
            data_args={"shift_augment": 3},
            max_epochs=15,
            callbacks=[EMA],
        ),
    ),
    "mnist_lenet5_fast": (
        "mnist",
        Former(
            "lenet5",
            optimizer=(torch.optim.AdamW, {"lr": 0.003, "weight_decay": 0.0001}),
            scheduler=(torch.optim.lr_scheduler.OneCycleLR, {"max_lr": 0.006, "pct_start": 0.25}),
            scheduler_interval="step",
            max_epochs=4,
        ),
    ),
    "mnist_speedrun": (
        "mnist",
        Former(
            "convnet",
            {
                "channels": [16, 32],
                "kernel_size": 5,
                "stride": 2,
                "padding": "same",
                "pool_size": 1,
                "hidden": 64,
                "dropout": [0.0, 0.0],
                "batch_norm": True,
            },
            label_smoothing=0.1,
            channels_last=True,
            optimizer=(torch.optim.AdamW, {"lr": 0.003, "weight_decay": 0.0001}),
            scheduler=(torch.optim.lr_scheduler.OneCycleLR, {"max_lr": 0.015, "pct_start": 0.25}),
            scheduler_interval="step",
            max_epochs=2,
            batch_size=256,
        ),
    ),
}

# The shipped models' other recipes are cuts of the best-net ones: a narrower net, fewer epochs.
SMALL_RESNET = {"widths": [12, 24, 48], "blocks": 1, "batch_norm": True}
FORMER_RECIPES["mnist_small"] = (
    "mnist",
    replace(FORMER_RECIPES["mnist_best"][1], net_args=SMALL_RESNET),
)
# The second kind of MNIST ensemble member: the Fashion-MNIST ResNet-20 recipe on digits.
FORMER_RECIPES["mnist_resnet20"] = (
    "mnist",
    replace(
        FORMER_RECIPES["fashion_best"][1],
        data_args={"shift_augment": 3, "random_erase": 0.25},
        max_epochs=15,
    ),
)
# The third: mnist_best with rotations and scalings, for longer.
FORMER_RECIPES["mnist_affine"] = (
    "mnist",
    replace(
        FORMER_RECIPES["mnist_best"][1],
        data_args={"shift_augment": 3, "rotate_augment": 10, "scale_augment": 0.1},
        max_epochs=20,
    ),
)
# The fourth: mnist_best twice as wide.
FORMER_RECIPES["mnist_wide"] = (
    "mnist",
    replace(
        FORMER_RECIPES["mnist_best"][1],
        net_args={"widths": [32, 64, 128], "blocks": 1, "batch_norm": True},
    ),
)
FORMER_RECIPES["fashion_resnet_short"] = (
    "fashion_mnist",
    replace(
        FORMER_RECIPES["fashion_best"][1],
        net_args=SMALL_RESNET,
        data_args={"shift_augment": 3, "hflip": True},
        max_epochs=8,
        callbacks=[],
    ),
)


def assert_gives(cli: ImgclsCLI, data: str, former: Former, data_dir: Path) -> None:
    cfg = cli.config
    assert cfg.seed_everything == former.seed
    model = cfg.model
    assert (model.net, model.net_args) == (former.net, former.net_args)
    assert (model.label_smoothing, model.channels_last, model.compile) == (
        former.label_smoothing,
        former.channels_last,
        False,
    )
    assert _class_args(model.optimizer) == _full(former.optimizer[0], **former.optimizer[1])
    if former.scheduler is None:
        assert model.scheduler is None
    else:
        assert _class_args(model.scheduler) == _full(former.scheduler[0], **former.scheduler[1])
        assert model.scheduler_interval == former.scheduler_interval
    cls = DATA_CLASSES[data]
    stated = {
        "batch_size": former.batch_size,
        "val_size": former.val_size,
        "data_dir": str(data_dir),
        **former.data_args,
    }
    assert _class_args(cfg.data) == _full(cls, **stated)
    trainer = cfg.trainer
    assert (trainer.max_epochs, trainer.accelerator, trainer.devices) == (
        former.max_epochs,
        former.accelerator,
        former.devices,
    )
    assert [_class_args(c) for c in trainer.callbacks or []] == [
        _full(cb, **args) for cb, args in former.callbacks
    ]
    # and what was instantiated from it
    dm = cli.datamodule
    assert type(dm) is cls and (dm.batch_size, dm.n_val) == (former.batch_size, former.val_size)
    assert (cli.model.hparams.net, cli.model.hparams.dataset) == (former.net, data)


@pytest.mark.parametrize("model", sorted(FORMER_PAIRS))
@pytest.mark.parametrize("data", sorted(IDX_CLASSES))
def test_a_pair_gives_what_its_former_config_gave(data, model, no_data):
    """Former configs/<data>/<net>.yaml == configs/data/<data>.yaml + configs/model/<net>.yaml"""
    cli = parse(*configs(f"data/{data}", f"model/{model}"), data_dir=no_data)
    assert_gives(cli, data, FORMER_PAIRS[model], no_data)


@pytest.mark.parametrize("recipe", sorted(FORMER_RECIPES))
def test_a_recipe_alone_gives_what_it_gave(recipe, no_data):
    cli = parse(*configs(f"recipes/{recipe}"), data_dir=no_data)
    data, former = FORMER_RECIPES[recipe]
    assert_gives(cli, data, former, no_data)
    assert cli.model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_the_default_model_needs_no_config(no_data):
    """``imgcls fit`` with no config trains what configs/mnist/lenet5.yaml used to."""
    assert_gives(parse(data_dir=no_data), "mnist", FORMER_PAIRS["lenet5"], no_data)


def test_data_module_defaults_are_those_the_data_files_rely_on() -> None:
    defaults = _signature_defaults(ImageDataModule)
    assert (defaults["batch_size"], defaults["val_size"]) == (128, 5000)
