"""What a study does around its trials, without training one: a trial left running by a
process of this machine that is gone is failed and queued again (a pid reused since is not
that process), a failed trial is logged in one line, and a run folder in use sends a trial to
the next folder. Optuna's public API only, on an in-memory study: a fraction of a second."""

from __future__ import annotations

import io
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from imgcls import staging
from imgcls.errors import ConfigError, RunInUseError
from imgcls.tune import study as tune_study
from imgcls.tune.spec import load_spec
from tests.tune.conftest import write_tune_file

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(autouse=True)
def _optuna_verbosity() -> Iterator[None]:
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial created
    yield
    optuna.logging.set_verbosity(before)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _running(study: optuna.Study, owner: dict) -> int:
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("owner", owner)
    return trial.number


def _retries(study: optuna.Study, number: int) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.system_attrs.get("failed_trial") == number]


def test_a_trial_of_a_gone_or_reused_pid_is_failed_and_queued_again() -> None:
    study = optuna.create_study(direction="maximize")
    host, parent = socket.gethostname(), os.getppid()
    dead = _running(study, {"host": host, "pid": _dead_pid(), "start": None})
    older = _running(study, {"host": host, "pid": _dead_pid()})  # written by an older imgcls
    reused = _running(study, {"host": host, "pid": parent, "start": "linux:0"})
    alive = _running(study, {"host": host, "pid": parent, "start": staging.process_start(parent)})
    elsewhere = _running(study, {"host": host + ".other", "pid": _dead_pid(), "start": None})
    tune_study._fail_dead_local_trials(study)
    trials = study.trials
    for number in (dead, older, reused):
        assert trials[number].state == TrialState.FAIL
        assert "fail_reason" not in trials[number].user_attrs  # lost, not failed by itself
        (retry,) = _retries(study, number)
        assert retry.state == TrialState.WAITING and retry.params == trials[number].params
    for number in (alive, elsewhere):
        assert trials[number].state == TrialState.RUNNING and not _retries(study, number)


def test_a_trial_finished_meanwhile_by_another_process_is_not_queued_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study = optuna.create_study(direction="maximize")
    number = _running(study, {"host": socket.gethostname(), "pid": _dead_pid()})
    seen_running = study.get_trials(states=(TrialState.RUNNING,))
    study.tell(number, state=TrialState.FAIL)  # another process's heartbeat check got there
    monkeypatch.setattr(study, "get_trials", lambda **kw: seen_running)
    tune_study._fail_dead_local_trials(study)
    assert not _retries(study, number)


def test_a_failed_trial_is_logged_in_one_line() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logging.getLogger("optuna").addHandler(handler)
    try:
        tune_study.one_line_failures()

        def objective(trial: optuna.Trial) -> float:
            trial.suggest_float("x", 0.0, 1.0)
            raise tune_study.TrialFailed("NonFiniteLossError: the loss is nan")

        optuna.create_study().optimize(objective, n_trials=1, catch=(tune_study.TrialFailed,))
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    text = out.getvalue()
    assert "Trial 0 failed with parameters" in text and "the loss is nan" in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("first_error", "fits"),
    [
        (RunInUseError("runs/x/version_0 is in use: another imgcls fit is training in it"), 2),
        # The same words in another ConfigError are not a folder in use: the trial fails.
        (ConfigError("runs/x/version_0 is in use: another imgcls fit is training in it"), 1),
    ],
)
def test_a_run_folder_in_use_sends_the_trial_to_the_next_folder(
    first_error: ConfigError, fits: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[list[str]] = []

    class FitOnce:  # stands in for the trial's `imgcls fit`
        def __init__(self, report: tune_study._Report, args: list[str]) -> None:
            calls.append(args)
            if len(calls) == 1:
                raise first_error
            report.values.append(0.5)

    monkeypatch.setattr(tune_study, "_TrialCLI", FitOnce)
    monkeypatch.setattr(tune_study, "_parse", lambda args: None)
    monkeypatch.setattr(tune_study, "_end_trial", lambda: None)
    tune_file = write_tune_file(tmp_path / "t.yaml", {"model.scheduler.init_args.max_lr": [0.01]})
    spec = load_spec([str(tune_file)])
    plan = tune_study.StudyPlan(
        spec=spec,
        fit_args=[],
        base_net_args={},
        experiment_dir=tmp_path,
        folder=tmp_path,
        study_name="t",
        storage_url="sqlite://",
        n_trials=1,
    )
    objective = tune_study.make_objective(plan)
    trial = optuna.create_study(direction="maximize").ask()
    if fits == 2:
        assert objective(trial) == 0.5
    else:
        with pytest.raises(tune_study.TrialFailed, match="ConfigError: .* is in use"):
            objective(trial)
    assert len(calls) == fits


def _plan(tmp_path: Path, space: dict) -> tune_study.StudyPlan:
    spec = load_spec([str(write_tune_file(tmp_path / "t.yaml", space))])
    return tune_study.StudyPlan(
        spec=spec,
        fit_args=[],
        base_net_args={},
        experiment_dir=tmp_path,
        folder=tmp_path,
        study_name="t",
        storage_url="sqlite://",
        n_trials=1,
    )


LR = "model.scheduler.init_args.max_lr"
WD = "model.optimizer.init_args.weight_decay"


@pytest.mark.parametrize(
    ("now", "said"),
    [
        ({LR: [0.01, 0.001]}, None),  # the same space
        ({LR: {"low": 0.001, "high": 0.01}}, f"{LR} over choices [0.01, 0.001] (trial 0)"),
        ({LR: [0.01, 0.001], WD: [0.0, 0.1]}, f"never searched {WD}, which the tune file adds"),
        ({WD: [0.0, 0.1]}, f"searched {LR} (trial 0), which the tune file does not"),
        ({LR: {"low": 1, "high": 3}}, "the tune file over integers 1..3"),
    ],
)
def test_space_change_names_the_key(now: dict, said: str | None, tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    for p in _plan(tmp_path, {LR: [0.01, 0.001]}).spec.space:
        tune_study.suggest(trial, p)
    study.tell(trial, 0.5)
    problem = tune_study.space_change(_plan(tmp_path, now), study.trials)
    assert problem == said if said is None else said in problem


def test_a_trial_refused_its_space_records_why_not_lost(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A process with another space joining a study after this one checked it: Optuna refuses
    the trial's categorical key; the trial is failed with that reason (not "lost") and the
    study stops with one line."""
    from imgcls.tune.outputs import _csv

    study = optuna.create_study(direction="maximize")
    other = study.ask()
    for p in _plan(tmp_path, {LR: [0.01, 0.001]}).spec.space:
        tune_study.suggest(other, p)
    study.tell(other, 0.5)
    plan = _plan(tmp_path, {LR: [0.01, 0.02]})
    monkeypatch.setattr(tune_study, "_TrialCLI", None)  # never reached
    with pytest.raises(tune_study.SpaceChanged, match=f"{LR}: CategoricalDistribution"):
        study.optimize(tune_study.make_objective(plan), n_trials=1, catch=(tune_study.TrialFailed,))
    row = _csv(study, [LR]).splitlines()[2]
    assert row.startswith("1,FAIL,") and "pick a new --study_name" in row
    assert "lost" not in row


def _open_together(plan: tune_study.StudyPlan, n: int) -> tuple[list[str], list[str]]:
    """``open_study(plan)`` in ``n`` threads released at once: the studies' names, the errors."""
    import threading

    go = threading.Barrier(n)
    names: list[str] = []
    errors: list[str] = []

    def open_it() -> None:
        go.wait()
        try:
            names.append(tune_study.open_study(plan).study_name)
        except ConfigError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=open_it) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return names, errors


def test_processes_starting_together_on_a_new_sqlite_file_share_the_study(tmp_path: Path) -> None:
    """Four openers released at once on a new SQLite file, four times: Optuna creates its
    tables when they are missing, and without the lock two openers both find one missing
    and the second fails (``table study_directions already exists``: 8 rounds of 10 did).
    Threads, each with its own engine and connections, race for the schema as processes
    do, and the folder's flock excludes them as it does processes."""
    for round_ in range(4):
        folder = tmp_path / f"r{round_}"
        folder.mkdir()
        plan = _plan(folder, {LR: [0.01, 0.001]})
        plan.storage_url = f"sqlite:///{folder / 'study.db'}"
        names, errors = _open_together(plan, 4)
        assert not errors, errors
        summaries = optuna.get_all_study_summaries(storage=plan.storage_url)
        assert [s.study_name for s in summaries] == ["t"] and names == ["t"] * 4
