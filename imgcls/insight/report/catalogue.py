"""The report's experiments: what each trains, on which data, and what the lectures say of it.

``EXPERIMENTS`` is the catalogue (the package docstring lists it); ``lecture_spec`` is the
lectures' training protocol for any net; the constants say how the report evaluates (test
subset of ``--quick``, shifts up to ``MAX_SHIFT`` px, which test images the figures show).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from imgcls.insight import lectures
from imgcls.insight.training import TrainSpec

__all__ = [
    "EXPERIMENTS",
    "LECTURE_EPOCHS",
    "LECTURE_PROTOCOL",
    "MAX_SHIFT",
    "SPEED_PAIRS",
    "Experiment",
    "lecture_spec",
]


@dataclass(frozen=True)
class Experiment:
    name: str  # short id, used for --ckpt NAME=PATH and file names
    title: str  # how the lectures call it
    full: TrainSpec  # the setting the committed report runs
    quick: TrainSpec  # --quick: a small subset, one epoch
    lecture_acc: float | None = None  # test accuracy (%) the lectures report
    lecture_shift: tuple[float, ...] | None = None  # accuracy (%) at 0, 1, 2, … px
    source: str = ""  # where in the lectures
    study: str = "lectures"  # the report section it belongs to ("lectures", "pooling", …)
    train_accuracy: bool = False  # also measure accuracy on its own training images

    def spec(self, quick: bool) -> TrainSpec:
        return self.quick if quick else self.full


# The lectures' protocol: lecture 002's CNN "after 14 epochs" is PyTorch's MNIST example
# (Adadelta lr 1.0, the rate times 0.7 each epoch, batch 64, all 60,000 images, seed 1).
# configs/lecture/protocol.yaml says the same for `imgcls fit`
# (tests/insight/test_lecture_protocol.py keeps the two equal).
LECTURE_EPOCHS = 14
LECTURE_PROTOCOL: dict[str, Any] = {
    "batch_size": 64,
    "optimizer": "torch.optim.Adadelta",
    "optimizer_args": {"lr": 1.0, "eps": 1e-6},
    "scheduler": "torch.optim.lr_scheduler.StepLR",
    "scheduler_args": {"step_size": 1, "gamma": 0.7},
    "seed": 1,
}
# The overfitting study trains every size for the same number of steps (a per-epoch schedule
# would leave 100 images two steps an epoch), with a constant-rate Adam.
OVERFIT_SIZES = (60_000, 10_000, 1_000, 100)
OVERFIT_STEPS, QUICK_OVERFIT_STEPS = 3_000, 30
ADAM: dict[str, Any] = {
    "optimizer": "torch.optim.Adam",
    "optimizer_args": {"lr": 1e-3},
    "scheduler": None,
    "scheduler_args": {},
}
RESNET_ARGS: dict[str, Any] = {"widths": [16, 32], "blocks": 2}
# The lectures' protocol on a third of the images: these nets cost as much per image as the
# 2-conv net. The decaying rate matters: under a constant rate the batch-norm net's running
# statistics trail its last weights, and its eval-mode accuracy with them.
RESNET_IMAGES = 20_000
QUICK_IMAGES = 2_000


def lecture_spec(
    net: str,
    net_args: dict[str, Any] | None = None,
    dataset: str = "mnist",
    subset: int | None = None,
    epochs: int = LECTURE_EPOCHS,
    **changes: Any,
) -> TrainSpec:
    """The lectures' protocol for ``net``; ``changes`` override fields of ``TrainSpec``."""
    fields: dict[str, Any] = {**LECTURE_PROTOCOL, **changes}
    return TrainSpec(net, dict(net_args or {}), dataset, subset, epochs, **fields)


def _pair(
    net: str,
    net_args: dict[str, Any] | None = None,
    dataset: str = "mnist",
    subset: int | None = None,
    **changes: Any,
) -> tuple[TrainSpec, TrainSpec]:
    """(full, quick) specs: the quick one on ``QUICK_IMAGES`` images for one epoch."""
    quick_changes = {**changes, "epochs": 1}
    if "val_size" in changes:
        quick_changes["val_size"] = 500
    if changes.get("steps"):
        quick_changes["steps"] = QUICK_OVERFIT_STEPS
    quick_subset = min(subset or QUICK_IMAGES, QUICK_IMAGES)
    return (
        lecture_spec(net, net_args, dataset, subset, **changes),
        lecture_spec(net, net_args, dataset, quick_subset, **quick_changes),
    )


def _overfit(size: int) -> Experiment:
    full, quick = _pair("mlp", {"hidden": [10]}, "mnist", size, steps=OVERFIT_STEPS, **ADAM)
    # --quick: four distinct sizes that load and train in a second each.
    small = {60_000: QUICK_IMAGES, 10_000: 1_000, 1_000: 300}.get(size, min(size, 100))
    quick = TrainSpec(**{**asdict(quick), "train_subset": small})
    return Experiment(
        f"overfit-{size}",
        f"MLP-10 on {size:,} images",
        full,
        quick,
        source="lecture 002, overfitting with less training data",
        study="overfit",
        train_accuracy=True,
    )


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        "mlp-10",
        "MLP, 10 hidden units",
        *_pair("mlp", {"hidden": [10]}),
        lectures.MLP10_ACC,
        None,
        "lecture 002",
    ),
    Experiment(
        "mlp-32",
        "MLP, 32 hidden units",
        *_pair("mlp", {"hidden": [32]}),
        lectures.MLP32_ACC,
        lectures.MLP32_SHIFT,
        "lecture 002",
    ),
    Experiment(
        "mlp-128",
        "MLP, 128 hidden units",
        *_pair("mlp", {"hidden": [128]}),
        source="lecture 000 (its fully-connected net)",
    ),
    Experiment(
        "convnet",
        "CNN (conv 32, conv 64, pool, fc 128)",
        *_pair("convnet"),
        lectures.CNN_MNIST_SHIFT[0],
        lectures.CNN_MNIST_SHIFT,
        "lecture 002",
    ),
    Experiment(
        "fashion-convnet",
        "CNN on Fashion-MNIST",
        *_pair("convnet", None, "fashion_mnist"),
        lectures.CNN_FASHION_SHIFT[0],
        lectures.CNN_FASHION_SHIFT,
        "lecture 002",
    ),
    Experiment("lenet5", "LeNet-5", *_pair("lenet5"), source="lecture 000"),
    Experiment("lenet5-small", "LeNet5Small", *_pair("lenet5_small"), source="lecture 000"),
    Experiment(
        "convnet-pool2",
        "CNN with a pool after each conv",
        *_pair("convnet", {"pool_after": "each"}),
        source="lecture 002: more pooling, more invariance",
        study="pooling",
    ),
    Experiment(
        "convnet-stride",
        "CNN with stride-2 convs, no pool",
        *_pair("convnet", {"stride": 2, "pool_size": 1}),
        source="lecture 000: strided convolution",
        study="stride",
    ),
    Experiment(
        "lenet5-20k",
        "LeNet-5 on 20,000 images",
        *_pair("lenet5", None, "mnist", lectures.LENET5_20K_IMAGES, val_size=5_000),
        source="lecture 000",
        study="curves",
    ),
    Experiment(
        "mlp-128-20k",
        "MLP-128 on 20,000 images",
        *_pair("mlp", {"hidden": [128]}, "mnist", lectures.LENET5_20K_IMAGES, val_size=5_000),
        source="lecture 000",
        study="curves",
    ),
    *(_overfit(n) for n in OVERFIT_SIZES),
    Experiment(
        "resnet-bn",
        "ResNet, batch-norm blocks (He et al.)",
        *_pair("resnet", dict(RESNET_ARGS), "mnist", RESNET_IMAGES),
        source="lecture 002, eq. (6)",
        study="resnet",
    ),
    Experiment(
        "resnet-lecture",
        "ResNet, lecture 002's eq. (6) blocks",
        *_pair(
            "resnet",
            {**RESNET_ARGS, "block": "lecture", "batch_norm": False},
            "mnist",
            RESNET_IMAGES,
        ),
        source="lecture 002, eq. (6)",
        study="resnet",
    ),
    Experiment(
        "lenet5-cosine",
        "LeNet-5, loss −fᵀy/‖f‖",
        *_pair("lenet5", loss="cosine"),
        source="lecture 002: an alternative loss",
        study="loss",
    ),
)
QUICK_TEST_LIMIT = 500  # --quick evaluates on the first 500 test images
MAX_SHIFT = 3
FEATURE_IMAGE_INDEX = 1  # MNIST test image 1 is a 2, as in lecture 002's figs. 6–7
KERNEL_IMAGE_INDEX = 18  # MNIST test image 18 is a 3, as in lecture 000's prong example
# The nets each speed comparison times, side by side in one process.
SPEED_PAIRS = {
    "stride": ("convnet", "convnet-stride"),
    "curves": ("lenet5-20k", "mlp-128-20k"),
}
