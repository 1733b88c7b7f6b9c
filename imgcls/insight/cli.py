"""What the insight commands share: common options, user-facing errors, an optional W&B run."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

from imgcls.insight import InsightError

__all__ = ["add_common_arguments", "guarded", "wandb_session"]


def add_common_arguments(p: argparse.ArgumentParser, out_default: str, data: bool = True) -> None:
    p.add_argument("--out", default=out_default, help=f"output folder (default: {out_default})")
    if data:
        p.add_argument(
            "--data_dir",
            default=None,
            help="data root (default: $IMGCLS_DATA or ~/.cache/imgcls/data)",
        )
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--wandb",
        metavar="PROJECT",
        default=None,
        help="start a W&B run in PROJECT and log the figures and tables to it (they are also logged "
        "to any W&B run already active in the calling process)",
    )


@contextlib.contextmanager
def wandb_session(project: str | None, job_type: str, config: dict[str, Any]) -> Iterator[None]:
    """A W&B run for the duration of a command when ``--wandb PROJECT`` is given; else nothing."""
    if not project:
        yield
        return
    import wandb

    run = wandb.init(project=project, job_type=job_type, config=config)
    try:
        yield
    finally:
        run.finish()


def _user_error(e: BaseException) -> bool:
    """An error a user can meet and fix (as opposed to a bug, which keeps its traceback).

    The checkpoint and data modules are looked up only if loaded: an error of theirs cannot
    have been raised otherwise, and importing them (Lightning) would slow every command.
    """
    kinds: list[type[BaseException]] = [InsightError, FileNotFoundError]
    for module, name in (
        ("imgcls.checkpoint", "CheckpointError"),
        ("imgcls.data.provision", "DataError"),
    ):
        if (m := sys.modules.get(module)) is not None:
            kinds.append(getattr(m, name))
    return isinstance(e, tuple(kinds))


def guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the errors a user can meet into ``imgcls: error: …`` on stderr and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except Exception as e:
            if not _user_error(e):
                raise
            print(f"imgcls: error: {e}", file=sys.stderr)
            return 2

    run.__doc__ = fn.__doc__
    return run
