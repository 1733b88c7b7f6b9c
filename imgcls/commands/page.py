"""``imgcls page``: the draw-a-digit page as a static site that runs the model in the browser.

``imgcls page --model EXPORT/model.onnx --out DIR`` writes DIR (``imgcls.deploy.site``): the
page of ``imgcls serve``, the export's model(s) and metadata, and the onnxruntime-web files it
runs them with (fetched from npm at build time, pinned and sha256-checked, cached). Any static
host serves DIR; ``python -m http.server -d DIR`` shows it locally. No torch.
"""

from __future__ import annotations

import argparse
import sys

from imgcls.commands.options import add_compare, add_model
from imgcls.deploy.zoo import DEFAULT_MODEL


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


def run(args: argparse.Namespace) -> int:
    from imgcls.deploy.site import build_site
    from imgcls.deploy.zoo import resolve_model

    summary = build_site(
        resolve_model(args.model),
        args.out,
        compare=None if args.compare is None else resolve_model(args.compare),
        log=lambda m: print(m, file=sys.stderr),
    )
    mib = summary["bytes"] / 2**20
    maps = "with feature maps" if summary["features"] else "without feature maps"
    if summary["compare"]:
        maps += f", {summary['compare']} beside it"
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
