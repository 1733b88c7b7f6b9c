"""A folder of images per class (``imgcls.data.ImageFolderDataModule``): the layout, its
errors, the decoded cache, the same pixels as the built-in MNIST module, and the whole chain
on real Fashion-MNIST written out as PNG files (fit, test, export, infer, serve)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from imgcls.data import DATAMODULES, ImageFolderDataModule, MNISTDataModule, get_datamodule
from imgcls.data.datamodule import ImageDataModule
from imgcls.data.folder import CACHE_FOLDER
from imgcls.deploy.idx import read_idx
from imgcls.errors import ConfigError, DataError
from tests.helpers import FAST, ROOT, run_imgcls
from tests.helpers.folders import stripes, write_folder_dataset, write_split
from tests.helpers.serving import running_server

# Fashion-MNIST's classes as folder names ("T-shirt/top" cannot be one); their sorted order is
# not the data set's label order, so a wrong mapping of names to labels shows.
FASHION_FOLDERS = (
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)
# A 4-class subset under other names: Fashion-MNIST labels 1, 5, 8, 9.
FOUR = {1: "legwear", 5: "open shoe", 8: "Bag", 9: "boot"}


def _fashion(root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    raw = root / "FashionMNIST" / "raw"
    prefix = "train" if train else "t10k"
    images = read_idx(raw / f"{prefix}-images-idx3-ubyte")
    labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte").astype(np.int64)
    return images, labels


@pytest.fixture(scope="module")
def fashion_folder(real_fashion_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 training and 500 test images of Fashion-MNIST as PNG files, one folder a class."""
    x, y = _fashion(real_fashion_root, True)
    tx, ty = _fashion(real_fashion_root, False)
    root = tmp_path_factory.mktemp("fashion-folder")
    return write_folder_dataset(
        root, {"train": (x[:2000], y[:2000]), "test": (tx[:500], ty[:500])}, FASHION_FOLDERS
    )


@pytest.fixture(scope="module")
def four_class_folder(real_fashion_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fashion-MNIST's trousers, sandals, bags and ankle boots under other names, with val/."""
    x, y = _fashion(real_fashion_root, True)
    tx, ty = _fashion(real_fashion_root, False)
    names = [FOUR.get(k, "") for k in range(10)]
    keep, tkeep = np.isin(y, list(FOUR)), np.isin(ty, list(FOUR))
    x, y, tx, ty = x[keep], y[keep], tx[tkeep], ty[tkeep]
    root = tmp_path_factory.mktemp("four-folder")
    return write_folder_dataset(
        root,
        {
            "train": (x[:1200], y[:1200]),
            "val": (x[1200:1400], y[1200:1400]),
            "test": (tx[:300], ty[:300]),
        },
        names,
    )


def _fit(root: Path, work: Path, *extra: str) -> Path:
    """``imgcls fit`` of LeNet-5 on a folder for 2 epochs; the run folder."""
    run_imgcls(
        "fit",
        "-c",
        str(ROOT / "configs/data/folder.yaml"),
        "-c",
        str(ROOT / "configs/model/lenet5.yaml"),
        *FAST,
        "--trainer.max_epochs",
        "2",
        "--data.init_args.root",
        str(root),
        "--data.init_args.batch_size",
        "64",
        *extra,
        cwd=work,
    )
    run = work / "runs" / "folder-lenet5" / "version_0"
    assert (run / "checkpoints" / "best.ckpt").is_file()
    return run


@pytest.fixture(scope="module")
def fashion_run(fashion_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fit(fashion_folder, tmp_path_factory.mktemp("fashion-run"))


@pytest.fixture(scope="module")
def fashion_export(fashion_run: Path) -> Path:
    out = fashion_run.parent.parent.parent / "export" / "fashion"
    proc = run_imgcls(
        "export", "--ckpt", str(fashion_run), "--out", str(out), cwd=fashion_run.parent
    )
    assert "parity" in proc.stdout + proc.stderr
    return out


# ----------------------------------------------------------------------------- layout
def test_classes_are_the_sorted_folder_names_and_labels_follow_them(tmp_path: Path) -> None:
    x, y = stripes(30, 3)
    tx, ty = stripes(9, 3, seed=1)
    names = ["b", "a", "C"]  # sorted: C, a, b (code-point order)
    write_folder_dataset(tmp_path, {"train": (x, y), "test": (tx, ty)}, names)
    dm = ImageFolderDataModule(root=str(tmp_path), val_size=0)
    assert dm.class_names == ("C", "a", "b") and dm.num_classes == 3
    dm.setup("test")
    assert dm.test_set is not None
    # class folder "b" (written as label 0) is class 2 now; the bar of a label-0 image is at row 3
    got = dm.test_set.images.numpy()[:, 0]
    want_label = {0: 2, 1: 1, 2: 0}
    for img, lab in zip(got, dm.test_set.labels.tolist(), strict=True):
        src = next(k for k, v in want_label.items() if v == lab)
        assert img[3 + 5 * src, 10] == 255
    assert dm.info()["class_names"] == ["C", "a", "b"] and dm.info()["dataset"] == "folder"
    assert DATAMODULES["folder"] is ImageFolderDataModule


def test_mean_and_std_are_those_of_the_training_pixels(tmp_path: Path) -> None:
    x, y = stripes(40, 4, seed=3)
    write_folder_dataset(tmp_path, {"train": (x, y)}, ["w", "x", "y", "z"])
    dm = ImageFolderDataModule(root=str(tmp_path))
    pixels = x.astype(np.float64) / 255.0
    assert dm.mean == pytest.approx(pixels.mean(), abs=1e-9)
    assert dm.std == pytest.approx(pixels.std(ddof=1), abs=1e-9)


def test_without_val_a_seeded_stratified_split_of_train(tmp_path: Path) -> None:
    x, y = stripes(100, 4)
    write_folder_dataset(tmp_path, {"train": (x, y)}, ["a", "b", "c", "d"])
    a = ImageFolderDataModule(root=str(tmp_path), val_size=0.2, seed=1)
    b = ImageFolderDataModule(root=str(tmp_path), val_size=0.2, seed=1)
    a.setup("fit")
    b.setup("fit")
    assert a.val_set is not None and a.train_set is not None and b.val_set is not None
    assert len(a.val_set) == 20 and len(a.train_set) == 80
    assert torch.equal(a.val_set.images, b.val_set.images)
    assert np.bincount(a.val_set.labels.numpy()).tolist() == [5, 5, 5, 5]


def test_with_val_its_images_are_the_validation_set(tmp_path: Path) -> None:
    x, y = stripes(60, 3)
    vx, vy = stripes(12, 3, seed=9)
    write_folder_dataset(tmp_path, {"train": (x, y), "val": (vx, vy)}, ["a", "b", "c"])
    dm = ImageFolderDataModule(root=str(tmp_path), val_size=0.5, train_subset=30)
    dm.setup("fit")
    assert dm.n_val == 12 and dm.val_set is not None and dm.train_set is not None
    order = np.argsort(vy, kind="stable")
    assert np.array_equal(dm.val_set.images.numpy()[:, 0], vx[order])
    assert len(dm.train_set) == 30
    assert np.bincount(dm.train_set.labels.numpy()).tolist() == [10, 10, 10]


def test_a_split_that_rounds_to_no_validation_image_takes_one(tmp_path: Path) -> None:
    x, y = stripes(4, 2)  # two images per class: 0.1 of 4 rounds to 0
    write_folder_dataset(tmp_path, {"train": (x, y)}, ["a", "b"])
    with pytest.warns(UserWarning, match=r"val_size=0\.1 of 4 images rounds to 0; 1 image"):
        dm = ImageFolderDataModule(root=str(tmp_path))
    dm.setup("fit")
    assert dm.val_set is not None and dm.train_set is not None
    assert len(dm.val_set) == 1 and len(dm.train_set) == 3
    assert sorted(set(dm.train_set.labels.tolist())) == [0, 1]  # each class trains
    assert ImageFolderDataModule(root=str(tmp_path), val_size=0).n_val == 0  # on purpose


def test_one_image_per_class_is_refused_saying_how_many_are_needed(tmp_path: Path) -> None:
    x, y = stripes(2, 2)
    write_folder_dataset(tmp_path, {"train": (x, y)}, ["a", "b"])
    before = _tree(tmp_path)
    message = r"train/[ab]: 1 image\(s\), and the validation split"
    with pytest.raises(DataError, match=message) as e:
        ImageFolderDataModule(root=str(tmp_path))
    assert "each class needs at least 2 images" in str(e.value) and "val_size 0" in str(e.value)
    assert _tree(tmp_path) == before  # refused before any image was decoded or cached
    # with a val/ folder, or no validation, one image per class trains
    assert ImageFolderDataModule(root=str(tmp_path), val_size=0).n_val == 0
    write_split(tmp_path, "val", x, y, ["a", "b"])
    assert ImageFolderDataModule(root=str(tmp_path)).n_val == 2


def test_get_datamodule_takes_the_root_as_data_dir(tmp_path: Path) -> None:
    x, y = stripes(20, 2)
    write_folder_dataset(tmp_path, {"train": (x, y)}, ["no", "yes"])
    dm = get_datamodule("folder", data_dir=str(tmp_path), val_size=0)
    assert isinstance(dm, ImageFolderDataModule) and dm.class_names == ("no", "yes")


def test_a_model_of_other_classes_is_refused_by_the_data_check(tmp_path: Path) -> None:
    """Two folders with as many classes: the net fits, but its class k is another thing."""
    import lightning as L

    from imgcls.training.callbacks import DataCheck
    from imgcls.training.lightning_module import ImageClassifier

    x, y = stripes(20, 2)
    write_folder_dataset(tmp_path, {"train": (x, y)}, ["cat", "dog"])
    dm = ImageFolderDataModule(root=str(tmp_path), val_size=0.5)
    model = ImageClassifier(num_classes=2, dataset="folder", class_names=["no", "yes"])
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[DataCheck()],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(ConfigError, match=r"class_names: model \['no', 'yes'\] vs data \['cat'"):
        trainer.validate(model, dm, verbose=False)


# ----------------------------------------------------------------------------- same as MNIST
@pytest.mark.real_data
def test_mnist_written_as_a_folder_gives_the_mnist_modules_pixels(
    real_data_root: Path, tmp_path: Path
) -> None:
    raw = real_data_root / "MNIST" / "raw"
    x = read_idx(raw / "train-images-idx3-ubyte")[:600]
    y = read_idx(raw / "train-labels-idx1-ubyte")[:600].astype(np.int64)
    tx = read_idx(raw / "t10k-images-idx3-ubyte")[:200]
    ty = read_idx(raw / "t10k-labels-idx1-ubyte")[:200].astype(np.int64)
    root = write_folder_dataset(
        tmp_path / "mnist", {"train": (x, y), "test": (tx, ty)}, [str(k) for k in range(10)]
    )
    folder = ImageFolderDataModule(root=str(root), framing="none", val_size=0)
    mnist = MNISTDataModule(data_dir=str(real_data_root), val_size=0)
    folder.setup("test")
    mnist.setup("test")
    assert folder.test_set is not None and mnist.test_set is not None
    # The folder lists class by class, each in file (= index) order.
    order = np.argsort(ty, kind="stable")
    assert torch.equal(folder.test_set.images, mnist.test_set.images[:200][order])
    assert torch.equal(folder.test_set.labels, mnist.test_set.labels[:200][order])
    train, _ = folder._load_split(train=True)
    assert torch.equal(train[:, 0], torch.from_numpy(x[np.argsort(y, kind="stable")]))
    assert folder.class_names == MNISTDataModule.class_names
    assert folder.mean == pytest.approx(x.mean() / 255.0, abs=1e-9)


def _seeded_fit_accuracy(dm: ImageDataModule) -> float:
    """Test accuracy of LeNet-5 after two seeded epochs on ``dm`` (CPU, no logs, no files)."""
    import lightning as L

    from imgcls.training.lightning_module import ImageClassifier

    L.seed_everything(0, verbose=False)
    model = ImageClassifier(
        net="lenet5",
        num_classes=dm.num_classes,
        dataset=dm.dataset_name,
        class_names=list(dm.class_names),
        mean=dm.mean,
        std=dm.std,
    )
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    [scores] = trainer.test(model, dm, verbose=False)
    return float(scores["test/acc"])


@pytest.mark.real_data
@pytest.mark.slow
def test_mnist_as_a_folder_trains_to_the_mnist_modules_accuracy(
    real_data_root: Path, tmp_path: Path
) -> None:
    """The same 3,000 training images (the MNIST module's seeded train_subset) and the first
    1,000 test images, two seeded epochs each: the accuracies agree within noise (the folder's
    images come in another order, so the batches differ)."""
    raw = real_data_root / "MNIST" / "raw"
    mnist = MNISTDataModule(
        data_dir=str(real_data_root), val_size=0, train_subset=3000, batch_size=32
    )
    x = read_idx(raw / "train-images-idx3-ubyte")
    y = read_idx(raw / "train-labels-idx1-ubyte").astype(np.int64)
    take, _ = mnist.split_indices(torch.from_numpy(y))
    tx = read_idx(raw / "t10k-images-idx3-ubyte")[:1000]
    ty = read_idx(raw / "t10k-labels-idx1-ubyte")[:1000].astype(np.int64)
    root = write_folder_dataset(
        tmp_path / "mnist",
        {"train": (x[take], y[take]), "test": (tx, ty)},
        [str(k) for k in range(10)],
    )
    folder = ImageFolderDataModule(root=str(root), framing="none", val_size=0, batch_size=32)
    mnist.setup("test")
    assert mnist.test_set is not None
    mnist.test_set.images, mnist.test_set.labels = (
        mnist.test_set.images[:1000],
        mnist.test_set.labels[:1000],
    )
    acc_folder, acc_mnist = _seeded_fit_accuracy(folder), _seeded_fit_accuracy(mnist)
    assert acc_mnist > 0.85 and acc_folder > 0.85, (acc_folder, acc_mnist)
    assert abs(acc_folder - acc_mnist) < 0.03, (acc_folder, acc_mnist)


# ----------------------------------------------------------------------------- bad folders
def _cache_files(root: Path) -> list[Path]:
    return sorted((root / CACHE_FOLDER).glob("*.pt")) if (root / CACHE_FOLDER).exists() else []


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no train", r"no train/ folder; a folder data set holds train/<class>/"),
        ("empty class", r"train/b: the class folder is empty; put the images of class 'b'"),
        ("one class", r"one class only \('a'\); a classifier needs at least two"),
        ("val class", r"val: class folder\(s\) zebra not in train/ \(a, b\)"),
        ("test class", r"test: class folder\(s\) zebra not in train/ \(a, b\)"),
        (
            "not an image",
            r"notes\.png: not a readable image file.*1 of the 13 files in .*train "
            r"are not readable images \(12 are good\)",
        ),
        ("stray file", r"readme\.txt: a file directly in train/"),
        ("broken link", r"train/a/gone\.png: a symlink to '/no/such/image\.png', which does not "),
        ("link loop", r"train/b/loop\.png: a symlink to 'loop\.png', which loops; fix the link"),
        ("no root", r"no such folder; pass the folder that holds train/<class>/"),
    ],
)
def test_a_bad_folder_fails_naming_what_to_fix_and_writes_nothing(
    tmp_path: Path, case: str, message: str
) -> None:
    x, y = stripes(12, 2)
    root = tmp_path / "data"
    write_folder_dataset(root, {"train": (x, y)}, ["a", "b"])
    if case == "no train":
        shutil.rmtree(root / "train")
        write_split(root, "test", x, y, ["a", "b"])
    elif case == "empty class":
        shutil.rmtree(root / "train" / "b")
        (root / "train" / "b").mkdir()
    elif case == "one class":
        shutil.rmtree(root / "train" / "b")
    elif case in ("val class", "test class"):
        write_split(root, case.split()[0], x[:4], y[:4] * 0, ["zebra"])
    elif case == "not an image":
        (root / "train" / "a" / "notes.png").write_text("not a picture")
    elif case == "stray file":
        (root / "train" / "readme.txt").write_text("my digits")
    elif case == "broken link":
        (root / "train" / "a" / "gone.png").symlink_to("/no/such/image.png")
    elif case == "link loop":
        (root / "train" / "b" / "loop.png").symlink_to("loop.png")
    elif case == "no root":
        root = tmp_path / "missing"
    before = _tree(tmp_path)
    with pytest.raises(DataError, match=message):
        ImageFolderDataModule(root=str(root))
    assert _tree(tmp_path) == before  # no cache, nothing else


def test_a_bad_framing_is_refused(tmp_path: Path) -> None:
    x, y = stripes(12, 2)
    write_folder_dataset(tmp_path, {"train": (x, y)}, ["a", "b"])
    with pytest.raises(ConfigError, match="framing must be one of auto, mnist, fashion_mnist"):
        ImageFolderDataModule(root=str(tmp_path), framing="square")  # type: ignore[arg-type]


def test_test_images_that_are_training_images_are_counted_in_a_warning(tmp_path: Path) -> None:
    x, y = stripes(20, 2)
    tx, ty = stripes(6, 2, seed=5)
    tx[:3] = x[:3]  # three training images again in test/
    ty[:3] = y[:3]
    write_folder_dataset(tmp_path, {"train": (x, y), "test": (tx, ty)}, ["a", "b"])
    with pytest.warns(UserWarning, match=r"test: 3 test image\(s\) have the same pixels"):
        ImageFolderDataModule(root=str(tmp_path))


def test_no_test_folder_refuses_to_test_on_training_images(tmp_path: Path) -> None:
    x, y = stripes(20, 2)
    write_folder_dataset(tmp_path, {"train": (x, y)}, ["a", "b"])
    dm = ImageFolderDataModule(root=str(tmp_path))
    with pytest.raises(DataError, match=r"no test/ folder, so there is no held-out set to test"):
        dm.setup("test")


@pytest.mark.slow
def test_the_cli_refuses_a_bad_folder_in_one_line_exit_2(tmp_path: Path) -> None:
    x, y = stripes(12, 2)
    root = write_folder_dataset(tmp_path / "data", {"train": (x, y)}, ["a", "b"])
    (root / "train" / "b" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    proc = run_imgcls(
        "fit",
        "-c",
        str(ROOT / "configs/data/folder.yaml"),
        *FAST,
        "--data.init_args.root",
        str(root),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()  # Lightning's "Seed set to 42" comes first
    errors = [line for line in lines if line.startswith("imgcls: error: ")]
    assert errors == lines[-1:], proc.stderr
    assert "broken.jpg" in errors[0] and "(12 are good)" in errors[0]
    assert not (tmp_path / "runs").exists() and not (root / CACHE_FOLDER).exists()


@pytest.mark.slow
def test_without_test_folder_imgcls_test_and_export_refuse_and_write_nothing(
    tmp_path: Path,
) -> None:
    x, y = stripes(40, 2)
    root = write_folder_dataset(tmp_path / "data", {"train": (x, y)}, ["a", "b"])
    run_imgcls(
        "fit",
        "-c",
        str(ROOT / "configs/data/folder.yaml"),
        *FAST,
        "--trainer.max_epochs",
        "1",
        "--data.init_args.root",
        str(root),
        cwd=tmp_path,
    )
    run = tmp_path / "runs" / "folder-lenet5" / "version_0"
    before = _tree(tmp_path)
    test = run_imgcls(
        "test",
        "-c",
        str(run / "config.yaml"),
        "--ckpt_path",
        str(run),
        *FAST,
        cwd=tmp_path,
        check=False,
    )
    export = run_imgcls(
        "export", "--ckpt", str(run), "--out", str(tmp_path / "exp"), cwd=tmp_path, check=False
    )
    for proc, what in ((test, "test on"), (export, "check the export on")):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"imgcls: error: {root}: no test/ folder"), proc.stderr
        assert f"no held-out set to {what}" in last
    assert _tree(tmp_path) == before  # no test logs in the run, no export folder


@pytest.mark.slow
def test_class_folders_renamed_after_fit_are_refused_by_resume_and_export(tmp_path: Path) -> None:
    """train/a renamed train/z: the sorted classes become [b, z], so label 0 would mean b."""
    x, y = stripes(16, 2)
    tx, ty = stripes(6, 2, seed=3)
    root = write_folder_dataset(tmp_path / "data", {"train": (x, y), "test": (tx, ty)}, ["a", "b"])
    folder_yaml = str(ROOT / "configs/data/folder.yaml")
    run_imgcls(
        "fit", "-c", folder_yaml, *FAST, "--trainer.max_epochs", "1",
        "--data.init_args.root", str(root), "--data.init_args.batch_size", "8",
        cwd=tmp_path,
    )  # fmt: skip
    run = tmp_path / "runs" / "folder-lenet5" / "version_0"
    for split in ("train", "test"):
        (root / split / "a").rename(root / split / "z")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    resume = run_imgcls(
        "fit", "-c", str(run / "config.yaml"), "--ckpt_path", "last",
        "--trainer.max_epochs", "2", *FAST,
        cwd=tmp_path, check=False,
    )  # fmt: skip
    export = run_imgcls(
        "export", "--ckpt", str(run), "--out", str(tmp_path / "exp"), cwd=tmp_path, check=False
    )
    for proc in (resume, export):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("imgcls: error: "), proc.stderr
        assert "['a', 'b']" in last and "['b', 'z']" in last, last
    assert "last.ckpt was trained on the classes ['a', 'b']" in resume.stderr
    # nothing saved changed: checkpoints, metrics.csv, the cache; no export folder
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


# ----------------------------------------------------------------------------- the cache
def test_the_cache_is_read_the_second_time_and_rebuilt_when_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = stripes(30, 3)
    tx, ty = stripes(6, 3, seed=1)
    write_folder_dataset(tmp_path, {"train": (x, y), "test": (tx, ty)}, ["a", "b", "c"])
    first = ImageFolderDataModule(root=str(tmp_path))
    assert not first.decoded.from_cache
    [cache] = _cache_files(tmp_path)
    assert first.decoded.cache_file == cache

    import imgcls.deploy.images as images

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although the cache is current")

    with monkeypatch.context() as m:
        m.setattr(images, "decode_image", no_decoding)
        second = ImageFolderDataModule(root=str(tmp_path))
    assert second.decoded.from_cache
    assert torch.equal(second.decoded.images["train"], first.decoded.images["train"])

    # Touched only: the same contents, the same cache.
    some = sorted((tmp_path / "train" / "a").iterdir())[0]
    st = some.stat()
    os.utime(some, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    third = ImageFolderDataModule(root=str(tmp_path))
    assert third.decoded.from_cache and _cache_files(tmp_path) == [cache]

    # Replaced by another image of the same byte size, its time put back (a BMP of one size
    # always has one length): the key is the contents, so the new pixels are served.
    import io

    from PIL import Image

    def bmp(value: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.full((28, 28), value, np.uint8), mode="L").save(buf, format="BMP")
        return buf.getvalue()

    some.write_bytes(bmp(5))
    fourth = ImageFolderDataModule(root=str(tmp_path))
    assert not fourth.decoded.from_cache
    st = some.stat()
    assert len(bmp(7)) == st.st_size
    some.write_bytes(bmp(7))
    os.utime(some, ns=(st.st_atime_ns, st.st_mtime_ns))
    fifth = ImageFolderDataModule(root=str(tmp_path))
    assert not fifth.decoded.from_cache
    assert _cache_files(tmp_path) == [fifth.decoded.cache_file]
    assert cache not in _cache_files(tmp_path)
    assert int((fifth.decoded.images["train"] == 7).all(dim=(1, 2, 3)).sum()) == 1


def test_a_damaged_cache_is_decoded_again(tmp_path: Path) -> None:
    x, y = stripes(12, 2)
    write_folder_dataset(tmp_path, {"train": (x, y)}, ["a", "b"])
    first = ImageFolderDataModule(root=str(tmp_path))
    assert first.decoded.cache_file is not None
    first.decoded.cache_file.write_bytes(b"half a file")
    again = ImageFolderDataModule(root=str(tmp_path))
    assert not again.decoded.from_cache
    assert torch.equal(again.decoded.images["train"], first.decoded.images["train"])


def test_where_the_root_cannot_hold_the_cache_it_goes_under_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = stripes(12, 2)
    root = write_folder_dataset(tmp_path / "data", {"train": (x, y)}, ["a", "b"])
    (root / CACHE_FOLDER).write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    dm = ImageFolderDataModule(root=str(root))
    assert dm.decoded.cache_file is not None
    assert dm.decoded.cache_file.is_relative_to(tmp_path / "xdg" / "imgcls" / "folders")
    again = ImageFolderDataModule(root=str(root))
    assert again.decoded.from_cache and again.decoded.cache_file == dm.decoded.cache_file
    assert (root / CACHE_FOLDER).read_text().startswith("a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_root_caches_under_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = stripes(12, 2)
    root = write_folder_dataset(tmp_path / "data", {"train": (x, y)}, ["a", "b"])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root.chmod(0o555)
    try:
        dm = ImageFolderDataModule(root=str(root))
        assert dm.decoded.cache_file is not None
        assert dm.decoded.cache_file.is_relative_to(tmp_path / "xdg" / "imgcls" / "folders")
        assert ImageFolderDataModule(root=str(root)).decoded.from_cache
    finally:
        root.chmod(0o755)


# ----------------------------------------------------------------------------- the chain
@pytest.mark.real_data
@pytest.mark.slow
def test_fashion_folder_fits_tests_and_exports_through_the_parity_gate(
    fashion_run: Path, fashion_export: Path
) -> None:
    metrics = list(csv.DictReader(io.StringIO((fashion_run / "metrics.csv").read_text())))
    val = [float(r["val/acc"]) for r in metrics if r.get("val/acc")]
    assert val and val[-1] > 0.6, val  # 1,800 images, 2 epochs: about 0.7
    proc = run_imgcls(
        "test",
        "-c",
        str(fashion_run / "config.yaml"),
        "--ckpt_path",
        str(fashion_run / "checkpoints" / "best.ckpt"),
        *FAST,
        cwd=fashion_run.parent.parent.parent,
    )
    acc = float(re.search(r"test/acc\s*│\s*([\d.]+)", proc.stdout).group(1))
    assert 0.6 < acc <= 1.0, proc.stdout
    meta = json.loads((fashion_export / "metadata.json").read_text())
    parity = json.loads((fashion_export / "parity.json").read_text())
    assert meta["dataset"] == "folder" and meta["class_names"] == sorted(FASHION_FOLDERS)
    assert parity["passed"] and parity["n_images"] == 500 and parity["full_test_set"]
    assert parity["fp32"]["top1_agreement"] >= 0.999
    assert abs(parity["fp32"]["onnx_accuracy"] - acc) < 0.005


@pytest.mark.real_data
@pytest.mark.slow
def test_infer_and_the_service_answer_with_the_folders_class_names(
    fashion_folder: Path, fashion_export: Path, tmp_path: Path
) -> None:
    model = fashion_export / "model.onnx"
    coats = fashion_folder / "test" / "coat"
    proc = run_imgcls("infer", "--model", str(model), str(coats), cwd=tmp_path)
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == len(list(coats.iterdir()))
    assert {r["class_name"] for r in rows} <= set(FASHION_FOLDERS)
    assert sum(r["class_name"] == "coat" for r in rows) > len(rows) / 3
    for r in rows:
        assert r["class_name"] == sorted(FASHION_FOLDERS)[int(r["label"])]

    png = sorted(coats.iterdir())[0].read_bytes()
    with (
        running_server(model, "--device", "cpu", log=tmp_path / "serve.log") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        r = client.post("/predict", content=png, headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["class_name"] == rows[0]["class_name"]  # infer's answer for the same file
        assert body["class_name"] == sorted(FASHION_FOLDERS)[body["label"]]
        meta = client.get("/metadata").json()
        assert meta["class_names"] == sorted(FASHION_FOLDERS)


@pytest.mark.real_data
@pytest.mark.slow
def test_four_classes_with_other_names_train_and_export(
    four_class_folder: Path, tmp_path: Path
) -> None:
    # 28x28 images are taken as they are whatever the framing; the metadata records it, so the
    # runtime's --preprocess auto frames other sizes the same way.
    run = _fit(four_class_folder, tmp_path, "--data.init_args.framing", "fashion_mnist")
    out = tmp_path / "export"
    run_imgcls(
        "export",
        "--ckpt",
        str(run),
        "--out",
        str(out),
        "--int8",
        "--triton",
        "triton",
        cwd=tmp_path,
    )
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["class_names"] == ["Bag", "boot", "legwear", "open shoe"]
    assert meta["dataset"] == "folder" and meta["framing"] == "fashion_mnist"
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and parity["n_images"] == 300
    assert parity["fp32"]["onnx_accuracy"] > 0.8  # four easy classes
    assert parity["int8"]["quantization"]["calibration"]["split"] == "validation"
    card = (out / "README.md").read_text()
    assert "open shoe" in card and f"the folder `{four_class_folder}`" in card
    assert "- training images: 1,200" in card
    assert f"- validation split: the 200 images of `{four_class_folder}/val/`" in card
    assert f"- test set: the 300 images of `{four_class_folder}/test/`" in card
    assert f"28×28 greyscale, like the images of `{four_class_folder}/train/`" in card
    assert "`--preprocess auto` with Fashion-MNIST's framing" in card
    assert "the model's metadata records the folder's framing" in card
    triton = tmp_path / "triton" / "export"
    assert (triton / "labels.txt").read_text().split("\n")[:4] == meta["class_names"]
    assert (triton / "config.pbtxt").read_text().count("dims: [ 4 ]") == 2  # logits, probs
