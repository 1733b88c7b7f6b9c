"""Ctrl-C (SIGINT) or SIGTERM in the middle of a trial stops the study: the command ends with
130 / 143 after writing its outputs, the interrupted trial is failed as stopped (not as a
failure of its own) and queued again with its parameters, and the same command, rerun,
takes it up first. One trial's budget, stopped twice: the second run is that rerun (that a
queued trial then runs to the end is ``test_tune_resume.py``'s, after SIGKILL)."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from imgcls.__main__ import main
from tests.tune.conftest import trial_args, write_tune_file

KEY = "model.scheduler.init_args.max_lr"


def _progress(db: Path) -> list[tuple[str, int]]:
    """Each trial's state and the epochs it has reported, read as another process would."""
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return list(
                con.execute(
                    "SELECT t.state, (SELECT COUNT(*) FROM trial_intermediate_values v "
                    "WHERE v.trial_id = t.trial_id) FROM trials t ORDER BY t.number"
                )
            )
    except sqlite3.OperationalError:  # the tables are not made yet, or locked a moment
        return []


@contextlib.contextmanager
def _signal_once_an_epoch_is_in(db: Path, sig: int) -> Iterator[None]:
    """Within the block, send this process ``sig`` once the study's newest trial has
    reported an epoch (of 4), from a thread that watches the study's file.

    The command runs in this process (``main``, the entry point a user's shell calls), which
    spares a start of Python and torch per run. Until the block ends the test's own handler
    takes the signal if the command has none of its own, so that a command that ignores it
    fails the test rather than ending pytest."""
    seen: list[int] = []
    before = signal.signal(sig, lambda signum, frame: seen.append(signum))
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            trials = _progress(db)
            if trials and trials[-1][0] == "RUNNING" and trials[-1][1] >= 1:
                os.kill(os.getpid(), sig)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        signal.signal(sig, before)
    assert not seen, "the command did not take the signal"


def _tune(
    args: list[str], db: Path, sig: int, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    with _signal_once_an_epoch_is_in(db, sig), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's own warnings are not what is tested here
        code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_sigint_and_sigterm_stop_the_study_and_the_trial_is_queued_again(
    tiny, tmp_path, capsys, monkeypatch
):
    data, env = tiny
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(sys, "argv", ["imgcls"])  # LightningCLI reads it too
    monkeypatch.chdir(tmp_path)
    tune_file = write_tune_file(
        tmp_path / "stop.yaml",
        {KEY: {"low": 0.003, "high": 0.03, "log": True}},
        sampler={"name": "random", "seed": 5},
        pruner="none",
    )
    args = ["tune", "-c", str(tune_file), "--n_trials", "1", *trial_args(data, 4)]
    folder = tmp_path / "runs" / "mnist-lenet5" / "tune" / "stop"
    db = folder / "study.db"

    def trials() -> list[optuna.trial.FrozenTrial]:
        return optuna.load_study(study_name="stop", storage=f"sqlite:///{db}").trials

    code, err = _tune(args, db, signal.SIGINT, capsys)
    assert code == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        "imgcls: stopped by SIGINT: trial 0 did not finish and is queued again with its "
        "parameters (trial 1); the same command continues the study"
    )
    assert "Traceback" not in err
    first, retry = trials()
    assert first.state == TrialState.FAIL and first.user_attrs["stopped"] == "SIGINT"
    assert "fail_reason" not in first.user_attrs  # not a failure of the trial's own
    assert retry.state == TrialState.WAITING and retry.params == first.params
    with open(folder / "trials.csv", newline="") as fh:  # written on the way out
        rows = list(csv.DictReader(fh))
    assert rows[0]["fail_reason"] == "stopped by SIGINT before it finished; re-queued as trial 1"

    # The same command takes the queued trial first; stopped again, by SIGTERM this time.
    code, err = _tune(args, db, signal.SIGTERM, capsys)
    assert code == 143, err[-3000:]
    assert "stopped by SIGTERM: trial 1 did not finish" in err.strip().splitlines()[-1]
    _, second, again = trials()
    assert second.state == TrialState.FAIL and second.user_attrs["stopped"] == "SIGTERM"
    assert (
        second.params == first.params
        and second.user_attrs["run_dir"] != first.user_attrs["run_dir"]
    )
    assert again.state == TrialState.WAITING and again.params == first.params
    assert "stopped" not in again.user_attrs and "owner" not in again.user_attrs

    with open(folder / "trials.csv", newline="") as fh:
        reasons = [r["fail_reason"] for r in csv.DictReader(fh)]
    assert reasons == [
        "stopped by SIGINT before it finished; re-queued as trial 1",
        "stopped by SIGTERM before it finished; re-queued as trial 2",
        "",
    ]
