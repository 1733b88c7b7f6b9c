"""The default SQLite study survives SIGKILL: the same command, rerun, continues it; the
trial that was running is failed as lost, re-queued with its parameters, and the study ends
with the budget's trials, the ones finished before the kill untouched."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tests.helpers import run_imgcls
from tests.tune.conftest import trial_args, write_tune_file

N_TRIALS = 4


def _states(db: Path) -> list[str]:
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return [s for (s,) in con.execute("SELECT state FROM trials ORDER BY number")]
    except sqlite3.OperationalError:  # the tables are not made yet, or locked a moment
        return []


def test_sqlite_study_killed_mid_study_resumes(tiny, tmp_path):
    data, env = tiny
    tune_file = write_tune_file(
        tmp_path / "resume.yaml",
        {"model.scheduler.init_args.max_lr": {"low": 0.003, "high": 0.03, "log": True}},
        sampler={"name": "random", "seed": 3},
        pruner="none",
    )
    args = ["tune", "-c", str(tune_file), "--n_trials", str(N_TRIALS), *trial_args(data, 4)]
    db = tmp_path / "runs" / "mnist-lenet5" / "tune" / "resume" / "study.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgcls", *args],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while True:  # kill it while a trial runs, after one has completed
            states = _states(db)
            started = len(list((tmp_path / "runs" / "mnist-lenet5").glob("version_*")))
            if "COMPLETE" in states and states[-1] == "RUNNING" and started == len(states):
                break  # the running trial is training in its run folder
            assert proc.poll() is None, f"the study ended before it could be killed: {states}"
            assert time.monotonic() < deadline, f"no trial running after one completed: {states}"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = optuna.load_study(study_name="resume", storage=f"sqlite:///{db}").trials
    killed = before[-1]
    assert killed.state == TrialState.RUNNING
    done_before = {t.number: t.value for t in before if t.state == TrialState.COMPLETE}
    assert done_before

    out = run_imgcls(*args, cwd=tmp_path, env=env)  # the same command

    after = optuna.load_study(study_name="resume", storage=f"sqlite:///{db}").trials
    assert {t.number: t.value for t in after if t.number in done_before} == done_before
    lost = after[killed.number]
    assert lost.state == TrialState.FAIL and "fail_reason" not in lost.user_attrs
    retries = [t for t in after if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state == TrialState.COMPLETE
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    assert len(complete) == N_TRIALS  # the budget, the lost trial's place taken by its retry
    assert len(after) == N_TRIALS + 1
    assert f"trials: {N_TRIALS + 1}: {N_TRIALS} complete, 0 pruned, 1 failed" in out.stdout
    rows = (db.parent / "trials.csv").read_text()
    assert "lost: its process died" in rows
    assert json.dumps(killed.params["model.scheduler.init_args.max_lr"]) in rows
