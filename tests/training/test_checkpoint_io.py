"""The checkpoint's digest covers everything a resume reads (weights, optimiser moments and
steps, schedulers, loops, callbacks), not only the weights; checkpoints that carry the
weights' digest only are still read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from imgcls.training.checkpoint_io import (
    DIGEST_KEY,
    FULL_DIGEST_KEY,
    CheckpointError,
    checkpoint_digest,
    load_checkpoint,
    load_classifier,
    state_digest,
)
from tests.helpers import FAST, run_imgcls, write_tiny_dataset

SMALL = ["--data.val_size", "100", "--data.batch_size", "50"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The tiny MNIST files (as conftest's ``tiny_data``), shared by this module's runs, and
    the environment that pins them for a subprocess."""
    work = tmp_path_factory.mktemp("tiny")
    specs = {"mnist": write_tiny_dataset(work / "data", "MNIST")}
    (work / "specs.json").write_text(json.dumps(specs))
    return work / "data", {"IMGCLS_DATASET_SPECS": str(work / "specs.json")}


def fit(cwd: Path, tiny: tuple[Path, dict[str, str]], *args: str) -> Any:
    data, env = tiny
    return run_imgcls(
        "fit", *FAST, *SMALL, "--data.data_dir", str(data), *args, cwd=cwd, env=env, check=False
    )


@pytest.fixture(scope="module")
def trained(tiny: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``last.ckpt`` of a 1-epoch LeNet-5 run on the tiny data (Adam: moments to flip)."""
    work = tmp_path_factory.mktemp("run")
    proc = fit(work, tiny, "--trainer.max_epochs", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = work / "runs" / "mnist-lenet5" / "version_0" / "checkpoints" / "last.ckpt"
    assert path.is_file()
    return path


@pytest.fixture()
def last_ckpt(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained ``last.ckpt`` that the test may change or resume."""
    copy = tmp_path / "last.ckpt"
    shutil.copyfile(trained, copy)
    return copy


def raw(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def flip_one_byte(t: torch.Tensor) -> None:
    t.reshape(-1).view(torch.uint8)[1] ^= 0x10  # in place: a low byte of the first value


def tampered_moment(last_ckpt: Path, tmp_path: Path) -> tuple[Path, float, float]:
    ckpt = raw(last_ckpt)
    state = ckpt["optimizer_states"][0]["state"]
    exp_avg = state[sorted(state)[0]]["exp_avg"]
    before = float(exp_avg.reshape(-1)[0])
    flip_one_byte(exp_avg)
    bad = tmp_path / "moment-flipped.ckpt"
    torch.save(ckpt, bad)  # the digests recorded at saving are kept: not recomputed
    return (
        bad,
        before,
        float(raw(bad)["optimizer_states"][0]["state"][sorted(state)[0]]["exp_avg"].reshape(-1)[0]),
    )


def test_the_full_digest_is_recorded_and_survives_save_and_load(
    last_ckpt: Path, tmp_path: Path
) -> None:
    ckpt = raw(last_ckpt)
    assert {"optimizer_states", "lr_schedulers", "loops", "callbacks"} <= ckpt.keys()
    assert ckpt[FULL_DIGEST_KEY] == checkpoint_digest(ckpt)
    assert ckpt[DIGEST_KEY] == state_digest(ckpt["state_dict"])
    again = tmp_path / "again.ckpt"
    torch.save(ckpt, again)
    assert checkpoint_digest(raw(again)) == ckpt[FULL_DIGEST_KEY]
    # each part a resume reads counts: change one value of each, the digest changes
    for change in (
        lambda c: flip_one_byte(
            next(iter(c["optimizer_states"][0]["state"].values()))["exp_avg_sq"]
        ),
        lambda c: c["optimizer_states"][0]["param_groups"][0].__setitem__("lr", 0.0011),
        lambda c: c["loops"]["fit_loop"]["epoch_progress"]["current"].__setitem__("completed", 7),
        lambda c: c.__setitem__("global_step", c["global_step"] + 1),
    ):
        c = raw(last_ckpt)
        change(c)
        assert checkpoint_digest(c) != ckpt[FULL_DIGEST_KEY]


def test_a_flipped_byte_in_an_optimizer_moment_is_refused_by_a_resume(
    last_ckpt: Path, tiny: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bad, before, after = tampered_moment(last_ckpt, tmp_path)
    assert before != after  # the moment really changed...
    assert state_digest(raw(bad)["state_dict"]) == raw(bad)[DIGEST_KEY]  # ...the weights did not
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(bad, resume=True)
    assert str(e.value).startswith(f"{bad}: the checkpoint does not match its recorded sha256")
    # an evaluation or an export reads the weights only, and they are intact
    assert load_checkpoint(bad)["epoch"] == raw(bad)["epoch"]
    proc = fit(tmp_path, tiny, "--trainer.max_epochs", "2", "--ckpt_path", str(bad))
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("imgcls: error: ")]
    assert len(errors) == 1 and str(bad) in errors[0] and "use another checkpoint" in errors[0]
    assert not (tmp_path / "runs").exists()  # refused before anything was started


def test_an_unmodified_checkpoint_resumes_and_loads(
    last_ckpt: Path, tiny: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    assert load_checkpoint(last_ckpt)["epoch"] == 0
    assert load_classifier(last_ckpt).net is not None
    proc = fit(tmp_path, tiny, "--trainer.max_epochs", "2", "--ckpt_path", str(last_ckpt))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (written,) = (tmp_path / "runs").glob("*/version_*/checkpoints/last.ckpt")
    resumed = raw(written)
    assert resumed["epoch"] == 1 and resumed[FULL_DIGEST_KEY] == checkpoint_digest(resumed)


def test_a_checkpoint_with_the_weights_digest_only_is_still_read(
    last_ckpt: Path, tmp_path: Path
) -> None:
    """As checkpoints written before the full digest are: their weights are still verified."""
    ckpt = raw(last_ckpt)
    del ckpt[FULL_DIGEST_KEY]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    assert load_checkpoint(old)["epoch"] == 0
    model = load_classifier(old)
    name = next(iter(ckpt["state_dict"]))
    assert torch.equal(model.state_dict()[name], ckpt["state_dict"][name])

    flip_one_byte(ckpt["state_dict"][name])
    flipped = tmp_path / "old-flipped.ckpt"
    torch.save(ckpt, flipped)
    with pytest.raises(CheckpointError, match="the weights do not match their recorded sha256"):
        load_checkpoint(flipped)
