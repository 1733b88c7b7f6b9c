"""Data layer: provisioning, verification errors, splits, batches (generated IDX files), plus
marked real-data checks that run whenever the real files are present."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from imgcls.data import FashionMNISTDataModule, MNISTDataModule
from imgcls.data.provision import (
    DataError,
    default_root,
    ensure_dataset,
    fetch,
    get_spec,
    raw_dir,
    verify,
)
from imgcls.data.transforms import affine, random_affine, random_erase, random_shift, translate
from tests.helpers import write_tiny_dataset


def _copy_source(src_root: Path):
    """A provisioning source that serves the files of another root (stands in for npm / apt)."""

    def source(spec, root):
        for f in spec.files:
            yield f.name, (raw_dir(src_root, spec.name) / f.name).read_bytes()

    return source


# ----------------------------------------------------------------------------- provisioning
def test_default_root_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("IMGCLS_DATA", str(tmp_path / "d"))
    assert default_root() == tmp_path / "d"
    monkeypatch.delenv("IMGCLS_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert default_root() == tmp_path / "c" / "imgcls" / "data"


def test_fetch_from_local_folder_of_gz_files(tiny_data, tmp_path):
    import gzip

    dst = tmp_path / "dst"
    raw = raw_dir(dst, "mnist")
    raw.mkdir(parents=True)
    for f in get_spec("mnist").files:  # a user drops the .gz files from the official site
        (raw / (f.name + ".gz")).write_bytes(
            gzip.compress((raw_dir(tiny_data, "mnist") / f.name).read_bytes())
        )
    out = fetch("mnist", dst, log=lambda s: None)
    assert out == raw
    for f in get_spec("mnist").files:
        assert hashlib.sha256((raw / f.name).read_bytes()).hexdigest() == f.sha256
    verify(dst, "mnist")  # and it is remembered as verified
    assert set(json.loads((raw / ".verified.json").read_text())) == {
        f.name for f in get_spec("mnist").files
    }


def test_fetch_rejects_a_source_with_wrong_bytes(tiny_data, tmp_path):
    bad_root = tmp_path / "bad"
    write_tiny_dataset(bad_root, "MNIST", n_train=600, n_test=200)
    p = raw_dir(bad_root, "mnist") / "t10k-images-idx3-ubyte"
    blob = bytearray(p.read_bytes())
    blob[5000] ^= 0xFF
    p.write_bytes(bytes(blob))
    # The generated files are deterministic, so the only difference is the flipped byte.
    with pytest.raises(DataError) as e:
        fetch(
            "mnist",
            tmp_path / "dst",
            sources=[("broken mirror", _copy_source(bad_root))],
            log=lambda s: None,
        )
    assert "t10k-images-idx3-ubyte" in str(e.value) and "sha256" in str(e.value)
    # Nothing bad landed at the final path; the three good files did.
    assert not (raw_dir(tmp_path / "dst", "mnist") / "t10k-images-idx3-ubyte").exists()
    assert (raw_dir(tmp_path / "dst", "mnist") / "train-images-idx3-ubyte").exists()


def test_no_source_names_three_ways(tiny_data, tmp_path):
    with pytest.raises(DataError) as e:
        fetch("fashion_mnist", tmp_path / "empty", sources=[], log=lambda s: None)
    msg = str(e.value)
    assert "1." in msg and "2." in msg and "3." in msg
    assert "apt-get download dataset-fashion-mnist" in msg and "FashionMNIST/raw" in msg
    assert "train-images-idx3-ubyte" in msg  # names the missing files


@pytest.mark.parametrize(
    ("damage", "expect"),
    [
        ("truncate", "truncated"),
        ("magic", "magic number"),
        ("flip", "sha256 mismatch"),
        ("delete", "missing"),
    ],
)
def test_corrupted_file_errors_name_file_and_fix(tiny_data, damage, expect):
    ensure_dataset("mnist", tiny_data)
    p = raw_dir(tiny_data, "mnist") / "train-images-idx3-ubyte"
    blob = bytearray(p.read_bytes())
    if damage == "truncate":
        p.write_bytes(bytes(blob[: len(blob) // 2]))
    elif damage == "magic":
        blob[3] = 0x01
        p.write_bytes(bytes(blob))
    elif damage == "flip":  # same size, one pixel changed: only the hash can tell
        blob[20000] ^= 0x01
        p.write_bytes(bytes(blob))
    else:
        p.unlink()
    with pytest.raises(DataError) as e:
        verify(tiny_data, "mnist")
    assert expect in str(e.value)
    assert str(p) in str(e.value)
    assert "imgcls data fetch --dataset mnist" in str(e.value)
    # The data module refuses it before any training, with the same message.
    if damage != "delete":
        dm = MNISTDataModule(data_dir=str(tiny_data), val_size=100)
        with pytest.raises(DataError, match=expect):
            dm.prepare_data()


def test_flipped_byte_detected_even_after_cached_verification(tiny_data):
    verify(tiny_data, "mnist")  # stamps the files as verified
    p = raw_dir(tiny_data, "mnist") / "t10k-images-idx3-ubyte"
    blob = bytearray(p.read_bytes())
    blob[-1] ^= 0x10
    p.write_bytes(bytes(blob))  # new mtime -> the stamp no longer matches -> re-hashed
    with pytest.raises(DataError, match="sha256 mismatch"):
        verify(tiny_data, "mnist")


def test_concurrent_fetch_processes(tiny_data, tmp_path):
    """Two `imgcls data fetch` at once (two DDP ranks, two terminals).

    Both succeed and the files verify.
    """
    dst = tmp_path / "shared"
    raw = raw_dir(dst, "mnist")
    raw.mkdir(parents=True)
    for f in get_spec("mnist").files:  # .gz copies to decompress: makes the fetch take real work
        import gzip

        (raw / (f.name + ".gz")).write_bytes(
            gzip.compress((raw_dir(tiny_data, "mnist") / f.name).read_bytes())
        )
    cmd = [
        sys.executable,
        "-m",
        "imgcls",
        "data",
        "fetch",
        "--dataset",
        "mnist",
        "--data_dir",
        str(dst),
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    verify(dst, "mnist")
    assert not list(raw.glob(".*.tmp")), "no temp files left behind"


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="fashion_mnist"):
        get_spec("cifar")


# ----------------------------------------------------------------------------- splits
@pytest.fixture()
def dm_factory(tiny_data):
    def make(**kw):
        dm = MNISTDataModule(data_dir=str(tiny_data), **kw)
        dm.prepare_data()
        dm.setup("fit")
        dm.setup("test")
        return dm

    return make


def _ids(ds) -> set[bytes]:
    return {bytes(img.numpy().tobytes()) for img in ds.images}


def test_split_sizes_disjoint_and_seeded(dm_factory):
    dm = dm_factory(val_size=100, seed=1)
    assert len(dm.val_set) == 100 and len(dm.train_set) == 500
    tr, va = dm.split_indices(dm._load_split(True)[1])
    assert len(np.intersect1d(tr, va)) == 0 and len(np.union1d(tr, va)) == 600
    tr2, va2 = dm_factory(val_size=100, seed=1).split_indices(dm._load_split(True)[1])
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    _, va3 = dm_factory(val_size=100, seed=2).split_indices(dm._load_split(True)[1])
    assert not np.array_equal(va, va3)


def test_val_split_is_stratified(dm_factory):
    dm = dm_factory(val_size=0.25)
    assert len(dm.val_set) == 150
    counts = torch.bincount(dm.val_set.labels, minlength=10)
    assert counts.tolist() == [15] * 10  # 60 per class in the generated train set, 25% each


def test_train_subset_is_class_balanced(dm_factory):
    dm = dm_factory(val_size=100, train_subset=105, seed=3)
    assert len(dm.train_set) == 105
    counts = torch.bincount(dm.train_set.labels, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 105
    other = dm_factory(val_size=100, train_subset=105, seed=4)
    assert _ids(dm.train_set) != _ids(other.train_set)
    assert not _ids(dm.train_set) & _ids(dm.val_set)


def test_test_set_untouched_and_in_order(dm_factory, tiny_data):
    from torchvision.datasets import MNIST

    dm = dm_factory(val_size=100, train_subset=50)
    reference = MNIST(str(tiny_data), train=False)  # torchvision reads the same raw folder
    assert torch.equal(dm.test_set.images[:, 0], reference.data)
    assert torch.equal(dm.test_set.labels, reference.targets.long())
    loader = dm.test_dataloader()
    n = sum(len(y) for _, y in loader)
    assert n == 200 and loader.drop_last is False


@pytest.mark.parametrize(
    "kw",
    [
        {"val_size": 600},
        {"val_size": -1},
        {"val_size": 1.5},
        {"train_subset": 0},
        {"val_size": 100, "train_subset": 501},
    ],
)
def test_out_of_range_arguments_fail_early(tiny_data, kw):
    with pytest.raises(ValueError, match="val_size|train_subset"):
        MNISTDataModule(data_dir=str(tiny_data), **kw)


# ----------------------------------------------------------------------------- batches
def test_batches_are_normalised_uint8_turned_float(dm_factory):
    dm = dm_factory(val_size=100, batch_size=32)
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (32, 1, 28, 28) and y.dtype == torch.int64
    xn, yn = dm.on_after_batch_transfer((x, y), 0)
    assert xn.dtype == torch.float32
    assert xn.min() >= (0 - dm.mean) / dm.std - 1e-5 and xn.max() <= (1 - dm.mean) / dm.std + 1e-5
    expected = (x.float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(xn, expected, atol=1e-6)


def test_translate_exact_with_zero_fill():
    x = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 4, 4)
    right = translate(x, 0, 1)
    assert torch.equal(right[0, 0, :, 0], torch.zeros(4))
    assert torch.equal(right[0, 0, :, 1:], x[0, 0, :, :3])
    per_image = translate(x.repeat(2, 1, 1, 1), torch.tensor([0, 1]), torch.tensor([1, 0]))
    assert torch.equal(per_image[0], right[0])
    assert torch.equal(per_image[1, 0, 1:], x[0, 0, :3]) and per_image[1, 0, 0].abs().sum() == 0


def test_random_shift_preserves_mass_within_bounds():
    x = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 10:18, 10:18] = 255  # centred block: any shift of <= 3 keeps it whole
    y = random_shift(x, 3)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    assert torch.equal(y.float().sum((1, 2, 3)), x.float().sum((1, 2, 3)))
    assert not torch.equal(y, x)  # 64 images: some moved


def test_affine_rotates_counter_clockwise_and_magnifies_about_the_centre():
    x = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    x[0, 0, 5, 20] = 255  # upper right
    quarter = affine(x, torch.tensor([math.pi / 2]), torch.tensor([1.0]))
    assert quarter.dtype == torch.float32  # uint8 in, [0, 1] floats out (normalize's input)
    # a quarter turn on the pixel grid is exact: torch.rot90's counter-clockwise turn
    assert torch.allclose(quarter, torch.rot90(x.float() / 255, 1, (2, 3)), atol=1e-5)
    assert quarter[0, 0, 7, 5] > 0.99  # the pixel went to the upper left
    assert torch.allclose(affine(x, torch.zeros(1), torch.ones(1)), x.float() / 255, atol=1e-6)
    block = torch.zeros(2, 1, 28, 28)
    block[:, :, 12:16, 12:16] = 1.0  # 4x4, centred
    out = affine(block, torch.zeros(2), torch.tensor([2.0, 0.5]))
    assert torch.equal(out[0, 0, 11:17, 11:17], torch.ones(6, 6))  # 8x8 now, bilinear rim
    assert (out[0, 0, 10:18, 10:18] > 0.5).all() and out[0, 0, 9:19, 9:19].sum() == 64  # 4² x 2²
    assert torch.equal(out[1, 0, 13:15, 13:15], torch.ones(2, 2)) and out[1].sum() == 4  # 2x2


def test_random_affine_draws_within_its_bounds():
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    bar = ((yy - 13.5).abs() < 1) & ((xx - 13.5).abs() < 9)  # horizontal, centred
    x = bar.to(torch.uint8).mul(255).expand(500, 1, 28, 28)
    y = random_affine(x, 10, 0.0, generator=g)[:, 0]
    # the bar's angle from its second moments
    m = y.sum((1, 2))
    cy, cx = (y * yy).sum((1, 2)) / m, (y * xx).sum((1, 2)) / m
    dy, dx = yy - cy[:, None, None], xx - cx[:, None, None]
    mxx, myy, mxy = (y * dx * dx).sum((1, 2)), (y * dy * dy).sum((1, 2)), (y * dx * dy).sum((1, 2))
    deg = torch.rad2deg(0.5 * torch.atan2(2 * mxy, mxx - myy)).abs()
    assert deg.max() <= 10.5 and deg.min() < 1 and (deg > 8).any()  # spread over [0, 10]
    assert torch.allclose(m / m[0].new_tensor(bar.sum().item()), torch.ones(500), atol=0.03)
    disk = ((yy - 13.5) ** 2 + (xx - 13.5) ** 2 < 36).float().expand(500, 1, 28, 28)
    ratio = random_affine(disk, 0, 0.2, generator=g).sum((1, 2, 3)) / disk[0].sum()
    assert ratio.min() > 0.8**2 - 0.05 and ratio.max() < 1.2**2 + 0.05  # area scales by s²
    assert ratio.min() < 0.75 and ratio.max() > 1.3
    assert random_affine(x, 0, 0.0) is x  # off: untouched
    again = random_affine(x, 10, 0.1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, random_affine(x, 10, 0.1, generator=torch.Generator().manual_seed(1)))


def test_rotate_and_scale_only_in_training(tiny_data):
    dm = MNISTDataModule(
        data_dir=str(tiny_data), val_size=100, rotate_augment=30, scale_augment=0.2, shift_augment=2
    )
    x = torch.zeros(16, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 6:22, 12:16] = 255  # an upright stroke
    batch = (x, torch.zeros(16, dtype=torch.long))
    expected = (x.float() / 255 - dm.mean) / dm.std
    assert torch.allclose(dm.on_after_batch_transfer(batch, 0)[0], expected, atol=1e-5)
    dm.trainer = type("T", (), {"training": True})()
    out = dm.on_after_batch_transfer(batch, 0)[0]
    assert out.dtype == torch.float32 and out.shape == x.shape
    background = -dm.mean / dm.std  # zero fill, normalised like a blank pixel
    assert torch.isclose(out, torch.tensor(background), atol=1e-5).float().mean() > 0.5
    assert not torch.allclose(out, expected, atol=1e-3)
    assert (out.amax((1, 2, 3)) <= (1 - dm.mean) / dm.std + 1e-4).all()  # no overshoot
    with pytest.raises(ValueError, match="degrees"):
        MNISTDataModule(data_dir=str(tiny_data), val_size=100, rotate_augment=180)
    with pytest.raises(ValueError, match="0.1: 90-110 %"):
        MNISTDataModule(data_dir=str(tiny_data), val_size=100, scale_augment=-0.1)


def test_random_erase_one_clipped_rectangle_per_image():
    torch.manual_seed(0)
    x = torch.ones(2000, 1, 28, 28)
    y = random_erase(x, p=0.5, value=0.0)
    erased = (y == 0).squeeze(1)  # (B, H, W)
    hit = erased.any((1, 2))
    assert 0.45 < hit.float().mean() < 0.55  # p per image
    frac = erased[hit].float().mean((1, 2))
    assert (
        frac.min() >= 1 / 784 and frac.max() <= 0.34 + 2 / 28
    )  # 2-33 % of the area, after rounding
    rows, cols = erased[hit].any(2), erased[hit].any(1)  # each erased region is one rectangle:
    assert torch.equal(erased[hit], rows[:, :, None] & cols[:, None, :])  # its rows x its columns
    assert torch.equal(random_erase(x, p=0.0), x) and torch.equal(
        x, torch.ones_like(x)
    )  # input untouched


def test_random_erase_only_in_training(tiny_data):
    dm = MNISTDataModule(data_dir=str(tiny_data), val_size=100, random_erase=1.0)
    batch = (torch.full((8, 1, 28, 28), 255, dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    hi = (1 - dm.mean) / dm.std
    assert torch.allclose(
        dm.on_after_batch_transfer(batch, 0)[0], torch.tensor(hi)
    )  # no trainer: eval path
    dm.trainer = type("T", (), {"training": True})()
    x = dm.on_after_batch_transfer(batch, 0)[0]
    assert ((x == 0).flatten(1).any(1)).all() and torch.isclose(
        x, torch.tensor(hi)
    ).any()  # every image has a hole at the mean
    with pytest.raises(ValueError, match="probability"):
        MNISTDataModule(data_dir=str(tiny_data), val_size=100, random_erase=1.5)


def test_predict_dir_of_images(tiny_data, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "b.png")  # colour, other size
    dm = MNISTDataModule(data_dir=str(tiny_data), val_size=100, predict_dir=str(folder))
    with pytest.warns(UserWarning, match="resized"):
        dm.setup("predict")
    x, y = next(iter(dm.predict_dataloader()))
    assert x.shape == (2, 1, 28, 28) and x[0].float().mean() == 200 and (y == -1).all()
    (folder / "b.png").unlink()
    (folder / "c.png").write_text("not an image")
    with pytest.raises(DataError, match=r"c\.png"):
        MNISTDataModule(data_dir=str(tiny_data), val_size=100, predict_dir=str(folder)).setup(
            "predict"
        )


# ----------------------------------------------------------------------------- real data
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _shards(n: int, world: int) -> list[list[int]]:
    from imgcls.data.datamodule import EvalShardSampler, TensorImageDataset

    ds = TensorImageDataset(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.zeros(n).long())
    samplers = [EvalShardSampler(ds, world, rank) for rank in range(world)]
    shards = [list(s) for s in samplers]
    assert [len(s) for s in samplers] == [len(s) for s in shards]
    return shards


@pytest.mark.parametrize(("n", "world"), [(10000, 2), (1001, 2), (7, 3), (3, 3), (0, 2)])
def test_ddp_evaluation_shards_hold_every_image_once(n, world):
    from torch.utils.data import DistributedSampler

    from imgcls.data.datamodule import EvalShardSampler

    shards = _shards(n, world)
    assert sorted(i for shard in shards for i in shard) == list(range(n))  # no repeat, no loss
    assert all(shard == sorted(shard) for shard in shards)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    # A DistributedSampler already: Lightning leaves it in place of its own padded one.
    assert issubclass(EvalShardSampler, DistributedSampler)


def test_ddp_evaluation_of_fewer_images_than_processes_is_refused():
    from imgcls.errors import ConfigError

    with pytest.raises(ConfigError, match="2 image.* on 3 processes"):
        _shards(2, 3)


@pytest.mark.real_data
@pytest.mark.parametrize(
    ("dataset", "root_fixture"),
    [("mnist", "real_data_root"), ("fashion_mnist", "real_fashion_root")],
)
def test_real_files_load_bit_identical_to_torchvision(dataset, root_fixture, request):
    """imgcls reads IDX with its own reader (imgcls.deploy.idx); torchvision's data set
    classes read the same raw folder: every image and label of both splits is the same."""
    from torchvision.datasets import MNIST, FashionMNIST

    root = request.getfixturevalue(root_fixture)
    module, reference = {
        "mnist": (MNISTDataModule, MNIST),
        "fashion_mnist": (FashionMNISTDataModule, FashionMNIST),
    }[dataset]
    dm = module(data_dir=str(root), val_size=5000)
    dm.setup("fit")
    dm.setup("test")
    train, test = reference(str(root), train=True), reference(str(root), train=False)
    assert dm.test_set.images.dtype == test.data.dtype == torch.uint8
    assert torch.equal(dm.test_set.images[:, 0], test.data)
    assert torch.equal(dm.test_set.labels, test.targets.long())
    tr, va = dm.split_indices(train.targets)
    assert len(tr) + len(va) == len(train.data) == 60000
    assert torch.equal(dm.train_set.images[:, 0], train.data[tr])
    assert torch.equal(dm.val_set.images[:, 0], train.data[va])
    assert torch.equal(dm.train_set.labels, train.targets[tr].long())
    assert torch.equal(dm.val_set.labels, train.targets[va].long())


@pytest.mark.real_data
def test_real_mnist(real_data_root):
    dm = MNISTDataModule(data_dir=str(real_data_root), val_size=0)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.train_set) == 60000 and len(dm.test_set) == 10000
    assert torch.bincount(dm.train_set.labels).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(dm.test_set.labels).tolist() == MNIST_TEST_COUNTS
    px = dm.train_set.images.float() / 255
    assert px.mean().item() == pytest.approx(0.1307, abs=1e-4)
    assert px.std().item() == pytest.approx(0.3081, abs=1e-4)


@pytest.mark.real_data
def test_real_fashion_mnist(real_fashion_root):
    dm = FashionMNISTDataModule(data_dir=str(real_fashion_root), val_size=5000, train_subset=1000)
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.val_set) == 5000 and len(dm.train_set) == 1000 and len(dm.test_set) == 10000
    assert torch.bincount(dm.train_set.labels).tolist() == [100] * 10
    assert torch.bincount(dm.test_set.labels).tolist() == [1000] * 10
    assert torch.bincount(dm.val_set.labels).tolist() == [500] * 10  # 6,000 per class, stratified
    px = dm.test_set.images.float() / 255
    assert px.mean().item() == pytest.approx(0.2868, abs=1e-3)
    assert dm.class_names[9] == "Ankle boot"
