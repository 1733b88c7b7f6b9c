"""``imgcls tune``: hyper-parameter search on Optuna, each trial a real ``imgcls fit`` run.

    imgcls tune -c configs/tune/lenet5.yaml [-c more.yaml] [--n_trials N] [--timeout S]
        [--storage URL] [--study_name NAME] [fit options, e.g. --trainer.max_epochs 2]

Options this command does not know are ``imgcls fit`` options, given to every trial. The
study, its trials' run folders and its outputs: see ``imgcls.tune`` and docs/tuning.md.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="a tune file (configs/tune/*.yaml); more tune files or fit configs stack on it",
    )
    p.add_argument(
        "--n_trials",
        type=int,
        default=None,
        help="trials the study holds when done, counting earlier runs and other processes "
        "(default: the tune file's n_trials)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="start no trial after this many seconds (the running one finishes)",
    )
    p.add_argument(
        "--storage",
        default=None,
        help="SQLAlchemy URL of the study's database, e.g. postgresql://user@host/db to share "
        "it between processes and machines (default: sqlite in <experiment>/tune/<study>/)",
    )
    p.add_argument(
        "--study_name", default=None, help="the study's name (default: the tune file's name)"
    )
    p.epilog = "Any other --key value is an imgcls fit option, applied to every trial."
    known = p.parse_known_args

    def parse_args(args: Any = None, namespace: Any = None) -> argparse.Namespace:
        # The fit options after the tune options are not this parser's: keep them for the trials.
        ns, rest = known(args, namespace)
        ns.fit_args = rest
        return ns

    setattr(p, "parse_args", parse_args)  # noqa: B010 - the parser __main__ builds and calls


def run(args: argparse.Namespace) -> int:
    from imgcls.errors import ConfigError

    if args.n_trials is not None and args.n_trials < 1:
        raise ConfigError(f"--n_trials must be >= 1, got {args.n_trials}")
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {args.timeout}")
    from imgcls.tune import tune

    return tune(
        args.config, args.fit_args, args.n_trials, args.timeout, args.storage, args.study_name
    )
