"""Train and export the models that ship in the package (``imgcls/zoo/<name>/``): ``nox -s zoo``.

    python scripts/zoo.py [NAME ...] [--runs runs/zoo] [--export_only]

For each model, one at a time: ``imgcls fit`` of its recipe with its seed into
``runs/zoo/<name>/`` (a run already there is resumed from its last checkpoint, a finished one
is kept), then ``imgcls export`` of its best checkpoint (chosen on validation accuracy) into the
package folder, through the export's gates, with ``provenance.json``: the recipe, the command,
the seed, the commit and the training's wall time (summed over resumes). The figures it
records (test accuracy on the official 10,000 test images, shifted images, sha256) are the
export's own; ``tests/deploy/test_zoo.py`` checks the shipped files against them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO_DIR = ROOT / "imgcls" / "zoo"

# name -> (recipe under configs/, seed): the recipes hold every other choice.
MODELS: dict[str, tuple[str, int]] = {
    "mnist": ("recipes/mnist_small.yaml", 42),
    "fashion_mnist": ("recipes/fashion_resnet_short.yaml", 42),
    "mnist_mlp": ("model/mlp128.yaml", 42),
    "mnist_best": ("recipes/mnist_best.yaml", 42),
}
RECORD = "zoo-train.json"  # in runs/zoo/<name>/: wall time, commit, whether the fit finished


def _commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "imgcls", "configs"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return sha + ("+uncommitted changes" if dirty else "")


def _fit_command(recipe: str, seed: int) -> list[str]:
    return ["imgcls", "fit", "-c", recipe.removesuffix(".yaml"), "--seed_everything", str(seed)]


def _run_dir(root: Path) -> Path | None:
    runs = sorted(root.glob("*/version_*"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def _read(path: Path) -> dict[str, object]:
    return json.loads(path.read_text()) if path.is_file() else {}


def train(name: str, runs: Path) -> Path:
    """Fit ``name``'s recipe into ``runs/<name>`` (resuming a started run); its run folder."""
    recipe, seed = MODELS[name]
    root = runs / name
    root.mkdir(parents=True, exist_ok=True)
    record = _read(root / RECORD)
    run = _run_dir(root)
    if record.get("finished") and run is not None:
        print(f"[zoo] {name}: trained already ({run})", flush=True)
        return run
    cmd = [sys.executable, "-m", "imgcls", *_fit_command(recipe, seed)[1:]]
    cmd += ["--trainer.default_root_dir", str(root)]
    if run is not None and (run / "checkpoints" / "last.ckpt").is_file():
        cmd += ["--ckpt_path", str(run)]
    print(f"[zoo] {name}: {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    code = subprocess.run(cmd, cwd=ROOT).returncode
    spent = float(str(record.get("train_wall_s") or 0)) + time.monotonic() - start
    record["train_wall_s"] = spent
    record.setdefault("commit", _commit())
    record["finished"] = code == 0
    (root / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    if code != 0:
        sys.exit(f"[zoo] {name}: imgcls fit failed (exit {code}); rerun to resume it")
    run = _run_dir(root)
    assert run is not None
    return run


def export(name: str, run: Path, runs: Path) -> None:
    """Export ``run``'s best checkpoint into the package's ``zoo/<name>/`` with provenance."""
    from imgcls.export.pipeline import export_checkpoint

    recipe, seed = MODELS[name]
    record = _read(runs / name / RECORD)
    provenance = {
        "name": name,
        "recipe": f"configs/{recipe}",
        "seed": seed,
        "command": " ".join(_fit_command(recipe, seed)),
        "rebuild": f"nox -s zoo -- {name}",
        "commit": record.get("commit", "unknown"),
        "train_wall_s": round(float(str(record.get("train_wall_s") or 0)), 1),
        "trained_on": record.get("trained_on")
        or f"{os.cpu_count()} CPU cores ({platform.machine()}), shared with other work",
    }
    if record.get("note"):
        provenance["note"] = record["note"]
    ckpt = run / "checkpoints" / "best.ckpt"
    print(f"[zoo] {name}: exporting {ckpt} to {ZOO_DIR / name}", flush=True)
    export_checkpoint(ckpt, ZOO_DIR / name, provenance=provenance)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help=f"models to build (default all: {', '.join(MODELS)})")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "zoo", help="training runs")
    p.add_argument("--export_only", action="store_true", help="export trained runs only")
    args = p.parse_args()
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    for name in args.names or list(MODELS):
        if args.export_only:
            run = _run_dir(args.runs / name)
            if run is None or not _read(args.runs / name / RECORD).get("finished"):
                sys.exit(f"[zoo] {name}: no finished run in {args.runs / name}; train it first")
        else:
            run = train(name, args.runs)
        export(name, run, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
