"""The JavaScript framing of the static page (``imgcls/deploy/web/framing.js``) against the
Python one (``imgcls.deploy.framing``, ``imgcls.deploy.images``), pixel by pixel.

Shared test vectors, generated here: grey pictures (re-rendered photos of real MNIST digits as
Pillow decodes them, and random pictures of many sizes and shapes) and RGBA pixels, with what
the Python framing makes of them. node (``/usr/bin/node``) runs framing.js on the same inputs.
The tolerance is zero: every pixel of every 28x28 output equal.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from imgcls.deploy.framing import frame_like_fashion, frame_like_mnist
from imgcls.deploy.images import decode_image
from imgcls.deploy.photos import render_photos
from tests.helpers import ROOT, require_system

FRAMING_JS = ROOT / "imgcls" / "deploy" / "web" / "framing.js"
NODE = shutil.which("node")

RUNNER = """
const F = require(process.argv[2]);
const cases = JSON.parse(require("fs").readFileSync(0, "utf8"));
const b64 = (s) => Uint8Array.from(Buffer.from(s, "base64"));
const out = cases.map((c) => {
  if (c.rgba) {
    const grey = F.greyOf(b64(c.rgba), c.w, c.h);
    const x = F.toModelInput(grey, 28, c.framing);
    return Buffer.from(x).toString("base64");
  }
  const grey = { width: c.w, height: c.h, data: b64(c.grey) };
  const x = c.framing === "mnist" ? F.frameLikeMnist(grey) : F.frameLikeFashion(grey);
  return Buffer.from(x).toString("base64");
});
process.stdout.write(JSON.stringify(out));
"""


def run_node(cases: list[dict], tmp_path: Path) -> list[np.ndarray]:
    require_system(NODE is not None, "node", "apt-get install nodejs")
    runner = tmp_path / "runner.js"
    runner.write_text(RUNNER)
    proc = subprocess.run(
        [str(NODE), str(runner), str(FRAMING_JS)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [np.frombuffer(base64.b64decode(s), np.uint8) for s in json.loads(proc.stdout)]


def b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()


def photo_greys(n: int, real_data_root: Path) -> list[np.ndarray]:
    from PIL import Image

    from imgcls.deploy.idx import read_idx

    digits = read_idx(real_data_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte")[:n]
    greys = []
    for kind, blob in render_photos(digits, seed=3, kinds=("grey_jpeg", "colour_jpeg")):
        greys.append(np.asarray(Image.open(io.BytesIO(blob)).convert("L")))
        assert kind
    return greys


def random_greys(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    out = []
    for k in range(n):
        h, w = (int(v) for v in rng.integers(1, 90, 2))
        g = (rng.random((h, w)) * 256).astype(np.uint8)
        if k % 3 == 1:  # mostly paper, some ink: the kind of picture framing is for
            g = np.where(rng.random((h, w)) < 0.85, rng.integers(150, 256), g).astype(np.uint8)
        elif k % 3 == 2:  # a blob of ink on a flat background
            g = np.full((h, w), 230, np.uint8)
            g[h // 4 : max(h // 4 + 1, 3 * h // 4), w // 3 : max(w // 3 + 1, 2 * w // 3)] = 20
        out.append(g)
    return out


@pytest.mark.real_data
def test_js_framing_equals_python_pixel_for_pixel(real_data_root: Path, tmp_path: Path) -> None:
    greys = photo_greys(60, real_data_root) + random_greys(60)
    cases, want = [], []
    for g in greys:
        for framing, fn in (("mnist", frame_like_mnist), ("fashion_mnist", frame_like_fashion)):
            cases.append({"w": g.shape[1], "h": g.shape[0], "grey": b64(g), "framing": framing})
            want.append(fn(g).ravel())
    got = run_node(cases, tmp_path)
    differing = [
        i for i, (a, b) in enumerate(zip(got, want, strict=True)) if not np.array_equal(a, b)
    ]
    worst = max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(got, want, strict=True))
    print(f"\n{len(cases)} framings: {len(differing)} differ, largest pixel difference {worst}")
    assert not differing, f"cases {differing[:5]} differ (largest pixel difference {worst})"
    # not a vacuous comparison: the outputs hold ink, and differ between the framings
    assert sum(int(w.max() > 0) for w in want) > 0.9 * len(want)


def test_js_decode_steps_equal_decode_image(tmp_path: Path) -> None:
    """RGBA as the browser hands it over (opaque colour, transparent ink) -> grey -> framed,
    against ``decode_image`` on the same pixels saved as PNG."""
    from PIL import Image

    rng = np.random.default_rng(11)
    cases, want = [], []
    for k in range(24):
        h, w = (int(v) for v in rng.integers(30, 120, 2))
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[..., :3] = rng.integers(180, 256, 3)  # tinted paper
        y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        rgba[y0 : y0 + h // 3, x0 : x0 + w // 4, :3] = rng.integers(0, 90, 3)  # a pen's mark
        if k % 2:  # a drawing program's transparent PNG: the ink on the alpha channel
            alpha = np.zeros((h, w), np.uint8)
            alpha[y0 : y0 + h // 3, x0 : x0 + w // 4] = 255
            rgba[..., 3] = alpha
            rgba[..., :3] = 30
        else:
            rgba[..., 3] = 255
        framing = "mnist" if k % 4 < 2 else "fashion_mnist"
        buf = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(buf, "PNG")
        want.append(decode_image(buf.getvalue(), preprocess=framing).ravel())
        cases.append({"w": w, "h": h, "rgba": b64(rgba), "framing": framing})
    got = run_node(cases, tmp_path)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert np.array_equal(a, b), (
            f"case {i}: largest difference {np.abs(a.astype(int) - b).max()}"
        )
    assert all(w.max() > 0 for w in want)
