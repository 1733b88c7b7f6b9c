"""``imgcls configs``: the configs shipped with imgcls, each with its first comment line.

Any of them can be given by name to ``-c`` of ``fit``, ``validate``, ``test``, ``predict`` and
``tune`` from any folder: ``imgcls fit -c recipes/mnist_best`` (``imgcls.shipped``).
"""

from __future__ import annotations

import argparse
import json

from imgcls.commands.options import write_stdout


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print them as JSON")


def run(args: argparse.Namespace) -> int:
    from imgcls.shipped import config_summaries, configs_dir

    rows = config_summaries()
    if args.json:
        data = {"folder": str(configs_dir()), "configs": [{"name": n, "about": a} for n, a in rows]}
        write_stdout(json.dumps(data, indent=2) + "\n")
        return 0
    width = max((len(n) for n, _ in rows), default=4)
    lines = [f"{name:<{width}}  {about}" for name, about in rows]
    lines += ["", f"{len(rows)} configs in {configs_dir()}; use one with -c NAME"]
    write_stdout("\n".join(lines) + "\n")
    return 0
