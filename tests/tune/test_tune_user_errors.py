"""Bad input to ``imgcls tune``: one line ``imgcls: error: …`` and exit status 2, before any
trial runs (no run folder, no study). In-process, through the entry point a user's shell
calls, to keep the cases to a fraction of a second each."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

from imgcls.__main__ import main
from tests.helpers import CONFIGS_DIR
from tests.tune.conftest import trial_args, write_tune_file

LR = "model.scheduler.init_args.max_lr"
GOOD = {LR: {"low": 0.001, "high": 0.01}}


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "argv", ["imgcls"])  # LightningCLI reads it too
    monkeypatch.chdir(tmp_path)


def _tune(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with warnings.catch_warnings():  # Lightning's own warnings are not what is tested here
        warnings.simplefilter("ignore")
        code = main(["tune", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert not list(tmp_path.glob("runs/*/version_*")), "a trial ran"
    assert len(err) == 1, err
    return code, err[0]


CASES = [
    ({"model.nope.lr": [1, 2]}, {}, [], "unknown key model.nope.lr"),
    ({"model.net_args.widthz": [8, 16]}, {}, [], "unknown key model.net_args.widthz"),
    ({LR: {"low": 0.01, "high": 0.001}}, {}, [], "empty range (low 0.01 >= high 0.001)"),
    ({LR: []}, {}, [], "an empty list of choices"),
    ({LR: {"low": 0, "high": 1, "log": True}}, {}, [], "a log range needs low > 0"),
    (GOOD, {"metric": "val/accuracy"}, [], "metric 'val/accuracy' is never logged"),
    (GOOD, {"metric": "train/acc"}, [], "metric 'train/acc' is never logged"),
    (GOOD, {}, ["--data.val_size", "0"], "trains without validation"),
    (GOOD, {"pruner": "sometimes"}, [], "pruner: expected {name: median"),
    (GOOD, {}, [f"--{LR}", "0.1"], f"{LR} is searched by the tune file and also given"),
    (GOOD, {}, ["--trainer.max_epochz", "2"], "imgcls fit refuses the trials' config"),
]


@pytest.mark.parametrize(("space", "keys", "extra", "message"), CASES)
def test_bad_tune_input_is_one_line_before_any_trial(
    space, keys, extra, message, tiny, tmp_path, capsys, monkeypatch
):
    data, env = tiny
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    tune_file = write_tune_file(tmp_path / "bad.yaml", space, **keys)
    code, line = _tune(tmp_path, capsys, "-c", str(tune_file), *trial_args(data), *extra)
    assert code == 2
    assert line.startswith("imgcls: error: ") and message in line, line


def test_unreachable_storage_is_one_line_before_any_trial(tiny, tmp_path, capsys, monkeypatch):
    import socket

    data, env = tiny
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://tuner:secret@127.0.0.1:{port}/studies"
    tune_file = write_tune_file(tmp_path / "t.yaml", GOOD)
    code, line = _tune(tmp_path, capsys, "-c", str(tune_file), "--storage", url, *trial_args(data))
    assert code == 2
    assert line.startswith("imgcls: error: cannot open the study storage ")
    assert f"postgresql+psycopg://tuner:***@127.0.0.1:{port}/studies" in line
    assert "secret" not in line


def test_missing_tune_file_and_a_fit_config_given_as_one(tmp_path, capsys):
    code, line = _tune(tmp_path, capsys, "-c", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: no such tune file" in line
    code, line = _tune(tmp_path, capsys, "-c", str(CONFIGS_DIR / "model" / "lenet5.yaml"))
    assert code == 2 and "is a fit config, not a tune file" in line
