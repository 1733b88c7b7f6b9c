"""``imgcls data fetch|verify``."""

from __future__ import annotations

import argparse
from pathlib import Path

from imgcls.commands.options import add_data_dir
from imgcls.data.provision import (
    DATASETS,
    check_data_root,
    default_root,
    fetch,
    raw_dir,
    verify,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    for action, help_ in (
        ("fetch", "put the data sets in place, verified"),
        ("verify", "check the files' sha256 (always hashed, not taken from the cache)"),
    ):
        a = sub.add_parser(action, help=help_)
        a.add_argument("--dataset", choices=[*DATASETS, "all"], default="all")
        add_data_dir(a)
        if action == "fetch":
            a.add_argument(
                "--force", action="store_true", help="fetch again even if the files verify"
            )


def run(args: argparse.Namespace) -> int:
    root = Path(args.data_dir).expanduser() if args.data_dir else default_root()
    check_data_root(root, "--data_dir" if args.data_dir else "$IMGCLS_DATA")
    names = list(DATASETS) if args.dataset == "all" else [args.dataset]
    for name in names:
        if args.action == "fetch":
            fetch(name, root, force=args.force)
        else:
            verify(root, name, use_cache=False)
        print(f"{name}: verified in {raw_dir(root, name)}")
    return 0
