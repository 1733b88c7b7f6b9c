"""``imgcls models``: the trained models shipped with imgcls, by name for ``--model``.

Each line: name, data set, net, parameters, test accuracy (official test set, onnxruntime),
size and sha256 of model.onnx; then the recipe, seed, command, commit and wall time that made
it (``imgcls.deploy.zoo``). No torch.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from imgcls.commands.options import write_stdout


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print them as JSON")


def _net(info: dict[str, Any]) -> str:
    """``resnet 16-32-64 x3``; an ensemble by its members (``2 x resnet 16-32-64 x3``) and
    the views averaged inside its graph (``+ hflip``)."""
    members = info.get("members") or []
    if members:
        kinds = [_net(m) for m in members]
        counted = [f"{kinds.count(k)} x {k}" for k in dict.fromkeys(kinds)]
        views = (info.get("net_args") or {}).get("tta") or []
        return " + ".join(counted + list(views))
    args = info.get("net_args") or {}
    if info.get("net") == "resnet" and args.get("widths"):
        return f"resnet {'-'.join(str(w) for w in args['widths'])} x{args.get('blocks', '?')}"
    if info.get("net") == "mlp" and args.get("hidden"):
        return f"mlp {'-'.join(str(h) for h in args['hidden'])}"
    return str(info.get("net"))


def _made(p: dict[str, Any]) -> str:
    """The recipe, seed, commit and wall time; an ensemble's recipes and seeds are its
    members'."""
    from imgcls.deploy.zoo import recipes_and_seeds, short_commit

    members = p.get("members") or [p]
    names, numbers = recipes_and_seeds(p)
    recipes, seeds = ", ".join(names), ", ".join(map(str, numbers))
    wall = p.get("train_wall_s")
    took = f"{float(wall) / 60:.0f} min" if isinstance(wall, int | float) else "?"
    where = [str(m["trained_on"]) for m in members if m.get("trained_on")]
    commits = list(
        dict.fromkeys(
            [short_commit(p["commit"])]
            if p.get("commit")
            else [short_commit(m.get("commit", "?")) for m in members]
        )
    )
    return (
        f"{recipes}, seed{'s' if len(members) > 1 else ''} {seeds}, commit"
        f"{'s' if len(commits) > 1 else ''} {', '.join(commits)}, trained in {took}"
        + (f" ({'; '.join(dict.fromkeys(where))})" if where else "")
    )


def _pct(x: object) -> str:
    return f"{100 * x:.2f} %" if isinstance(x, int | float) else "?"


def run(args: argparse.Namespace) -> int:
    from imgcls.deploy.zoo import DEFAULT_MODEL, shipped_info, shipped_models

    infos = [shipped_info(name) for name in shipped_models()]
    if args.json:
        write_stdout(json.dumps({"default": DEFAULT_MODEL, "models": infos}, indent=2) + "\n")
        return 0
    if not infos:
        write_stdout("no models are shipped with this install\n")
        return 0
    head = ("name", "data set", "net", "params", "test acc", "3 px shift", "size", "sha256")
    rows = []
    for i in infos:
        shift = (i["shift_accuracy"] or {}).get(3) or {}
        params = i["parameters"]
        rows.append(
            (
                i["name"] + (" *" if i["name"] == DEFAULT_MODEL else ""),
                str(i["dataset"]),
                _net(i),
                f"{params:,}" if isinstance(params, int) else "?",
                _pct(i["test_accuracy"]),
                _pct(shift.get("mean")),
                f"{i['size_bytes'] / 1024:.0f} KiB",
                str(i["sha256"] or "?")[:16],
            )
        )
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [head, *rows]
    ]
    for i in infos:
        p = i["provenance"]
        lines += ["", f"{i['name']}: {_made(p)}", f"  made by: {p.get('command', '?')}"]
    lines += [
        "",
        "* the default of imgcls serve and imgcls page. Use one with --model NAME; "
        "test accuracy: the official 10,000 test images; 3 px shift: mean of 8 directions "
        "on the first 2,000.",
    ]
    write_stdout("\n".join(lines) + "\n")
    return 0
