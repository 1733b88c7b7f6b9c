"""``imgcls.runs``: the run layout and the one resolver of ``best | last | <folder> | <file>``."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgcls.errors import CheckpointError, RunNotFoundError
from imgcls.runs import (
    experiment_name,
    net_label,
    newest_run,
    resolve_checkpoint,
    run_of,
    runs,
)


def _experiment(tmp_path: Path, versions: dict[int, tuple[str, ...]]) -> Path:
    exp = tmp_path / "runs" / "mnist-lenet5"
    for v, files in versions.items():
        ck = exp / f"version_{v}" / "checkpoints"
        ck.mkdir(parents=True)
        for name in files:
            (ck / name).write_bytes(b"x")
    (exp / "version_notes").mkdir()  # not a run
    return exp


def test_resolve_in_run_and_experiment_dirs(tmp_path: Path) -> None:
    both = ("best.ckpt", "last.ckpt")
    exp = _experiment(tmp_path, {0: both, 2: both, 10: both})
    assert [r.name for r in runs(exp)] == ["version_0", "version_2", "version_10"]
    # numeric order, not text order
    assert resolve_checkpoint(exp) == exp / "version_10" / "checkpoints" / "best.ckpt"
    assert (
        resolve_checkpoint(exp / "version_2", "last")
        == exp / "version_2" / "checkpoints" / "last.ckpt"
    )
    file = exp / "version_0" / "checkpoints" / "best.ckpt"
    assert resolve_checkpoint(file) == file
    assert (
        resolve_checkpoint("best", experiment_dir=exp) == exp / "version_10/checkpoints/best.ckpt"
    )
    assert resolve_checkpoint(exp / "version_0" / "checkpoints") == file  # a folder of checkpoints
    with pytest.raises(RunNotFoundError, match="version_3"):
        resolve_checkpoint(exp / "version_3")
    with pytest.raises(RunNotFoundError, match="names a checkpoint of an experiment"):
        resolve_checkpoint("best")


def test_runs_without_the_checkpoint_do_not_shadow_older_ones(tmp_path: Path) -> None:
    # version_1 failed before its first epoch, version_2 holds only last.ckpt
    exp = _experiment(tmp_path, {0: ("best.ckpt", "last.ckpt"), 1: (), 2: ("last.ckpt",)})
    assert newest_run(exp) == exp / "version_0"
    assert newest_run(exp, "last") == exp / "version_2"
    assert newest_run(exp, None) == exp / "version_2"
    assert resolve_checkpoint("best", experiment_dir=exp).parent.parent.name == "version_0"
    assert resolve_checkpoint("last", experiment_dir=exp).parent.parent.name == "version_2"


def test_one_error_for_a_missing_run(tmp_path: Path) -> None:
    """Every spelling fails with the same kind of message: what it looked for, what to do."""
    empty = tmp_path / "runs" / "mnist-convnet"
    empty.mkdir(parents=True)
    cases = ["best", empty, tmp_path / "nothing-here", empty / "version_0"]
    (empty / "version_0").mkdir()
    for spec in cases:
        with pytest.raises(RunNotFoundError) as e:
            resolve_checkpoint(spec, experiment_dir=empty)
        assert isinstance(e.value, CheckpointError)
        assert str(e.value).startswith(f"{spec}: no checkpoint found (looked for ")
        assert "train a run first" in str(e.value)


def test_names() -> None:
    assert experiment_name("mnist", "lenet5", None) == "mnist-lenet5"
    assert experiment_name("fashion_mnist", "mlp", {"hidden": [32]}) == "fashion_mnist-mlp-32"
    assert net_label("mlp", {"hidden": [128, 64]}) == "mlp-128-64"
    assert net_label("mlp", {"hidden": []}) == "mlp-linear"
    assert net_label("convnet", {"channels": [32, 64]}) == "convnet"


def test_run_of(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "mnist-lenet5" / "version_7"
    assert run_of(run / "checkpoints" / "best.ckpt") == run
    assert run_of(tmp_path / "model.ckpt") is None
    assert run_of(tmp_path / "checkpoints" / "best.ckpt") is None
