"""``imgcls page``: the draw-a-digit page as a static site that runs the model in the browser.

``imgcls page --model EXPORT/model.onnx --out DIR`` writes DIR (``imgcls.deploy.site``): the
page of ``imgcls serve``, the export's model(s) and metadata, and the onnxruntime-web files it
runs them with (fetched from npm at build time, pinned and sha256-checked, cached). Any static
host serves DIR; ``python -m http.server -d DIR`` shows it locally. No torch.

``imgcls page --epochs RUN --out DIR`` shows a run learning: each snapshot the fit kept
(``--snapshots.epochs``) is exported through the export's gates (``imgcls.export.epochs``,
which needs torch, imported only then) and carried beside the run's curves; the page's model is
the last snapshot.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgcls import runs
from imgcls.commands.options import add_compare, add_model
from imgcls.deploy.zoo import DEFAULT_MODEL
from imgcls.errors import ConfigError, RunNotFoundError

SNAPSHOTS_HINT = (
    'train it keeping them: imgcls fit … --snapshots.epochs "[0, 1, 2, 5, -1]" '
    "(or --config configs/callbacks/snapshots.yaml)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p, default=DEFAULT_MODEL)
    add_compare(p)
    p.add_argument(
        "--out",
        required=True,
        help="folder to write the site to: new, empty, or a site imgcls built before (its files "
        "replaced once the new site is complete; files imgcls did not write, such as CNAME or "
        ".git/, are kept). A symlink is followed; the current folder is refused",
    )
    p.add_argument(
        "--epochs",
        metavar="RUN",
        help="watch a run learn: a run folder (runs/<experiment>/version_N), or an experiment "
        "folder (its newest run with snapshots), trained with --snapshots.epochs; each snapshot "
        "is exported (needs the training extra) for the page's epoch slider, the run's curves "
        "beside it, and the last snapshot is the page's model (--model is then not used)",
    )


def _run_folder(spec: str) -> Path:
    """The run that ``--epochs`` names: a run folder, a checkpoint inside one, or an experiment
    folder (its newest run that kept snapshots)."""
    path = Path(spec)
    if path.is_file():
        run = runs.run_of(path)
        if run is None:
            raise RunNotFoundError(f"--epochs {spec}: a file outside a run; give the run folder")
        return run
    if runs.is_run(path) or (path / "checkpoints").is_dir() or (path / runs.SNAPSHOTS).is_dir():
        return path
    if path.is_dir():
        found = runs.runs(path)
        with_snapshots = [r for r in found if runs.snapshots(r)]
        if with_snapshots or found:
            return (with_snapshots or found)[-1]
    raise RunNotFoundError(
        f"--epochs {spec}: no run there; give a run folder (runs/<experiment>/version_N) or an "
        "experiment folder (runs/<experiment>)"
    )


def _epochs(spec: str, work: str, log: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    """Export the snapshots of the run ``spec`` names into ``work``; returns the page's model
    (the last snapshot's export) and ``build_site``'s epoch arguments."""
    run = _run_folder(spec)
    kept = runs.snapshots(run)
    if not kept:
        raise ConfigError(f"--epochs {spec}: {run} kept no snapshots; {SNAPSHOTS_HINT}")
    try:
        from imgcls.export.epochs import export_snapshots
    except ImportError as e:
        raise ConfigError(
            f"--epochs exports the run's snapshots, which needs the training extra ({e.name} is "
            "not installed): pip install 'imgcls[train]', or build the site where it is"
        ) from e
    from imgcls.deploy.teach import run_curves

    exports = export_snapshots(kept, work, log=log)
    last = exports[max(exports)]
    label = f"{run.parent.name}/{run.name}"
    return last / "model.onnx", {
        "epochs": exports,
        "curves": run_curves(run / "metrics.csv"),
        "run_label": label,
    }


def run(args: argparse.Namespace) -> int:
    from imgcls.deploy.site import build_site, check_out
    from imgcls.deploy.zoo import resolve_model

    def log(m: str) -> None:
        print(m, file=sys.stderr)

    compare = None if args.compare is None else resolve_model(args.compare)
    with tempfile.TemporaryDirectory(prefix="imgcls-epochs-") as work:
        extra: dict[str, Any] = {}
        if args.epochs is not None:
            check_out(Path(args.out))  # before the exports, which take a while
            model, extra = _epochs(args.epochs, work, log)
        else:
            model = resolve_model(args.model)
        summary = build_site(model, args.out, compare=compare, log=log, **extra)
    mib = summary["bytes"] / 2**20
    maps = "with feature maps" if summary["features"] else "without feature maps"
    if summary["compare"]:
        maps += f", {summary['compare']} beside it"
    if summary["epochs"]:
        maps += f", epochs {', '.join(map(str, summary['epochs']))}"
    print(
        f"[imgcls page] wrote {summary['out']}: {len(summary['files'])} files, {mib:.1f} MiB, "
        f"model {summary['model_id']}, {maps}"
    )
    if summary["kept"]:
        kept = summary["kept"]
        tops = sorted({name.split("/")[0] + ("/" if "/" in name else "") for name in kept})
        print(
            f"[imgcls page] kept {len(kept)} file(s) imgcls did not write: "
            + ", ".join(tops[:8])
            + (f" and {len(tops) - 8} more" if len(tops) > 8 else "")
        )
    print(f"[imgcls page] try it: python -m http.server -d {summary['out']} 8000")
    return 0
