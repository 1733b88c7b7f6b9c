"""The screenshots of the page's teaching panels in docs/, taken the way the tests drive the
page: the static site of ``imgcls page`` served on 127.0.0.1, Debian's Chromium through
Playwright, a digit drawn with the mouse.

    python docs/page_screenshots.py --model export/mnist-lenet5-version_0/model.onnx \\
        --compare export/mnist-mlp-32-version_0/model.onnx --digit 4 --shift 2,0

writes docs/page-shift.png (the shift panel), docs/page-kernels.png (the kernel playground) and
docs/page-layers.png (every layer, the unit of ``--hover`` in its inspector), each an element
screenshot of its section, 1100 px wide viewport; ``--prefix page-mlp --panels layers --hover
features.1,5,0,0`` with an MLP as ``--model`` writes docs/page-mlp-layers.png.

    python docs/page_screenshots.py --epochs runs/mnist-lenet5/version_0 --panels epochs \
        --epoch 1 --digit 4

builds the site with ``imgcls page --epochs`` (the run's snapshots exported, its last one the
page's model) and writes docs/page-epochs.png, the slider at ``--epoch``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PANELS = {
    "shift": "#shift-panel",
    "kernels": "#kernel-panel",
    "layers": "section.features",
    "epochs": "#epochs-panel",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="an export's model.onnx (or --epochs)")
    p.add_argument("--epochs", default=None, help="a run that kept snapshots, as imgcls page")
    p.add_argument("--epoch", type=int, default=None, help="the epoch the slider shows")
    p.add_argument("--compare", default=None)
    p.add_argument("--digit", type=int, default=4)
    p.add_argument("--shift", default="2,0", help="dx,dy shown in the shift panel")
    p.add_argument("--out", default=str(ROOT / "docs"))
    p.add_argument("--prefix", default="page", help="file names: PREFIX-PANEL.png")
    p.add_argument("--panels", default="shift,kernels,layers", help=f"of {', '.join(PANELS)}")
    p.add_argument("--kernel", default="Sobel vertical", help="the playground's kernel")
    p.add_argument(
        "--hover",
        default="features.3,5,5,4",
        help="the unit shown in the layer panel's inspector: LAYER,CHANNEL,ROW,COLUMN",
    )
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args(argv)
    if (args.model is None) == (args.epochs is None):
        p.error("give --model or --epochs")
    dx, dy = (int(v) for v in args.shift.split(","))

    from playwright.sync_api import sync_playwright

    from benchmarks.page_speed import CHROMIUM_ARGS, static_server
    from imgcls.__main__ import main as imgcls
    from imgcls.deploy.site import build_site
    from tests.deploy.test_page import DIGITS, draw, wait_for_prediction

    with tempfile.TemporaryDirectory(prefix="imgcls-shots-") as tmp:
        site = Path(tmp) / "site"
        if args.epochs is not None:
            page = ["page", "--epochs", args.epochs, "--out", str(site)]
            if imgcls(page + (["--compare", args.compare] if args.compare else [])) != 0:
                return 1
        else:
            build_site(args.model, site, compare=args.compare, log=lambda _: None)
        with static_server(site) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            pg = browser.new_page(viewport={"width": 1100, "height": 1100})
            pg.goto(url + "/")
            pg.wait_for_selector("#app[data-model=ready]", state="attached")
            draw(pg, DIGITS[args.digit])
            wait_for_prediction(pg)
            pg.evaluate(f"window.imgclsPage.setShift({dx}, {dy})")
            pg.select_option("#play-kernel", args.kernel)
            name, *where = args.hover.split(",")
            pg.evaluate(f"window.imgclsPage.inspect('{name}', {', '.join(where)})")
            if args.epoch is not None and not pg.evaluate(
                f"window.imgclsPage.setEpoch({args.epoch})"
            ):
                p.error(f"--epoch {args.epoch}: the run kept no snapshot after that epoch")
            for panel in args.panels.split(","):
                target = Path(args.out) / f"{args.prefix}-{panel}.png"
                pg.locator(PANELS[panel]).screenshot(path=str(target))
                print(f"wrote {target}")
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
