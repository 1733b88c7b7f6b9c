"""The shipped tune files pass every check a study makes before its first trial."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

from imgcls.tune.spec import load_spec
from imgcls.tune.study import overrides, prepare
from tests.helpers import CONFIGS_DIR

TUNE_FILES = sorted((CONFIGS_DIR / "tune").glob("*.yaml"))


@pytest.mark.parametrize("path", TUNE_FILES, ids=[p.stem for p in TUNE_FILES])
def test_shipped_tune_file_is_ready(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["imgcls"])
    monkeypatch.chdir(tmp_path)
    spec = load_spec([str(path)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = prepare(spec, ["--trainer.max_epochs", "1"], None, None, None)
    experiment = {"lenet5": "mnist-lenet5", "fashion_convnet": "fashion_mnist-convnet"}[path.stem]
    assert s.folder == Path("runs") / experiment / "tune" / path.stem
    assert s.storage_url == f"sqlite:///runs/{experiment}/tune/{path.stem}/study.db"
    assert spec.metric == "val/acc" and spec.direction == "maximize"
    assert len(spec.space) >= 3
    # a searched net argument is merged into the config's net_args, passed whole
    if any(p.key.startswith("model.net_args.") for p in spec.space):
        args = overrides({"model.net_args.hidden": 256}, s.base_net_args)
        assert args == ['--model.net_args={"hidden": 256}']
