"""Shared fixtures: small generated IDX files, the real data when present, and a short-trained
checkpoint on real MNIST that the export / insight tests start from.

Every run is shrunk here (CPU, few batches, no W&B unless a test asks for it), after the
lightning-hydra-template's conftest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from imgcls.data.provision import DATASETS, default_root, is_verified
from tests.helpers import FAST, ROOT, run_imgcls, write_tiny_dataset

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)


@pytest.fixture()
def tiny_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root with small generated MNIST and Fashion-MNIST IDX files (600 train / 200 test),
    pinned through ``$IMGCLS_DATASET_SPECS`` so that verification and subprocesses use them."""
    root = tmp_path / "data"
    specs = {name: write_tiny_dataset(root, spec.folder) for name, spec in DATASETS.items()}
    spec_file = tmp_path / "specs.json"
    spec_file.write_text(json.dumps(specs))
    monkeypatch.setenv("IMGCLS_DATASET_SPECS", str(spec_file))
    return root


def _real_root() -> Path | None:
    root = default_root()
    return root if is_verified(root, "mnist") else None


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The verified real data root (`imgcls data fetch --dataset all`); skips the test if absent."""
    if os.environ.get("IMGCLS_DATASET_SPECS"):
        pytest.skip("IMGCLS_DATASET_SPECS overrides the real data specs")
    root = _real_root()
    if root is None:
        pytest.skip("real MNIST not fetched: run `imgcls data fetch --dataset all`")
    return root


@pytest.fixture(scope="session")
def real_fashion_root(real_data_root: Path) -> Path:
    if not is_verified(real_data_root, "fashion_mnist"):
        pytest.skip(
            "real Fashion-MNIST not fetched: run `imgcls data fetch --dataset fashion_mnist`"
        )
    return real_data_root


@pytest.fixture(scope="session")
def trained_run(real_data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeNet-5 run trained on 6,000 real MNIST images for 2 epochs: its run directory.

    Reaches about 95 % test accuracy; export and insight tests start from its checkpoints. It
    keeps its weights before training and after each epoch (``snapshots/epoch=0|1|2.ckpt``),
    for the tests of ``imgcls page --epochs``.
    """
    work = tmp_path_factory.mktemp("trained")
    run_imgcls(
        "fit",
        "--config",
        str(ROOT / "configs/model/lenet5.yaml"),
        *FAST,
        "--trainer.max_epochs",
        "2",
        "--data.init_args.data_dir",
        str(real_data_root),
        "--data.init_args.train_subset",
        "6000",
        "--model.optimizer.init_args.lr",
        "0.002",
        "--data.init_args.val_size",
        "1000",
        "--snapshots.epochs",
        "[0, 1, -1]",
        cwd=work,
    )
    run = work / "runs" / "mnist-lenet5" / "version_0"
    assert (run / "checkpoints" / "best.ckpt").is_file()
    return run


@pytest.fixture(scope="session")
def trained_ckpt(trained_run: Path) -> Path:
    return trained_run / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="session")
def exported_lenet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The trained LeNet-5 exported once for the session (parity on 1,000 test images, with its
    feature maps): the folder that the runtime, serve, page, deploy and model card tests read.

    Read-only by convention: a test that changes an export, or needs other options, makes its
    own. ``$IMGCLS_TEST_EXPORT`` names such a folder exported beforehand instead: a venv without
    torch (`nox -s lowest`) cannot train one, so it is handed one made the same way.
    """
    if given := os.environ.get("IMGCLS_TEST_EXPORT"):
        return Path(given)
    from imgcls.export import export_checkpoint

    trained_ckpt: Path = request.getfixturevalue("trained_ckpt")
    real_data_root: Path = request.getfixturevalue("real_data_root")
    out = tmp_path_factory.mktemp("exported") / "lenet5"
    export_checkpoint(
        trained_ckpt, out, data_dir=real_data_root, parity_subset=1000, log=lambda _: None
    )
    return out


@pytest.fixture(scope="session")
def exported_mlp(real_data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained MNIST MLP (16 hidden units), exported once for the session: the model the
    page puts beside the LeNet-5 (``--compare``). Its answers are chance; the tests hold the
    page's numbers against onnxruntime in Python, which does not care."""
    from imgcls.export import export_checkpoint
    from tests.helpers.training import make_checkpoint

    work = tmp_path_factory.mktemp("mlp")
    ckpt = make_checkpoint(work / "mlp.ckpt", "mlp", {"hidden": [16]})
    export_checkpoint(
        ckpt, work / "export", data_dir=real_data_root, parity_subset=100, log=lambda _: None
    )
    return work / "export"
