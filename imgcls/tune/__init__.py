"""Hyper-parameter search on Optuna: ``imgcls tune``. Each trial is a real ``imgcls fit`` run;
the study lives in SQLite by default or in any SQLAlchemy database shared by many processes.

- :mod:`imgcls.tune.spec`: the tune file (configs/tune/*.yaml) and its checks;
- :mod:`imgcls.tune.study`: the storage, the trials (in-process: why, there) and pruning;
- :mod:`imgcls.tune.outputs`: best.yaml, trials.csv, the plots and the summary.
"""

from __future__ import annotations

import sys

__all__ = ["tune"]


def tune(
    files: list[str],
    fit_args: list[str],
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
) -> int:
    """``imgcls tune``: check everything, run trials until the budget, write the outputs;
    0, or 128 + the signal's number after a SIGINT or SIGTERM stopped it.

    Raises:
        ConfigError: bad input (the tune file, the space, the metric, the storage), before
            any trial runs; a metric missing after the first validation epoch, after it.
    """
    from imgcls.tune.spec import load_spec
    from imgcls.tune.study import Stopped, open_study, prepare, run_trials, stop_on_signals

    spec = load_spec(files)
    plan = prepare(spec, fit_args, storage, study_name, n_trials)
    study = open_study(plan)
    from imgcls.tune.outputs import write_outputs

    try:
        with stop_on_signals():
            try:
                run_trials(plan, study, timeout)
            finally:
                summary = write_outputs(plan, study)
                print(summary, end="", file=sys.stdout)
    except Stopped as e:
        # Stopped, not failed: the status a shell gives a command the signal ended (130 for
        # Ctrl-C, 143 for SIGTERM), after the interrupted trial was queued again.
        print(f"imgcls: {e.said}", file=sys.stderr)
        return 128 + e.signum
    return 0
