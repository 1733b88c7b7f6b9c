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
    assert code == 2 and "nope.yaml: no such file, nor a config shipped with imgcls" in line
    code, line = _tune(tmp_path, capsys, "-c", str(CONFIGS_DIR / "model" / "lenet5.yaml"))
    assert code == 2 and "is a fit config, not a tune file" in line


SECRET = "S3cretPW"


@pytest.mark.parametrize(
    ("url", "shown", "message"),
    [
        # no '://' after the dialect: refused as it is, before SQLAlchemy reads it
        (
            "postgresql//alice:S3cretPW@127.0.0.1:{port}/db",
            "postgresql//alice:***@127.0.0.1:{port}/db",
            "not a database URL (no '://' after the dialect)",
        ),
        # the password as a query parameter (psycopg takes it): masked too
        (
            "postgresql://alice@127.0.0.1:{port}/db?sslmode=disable&password=S3cretPW",
            "postgresql+psycopg://alice@127.0.0.1:{port}/db?sslmode=disable&password=***",
            "cannot open the study storage",
        ),
        # an unencoded '@' in the password: the rest of it would be taken for the host
        (
            "postgresql://alice:S3c@retPW@127.0.0.1:{port}/db",
            "postgresql://alice:***@127.0.0.1:{port}/db",
            "more than one '@'; an '@' in the user name, the password or a parameter is "
            "written percent-encoded, as %40",
        ),
    ],
)
def test_a_storage_password_is_never_shown(
    url, shown, message, tiny, tmp_path, capsys, monkeypatch
):
    import socket

    data, env = tiny
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tune_file = write_tune_file(tmp_path / "t.yaml", GOOD)
    storage = url.format(port=port)
    code, line = _tune(
        tmp_path, capsys, "-c", str(tune_file), "--storage", storage, *trial_args(data)
    )
    assert code == 2
    assert shown.format(port=port) in line and message in line, line
    for piece in (SECRET, "S3c", "retPW"):  # nor any piece of one
        assert piece not in line, line


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:a/b?c@h:5432/db", "postgresql://u:***@h:5432/db"),  # '/', '?' unencoded
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u@h/db?password=a&b&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql://u@h/db?sslpassword=x;pwd=y", "postgresql://u@h/db?sslpassword=***;pwd=***"),
        ("postgresql:u:pw@h/db", "postgresql:***@h/db"),  # malformed: the user name goes too
        ("sqlite:////tmp/exp@1/study.db", "sqlite:////tmp/exp@1/study.db"),
    ],
)
def test_shown_url_masks_every_form_of_password(url, shown):
    from imgcls.tune.storage import scrub, shown_url

    assert shown_url(url) == shown
    # a driver's error that echoes the password, as written or percent-decoded, loses it
    assert "p@ss" not in scrub("password p@ss refused; p%40ss", "postgresql://u:p%40ss@h/db")


@pytest.mark.parametrize(
    ("before", "now", "message"),
    [
        # Optuna's own error, in the middle of a trial, before
        (
            {LR: [0.01, 1.0e-9]},
            {LR: [0.01, 0.02]},
            f"searched {LR} over choices [0.01, 1e-09] (trial 0), the tune file over "
            "choices [0.01, 0.02]",
        ),
        # taken silently by Optuna, before
        (
            {LR: {"low": 0.001, "high": 0.01}},
            {LR: {"low": 0.001, "high": 0.1}},
            f"searched {LR} over floats 0.001..0.01 (trial 0), the tune file over "
            "floats 0.001..0.1",
        ),
    ],
)
def test_a_study_reused_with_another_space_is_one_line_before_any_trial(
    before, now, message, tiny, tmp_path, capsys, monkeypatch
):
    import optuna

    from imgcls.tune import study as tune_study
    from imgcls.tune.spec import load_spec

    data, env = tiny
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_tune_file(tmp_path / "a" / "reused.yaml", before)
    folder = tmp_path / "runs" / "mnist-lenet5" / "tune" / "reused"  # the default storage
    folder.mkdir(parents=True)
    storage = f"sqlite:///{folder / 'study.db'}"
    study = optuna.create_study(study_name="reused", storage=storage, direction="maximize")
    trial = study.ask()  # an earlier trial of the study, asking for its values as trials do
    for p in load_spec([str(first)]).space:
        tune_study.suggest(trial, p)
    study.tell(trial, 0.9)
    capsys.readouterr()
    again = write_tune_file(tmp_path / "b" / "reused.yaml", now)
    code, line = _tune(tmp_path, capsys, "-c", str(again), *trial_args(data))
    assert code == 2
    assert message in line, line
    assert line.startswith("imgcls: error: study 'reused' in sqlite:///runs/mnist-lenet5/")
    assert line.endswith("pick a new --study_name (or restore the space)")
    assert len(study.trials) == 1  # nothing ran, nothing was recorded
