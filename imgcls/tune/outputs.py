"""What a study leaves in ``<experiment>/tune/<study>/``: ``best.yaml``, ``trials.csv``,
``history.png``, ``importances.png``, ``parallel.png`` and ``summary.txt`` (also printed).

Every file is written to a temporary file and renamed (``imgcls.utils``), so a reader never
sees half of one and a rerun replaces them whole.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from imgcls.tune.study import MAX_RETRY, StudyPlan, retried_from, shown_url
from imgcls.utils import atomic_path, atomic_write_text

__all__ = ["best_config", "write_outputs"]

PLOTS = ("history.png", "importances.png", "parallel.png")


def best_config(trial: FrozenTrial) -> str | None:
    """The full fit config of a trial, as ``imgcls fit -c`` reruns it: a new run (no logger
    version, no checkpoint to resume)."""
    text = trial.user_attrs.get("config")
    if not text:
        return None
    cfg = yaml.safe_load(text)
    cfg["ckpt_path"] = None
    logger = (cfg.get("trainer") or {}).get("logger")
    for lg in logger if isinstance(logger, list) else [logger]:
        args = lg.get("init_args") if isinstance(lg, dict) else None
        if isinstance(args, dict):
            for key in ("version", "id"):
                if key in args:
                    args[key] = None
    params = "\n".join(f"#   {k}: {json.dumps(v)}" for k, v in trial.params.items())
    head = (
        f"# The best trial (number {trial.number}, value {trial.value}) of an imgcls tune "
        f"study, as a full fit config.\n# Its searched parameters:\n{params}\n"
        "# imgcls fit -c best.yaml   (add --trainer.max_epochs N etc. for a longer training)\n"
    )
    return head + yaml.safe_dump(cfg, sort_keys=False)


def _csv(study: optuna.Study, keys: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["number", "state", "value", "epochs", "duration_s", *keys, "run_dir", "fail_reason"]
    )
    trials = study.get_trials(deepcopy=False)
    retried = {retried_from(t): t.number for t in trials}
    for t in trials:
        duration = (
            round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
            if t.datetime_complete and t.datetime_start
            else ""
        )
        reason = t.user_attrs.get("fail_reason", "")
        if t.state == TrialState.FAIL and not reason:
            stopped = t.user_attrs.get("stopped")
            reason = (
                f"stopped by {stopped} before it finished"
                if stopped
                else "lost: its process died (killed) before it finished"
            )
            retry = retried.get(t.number)
            if retry is not None:
                reason += f"; re-queued as trial {retry}"
            elif len(t.system_attrs.get("retry_history") or []) >= MAX_RETRY:
                reason += f"; not re-queued (retried {MAX_RETRY} times already)"
            else:
                reason += "; not re-queued yet"
        w.writerow(
            [
                t.number,
                t.state.name,
                "" if t.value is None else t.value,
                len(t.intermediate_values),
                duration,
                *(json.dumps(t.params[k]) if k in t.params else "" for k in keys),
                t.user_attrs.get("run_dir", ""),
                reason,
            ]
        )
    return buf.getvalue()


def _plot(path: Path, draw: Callable[[], Any]) -> str | None:
    """Draw one of Optuna's matplotlib plots into ``path``; None, or why it was skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ax = draw()
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        plt.close("all")
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
    fig.set_size_inches(10, 6)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close("all")
    return None


def write_outputs(plan: StudyPlan, study: optuna.Study) -> str:
    """Write the study's files and return the summary (one screen)."""
    from optuna.visualization import matplotlib as vis

    plan.folder.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    keys = [p.key for p in plan.spec.space]
    atomic_write_text(plan.folder / "trials.csv", _csv(study, keys))
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    lines = [
        f"study {plan.study_name} in {shown_url(plan.storage_url)}",
        f"trials: {len(trials)}: {counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed"
        + (f", {counts[TrialState.RUNNING]} running" if counts[TrialState.RUNNING] else ""),
    ]
    best: FrozenTrial | None = study.best_trial if complete else None
    wrote = ["trials.csv"]
    if best is not None:
        spec = plan.spec
        lines.append(
            f"best: trial {best.number}, {spec.metric} = {best.value:.6g} ({spec.direction})"
        )
        lines += [f"  {k}: {json.dumps(v)}" for k, v in best.params.items()]
        if best.user_attrs.get("run_dir"):
            lines.append(f"  its run: {best.user_attrs['run_dir']}")
        text = best_config(best)
        if text is not None:
            atomic_write_text(plan.folder / "best.yaml", text)
            wrote.append("best.yaml")
    else:
        lines.append("best: none yet (no trial completed)")
    skipped = []
    draws: dict[str, Callable[[], Any]] = {
        "history.png": lambda: vis.plot_optimization_history(study),
        "importances.png": lambda: vis.plot_param_importances(study),
        "parallel.png": lambda: vis.plot_parallel_coordinate(study),
    }
    for name, draw in draws.items():
        if name == "importances.png" and (len(complete) < 2 or not _varied(complete)):
            skipped.append(f"{name} (needs 2 completed trials whose parameters differ)")
            continue
        if not complete:
            skipped.append(f"{name} (no trial completed)")
            continue
        why = _plot(plan.folder / name, draw)
        if why is None:
            wrote.append(name)
        else:
            skipped.append(f"{name} ({why})")
    lines.append(f"wrote {', '.join(wrote)} in {plan.folder}")
    if skipped:
        lines.append(f"skipped {'; '.join(skipped)}")
    if best is not None and "best.yaml" in wrote:
        lines.append(f"retrain: imgcls fit -c {plan.folder / 'best.yaml'}")
    summary = "\n".join(lines) + "\n"
    atomic_write_text(plan.folder / "summary.txt", summary)
    return summary


def _varied(complete: list[FrozenTrial]) -> bool:
    seen = {json.dumps(t.params, sort_keys=True, default=str) for t in complete}
    return len(seen) > 1
