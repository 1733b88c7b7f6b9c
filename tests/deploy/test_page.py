"""The draw-a-digit page of ``imgcls serve`` (``imgcls/deploy/web``), driven in a real Chromium.

Playwright cannot download its own browser offline, so the tests drive the system Chromium
(Debian's ``chromium`` package; ``$IMGCLS_CHROMIUM`` points at another). Without it they skip,
unless ``IMGCLS_REQUIRE_BROWSER=1`` (then they fail: a CI job that means to run them must not
pass silently).

The main test draws digits stroke by stroke against a real export of the trained LeNet-5 and a
real server; the cheap ones serve the page from the package on a made-up origin and answer its
requests themselves (``page.route``), to check what the page does with other metadata and with
errors.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imgcls.deploy.idx import read_idx
from tests.helpers import ROOT
from tests.helpers.serving import running_server

try:
    from playwright import sync_api
except ImportError:  # the page-in-the-package test still runs
    sync_api = None

WEB = ROOT / "imgcls" / "deploy" / "web"
INSTALL = "apt-get install chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in a container has no user namespace for the sandbox
    "--disable-gpu",
    # Chromium's own update / sync / safe-browsing calls only fail offline and fill the log.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UPDATE_TIMEOUT_MS = 15_000

browser_mark = pytest.mark.browser

# Counts the page's POSTs in flight: the page promises never to have more than one.
COUNT_FETCHES = """
(() => {
  const orig = window.fetch.bind(window);
  window.__inFlight = 0;
  window.__maxInFlight = 0;
  window.__posts = 0;
  window.fetch = async (url, opts) => {
    const post = Boolean(opts && opts.method === "POST");
    if (post) {
      window.__posts += 1;
      window.__inFlight += 1;
      window.__maxInFlight = Math.max(window.__maxInFlight, window.__inFlight);
    }
    try {
      return await orig(url, opts);
    } finally {
      if (post) window.__inFlight -= 1;
    }
  };
})();
"""


# ----------------------------------------------------------------------------- the browser
def find_chromium() -> str | None:
    candidates = [os.environ.get("IMGCLS_CHROMIUM", ""), "/usr/bin/chromium"]
    candidates += ["/usr/bin/chromium-browser"]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return None


@pytest.fixture(scope="module")
def chromium_path() -> str:
    required = os.environ.get("IMGCLS_REQUIRE_BROWSER") == "1"
    if sync_api is None:
        why = "playwright is not installed: `pip install playwright` in the project's venv"
        if required:
            pytest.fail(f"IMGCLS_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    path = find_chromium()
    if path is None:
        if required:
            pytest.fail(f"IMGCLS_REQUIRE_BROWSER=1 but no Chromium found: run `{INSTALL}` as root")
        pytest.skip(
            f"no Chromium found ($IMGCLS_CHROMIUM, /usr/bin/chromium): run `{INSTALL}` as root, "
            "or `nox -s tests` which installs it"
        )
    return path


@pytest.fixture(scope="module")
def chromium(chromium_path: str) -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture()
def web_page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1100, "height": 1100})
    context.add_init_script(COUNT_FETCHES)
    pg = context.new_page()
    pg.set_default_timeout(UPDATE_TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
        assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        context.close()


# ----------------------------------------------------------------------------- drawing
Stroke = Sequence[tuple[float, float]]  # points as fractions of the pad, (x, y)


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 48) -> Stroke:
    """A closed loop, started at the top and drawn anticlockwise, as people draw a 0."""
    return [
        (cx - rx * math.sin(2 * math.pi * i / n), cy - ry * math.cos(2 * math.pi * i / n))
        for i in range(n + 2)  # two points past the start close the gap at the round cap
    ]


def line(*points: tuple[float, float], per_segment: int = 12) -> Stroke:
    """A polyline with many intermediate points, as a moving hand produces."""
    out = [points[0]]
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        out += [
            (x0 + (x1 - x0) * t / per_segment, y0 + (y1 - y0) * t / per_segment)
            for t in range(1, per_segment + 1)
        ]
    return out


# Each digit as a person draws it: strokes in order, each point a fraction of the pad.
DIGITS: dict[int, list[Stroke]] = {
    0: [ellipse(0.5, 0.5, 0.2, 0.32)],
    1: [line((0.53, 0.16), (0.47, 0.84))],
    7: [line((0.27, 0.2), (0.72, 0.2), (0.45, 0.84))],
    4: [line((0.52, 0.14), (0.26, 0.6), (0.76, 0.6)), line((0.6, 0.32), (0.6, 0.88))],
    2: [
        line((0.3, 0.3), (0.42, 0.18), (0.6, 0.18), (0.7, 0.3), (0.65, 0.48), (0.3, 0.82)),
        line((0.3, 0.82), (0.74, 0.82)),
    ],
}


def pad_box(pg: Any) -> dict[str, float]:
    box = pg.locator("#pad").bounding_box()
    assert box is not None and box["width"] > 0
    return box


def draw(pg: Any, strokes: list[Stroke], *, press: bool = True, release: bool = True) -> None:
    """Draw with the mouse; ``press`` / ``release`` False continue / leave open a stroke."""
    box = pad_box(pg)

    def at(p: tuple[float, float]) -> tuple[float, float]:
        return box["x"] + p[0] * box["width"], box["y"] + p[1] * box["height"]

    for i, stroke in enumerate(strokes):
        if press or i > 0:
            pg.mouse.move(*at(stroke[0]))
            pg.mouse.down()
        for p in stroke[1:]:
            pg.mouse.move(*at(p), steps=2)
        if release or i < len(strokes) - 1:
            pg.mouse.up()


def wait_for_prediction(pg: Any) -> int:
    """Wait until no request is in flight or waiting and a class is shown; return it."""
    pg.wait_for_function(
        "document.querySelector('#app').dataset.busy === 'false'"
        " && document.querySelector('#prediction').dataset.label !== undefined",
        timeout=UPDATE_TIMEOUT_MS,
    )
    return int(pg.get_attribute("#prediction", "data-label"))


def bars(pg: Any) -> list[dict[str, Any]]:
    return pg.eval_on_selector_all(
        "#bars .bar",
        """els => els.map(e => ({cls: Number(e.dataset.class),
                                 p: Number(e.dataset.probability),
                                 label: e.querySelector('.bar-label').textContent}))""",
    )


def tile_stats(pg: Any) -> list[dict[str, Any]]:
    """Per feature tile: its layer, size, and the min / max grey value of its pixels."""
    return pg.evaluate(
        """() => [...document.querySelectorAll('.fmap-tile')].map(t => {
             const d = t.getContext('2d').getImageData(0, 0, t.width, t.height).data;
             let lo = 255, hi = 0, alpha = 0;
             for (let i = 0; i < d.length; i += 4) {
               lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); alpha = Math.max(alpha, d[i + 3]);
             }
             return {layer: t.closest('.fmap-layer').dataset.label,
                     w: t.width, h: t.height, lo, hi, alpha};
           })"""
    )


def assert_shows(pg: Any, expected: int, class_names: list[str], what: str) -> None:
    shown = wait_for_prediction(pg)
    probs = bars(pg)
    assert shown == expected, f"{what}: the page shows {shown}, bars {probs}"
    assert pg.text_content("#prediction") == class_names[expected]
    assert len(probs) == 10 and [b["cls"] for b in probs] == list(range(10))
    assert [b["label"] for b in probs] == class_names
    assert sum(b["p"] for b in probs) == pytest.approx(1.0, abs=1e-3)
    assert max(probs, key=lambda b: b["p"])["cls"] == shown


def assert_cleared(pg: Any) -> None:
    pg.wait_for_function("document.querySelector('#prediction').dataset.label === undefined")
    assert all(b["p"] == 0 for b in bars(pg))
    ink = pg.evaluate(
        """() => { const c = document.querySelector('#pad');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let dark = 0; for (let i = 0; i < d.length; i += 4) dark += d[i] < 128;
                   return dark; }"""
    )
    assert ink == 0, "the pad still has ink after Clear"


def focus_by_tab(pg: Any, element_id: str, max_presses: int = 12) -> None:
    for _ in range(max_presses):
        pg.keyboard.press("Tab")
        if pg.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} not reached with {max_presses} presses of Tab")


# ----------------------------------------------------------------------------- real server
@pytest.fixture(scope="module")
def lenet_model(exported_lenet: Path) -> Path:
    return exported_lenet / "model.onnx"


def mnist_scan_png(real_data_root: Path, index: int) -> tuple[bytes, int]:
    """MNIST test image ``index`` as a photo would bring it: 112×112, dark ink on light paper."""
    from PIL import Image

    raw = real_data_root / "MNIST" / "raw"
    images = read_idx(raw / "t10k-images-idx3-ubyte")
    labels = read_idx(raw / "t10k-labels-idx1-ubyte")
    im = Image.fromarray(255 - images[index]).resize((112, 112), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="PNG")
    return buf.getvalue(), int(labels[index])


@browser_mark
@pytest.mark.real_data
@pytest.mark.slow
def test_draw_digits_against_real_server(
    web_page: Any, lenet_model: Path, exported_mlp: Path, real_data_root: Path, tmp_path: Path
) -> None:
    from imgcls.deploy.classifier import OnnxClassifier
    from tests.deploy.test_static_page import python_grid

    mlp = exported_mlp / "model.onnx"
    clfs = [OnnxClassifier(m, device="cpu") for m in (lenet_model, mlp)]
    with running_server(lenet_model, "--compare", str(mlp), log=tmp_path / "serve.log") as server:
        web_page.goto(server.url + "/")
        web_page.wait_for_selector("#app[data-model=ready]", state="attached")
        meta = web_page.evaluate("fetch('metadata').then(r => r.json())")
        names = meta["class_names"]
        assert names == [str(i) for i in range(10)]
        title = web_page.text_content("#title") or ""
        assert "lenet5" in title and "MNIST" in title
        assert meta["model_id"] in (web_page.text_content("#model-info") or "")
        assert web_page.get_attribute("#pad", "role") == "img"
        assert web_page.get_attribute("#prediction-region", "aria-live") == "polite"
        assert meta["compare"]["net"] == "mlp" and meta["compare"]["model_id"]
        assert [r["distance_px"] for r in meta["shift"]["distances"]] == [1, 2, 3]

        # Drawn digits, each on a clean pad; the page updates while drawing.
        assert meta["features"] is True
        channels = sum(m["shape"][0] for m in meta["feature_maps"])
        assert channels > 0
        for digit, strokes in DIGITS.items():
            web_page.click("#clear")
            assert_cleared(web_page)
            draw(web_page, strokes)
            assert_shows(web_page, digit, names, f"drawn {digit}")
            # the shift panel: the server's two models on the page's framed input, in one
            # JSON batch of 49 shifts each, against onnxruntime in Python
            x = web_page.evaluate("window.imgclsPage.input()")
            x = np.array(x, np.uint8).reshape(1, 1, 28, 28)
            for g, clf in zip(web_page.evaluate("window.imgclsPage.grid()"), clfs, strict=True):
                want = python_grid(clf, x)
                assert g["label"] == int(want[3, 3].argmax())
                assert np.abs(np.array(g["rows"]) - want[:, :, g["label"]]).max() <= 1e-4
            # the server framed the PNG it was sent as the page framed the drawing
            at_rest = web_page.evaluate("window.imgclsPage.answers()")[0]["probabilities"]
            assert [b["p"] for b in bars(web_page)] == pytest.approx(at_rest, abs=1e-4)
            tiles = tile_stats(web_page)
            assert len(tiles) == channels
            for layer in meta["feature_maps"]:
                mine = [t for t in tiles if t["layer"] == layer["label"]]
                assert len(mine) == layer["shape"][0]
                assert all((t["h"], t["w"]) == tuple(layer["shape"][1:]) for t in mine)
                assert all(t["alpha"] == 255 for t in mine), f"{layer['label']}: tiles not drawn"
                # A channel can be dead for one input; a whole layer cannot.
                assert any(t["hi"] > t["lo"] for t in mine), f"{layer['label']}: all constant"
        # Mid-stroke, with the button still down, the page already shows a prediction.
        web_page.click("#clear")
        assert_cleared(web_page)
        stroke = DIGITS[7][0]
        half = len(stroke) // 2
        draw(web_page, [stroke[:half]], release=False)
        web_page.wait_for_function("document.querySelector('#prediction').dataset.label")
        draw(web_page, [stroke[half - 1 :]], press=False)
        assert_shows(web_page, 7, names, "7 drawn in one stroke, checked halfway")

        posts = web_page.evaluate("window.__posts")
        assert posts > 2 * len(DIGITS), "the page should update while drawing, not only at the end"
        assert web_page.evaluate("window.__maxInFlight") == 1
        web_page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

        # Clear by keyboard: Tab reaches Clear (with a visible focus ring), Enter and Space
        # press it; Tab goes on to the upload input; Escape clears too.
        for key in ("Enter", " ", "Escape"):
            draw(web_page, DIGITS[1])
            wait_for_prediction(web_page)
            web_page.evaluate("document.activeElement && document.activeElement.blur()")
            if key != "Escape":
                focus_by_tab(web_page, "clear")
                outline = web_page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
                assert outline not in ("", "none"), "no visible focus on Clear"
            web_page.keyboard.press(key)
            assert_cleared(web_page)
        focus_by_tab(web_page, "clear")
        focus_by_tab(web_page, "upload", max_presses=3)
        assert web_page.get_attribute("#upload", "accept") == "image/*"

        # A photo of a real MNIST test digit, sent as the file a visitor would pick.
        png, label = mnist_scan_png(real_data_root, 0)
        web_page.set_input_files(
            "#upload", files=[{"name": "scan.png", "mimeType": "image/png", "buffer": png}]
        )
        assert web_page.is_visible("#photo")
        assert_shows(web_page, label, names, "uploaded MNIST test image 0")
        assert len(tile_stats(web_page)) == channels

        # A file that is no image: the server's detail reaches the status line.
        web_page.set_input_files(
            "#upload",
            files=[{"name": "notes.txt", "mimeType": "image/png", "buffer": b"not a picture"}],
        )
        web_page.wait_for_function("document.querySelector('#status').classList.contains('error')")
        assert "refused" in (web_page.text_content("#status") or "")
        web_page.wait_for_selector("#photo-figure", state="hidden")
        web_page.screenshot(path=str(tmp_path / "page-error.png"), full_page=True)


# ----------------------------------------------------------------------------- routed page
FASHION = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
ORIGIN = "http://imgcls.test"


def softmax_answer(label: int, names: list[str]) -> dict[str, Any]:
    probs = [0.02] * 10
    probs[label] = 1.0 - 0.02 * 9
    return {
        "label": label,
        "class_name": names[label],
        "probabilities": probs,
        "model_id": "abcdef012345",
        "provider": "CPUExecutionProvider",
    }


def serve_routed(
    pg: Any, metadata: dict[str, Any], answer: Callable[[Any], tuple[int, dict[str, Any]]]
) -> list[str]:
    """Serve the package's page on ORIGIN without a server; ``answer`` handles the POSTs."""
    posted: list[str] = []
    types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}

    def handle(route: Any) -> None:
        req = route.request
        path = req.url[len(ORIGIN) :].split("?")[0]
        if path == "/":
            path = "/static/index.html"
        if req.method == "GET" and path.startswith("/static/"):
            f = WEB / path[len("/static/") :]
            if f.is_file():
                route.fulfill(body=f.read_bytes(), content_type=types.get(f.suffix, "text/plain"))
                return
        if req.method == "GET" and path == "/metadata":
            route.fulfill(json=metadata)
            return
        if req.method == "POST":
            posted.append(path)
            status, body = answer(req)
            if status == 200 and "json" in (req.headers.get("content-type") or ""):
                # a JSON batch (the shift panel's 49 inputs): one answer per image, as the
                # server gives
                n = len(json.loads(req.post_data or "{}").get("pixels", []))
                body = {"predictions": [body] * n, "model_id": body.get("model_id")}
            route.fulfill(status=status, json=body)
            return
        route.fulfill(status=404, json={"detail": f"no {path}"})

    pg.route(ORIGIN + "/**", handle)
    pg.goto(ORIGIN + "/")
    pg.wait_for_selector("#app[data-model=ready]", state="attached")
    return posted


@browser_mark
def test_class_names_come_from_metadata(web_page: Any, tmp_path: Path) -> None:
    meta = {
        "class_names": FASHION,
        "dataset": "fashion_mnist",
        "net": "mlp",
        "model_id": "abcdef012345",
        "provider": "CPUExecutionProvider",
        "features": False,
        "input": {"shape": ["batch", 1, 28, 28]},
    }
    posted = serve_routed(web_page, meta, lambda req: (200, softmax_answer(9, FASHION)))
    assert [b["label"] for b in bars(web_page)] == FASHION
    assert "Fashion-MNIST" in (web_page.text_content("#title") or "")
    assert "abcdef012345" in (web_page.text_content("#model-info") or "")
    note = web_page.locator("#features-note")
    assert note.is_visible() and "No feature maps" in (note.text_content() or "")
    assert web_page.locator(".fmap-tile").count() == 0

    draw(web_page, DIGITS[1])
    assert wait_for_prediction(web_page) == 9
    assert web_page.text_content("#prediction") == "Ankle boot"
    assert set(posted) == {"/predict"}, "no /features request for a model without feature maps"
    web_page.screenshot(path=str(tmp_path / "fashion.png"), full_page=True)


@browser_mark
def test_server_errors_are_shown(web_page: Any) -> None:
    meta = {
        "class_names": [str(i) for i in range(10)],
        "dataset": "mnist",
        "net": "lenet5",
        "model_id": "0123456789ab",
        "features": True,
        "feature_maps": [
            {"output": "f0", "label": "conv1", "kind": "conv", "shape": [2, 4, 4]},
            {"output": "f1", "label": "pool1", "kind": "pool", "shape": [2, 2, 2]},
        ],
    }
    mode = {"now": "refuse"}

    def answer(req: Any) -> tuple[int, dict[str, Any]]:
        if mode["now"] == "refuse":
            return 422, {"detail": "the image has no ink"}
        if req.url.endswith("/features"):
            # the feature model has gone: the page falls back to /predict
            return 404, {"detail": "no feature model"}
        return 200, softmax_answer(3, meta["class_names"])

    posted = serve_routed(web_page, meta, answer)
    assert web_page.locator(".fmap-tile").count() == 4
    draw(web_page, [[(0.5, 0.5), (0.5, 0.5)]])
    web_page.wait_for_function("document.querySelector('#app').dataset.busy === 'false'")
    assert web_page.locator("#status").evaluate("e => e.classList.contains('error')")
    assert "the image has no ink" in (web_page.text_content("#status") or "")
    assert web_page.get_attribute("#prediction", "data-label") is None

    mode["now"] = "answer"
    refused = len(posted)
    assert refused >= 1 and set(posted) == {"/features"}
    draw(web_page, DIGITS[1])
    assert wait_for_prediction(web_page) == 3
    later = posted[refused:]
    assert later[:2] == ["/features", "/predict"] and set(later[2:]) <= {"/predict"}
    assert web_page.locator("#features-note").is_visible()
    assert not (web_page.text_content("#status") or "").strip()


def test_page_ships_in_the_package() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"deploy/web/*"' in pyproject  # package data, where serve.WEB_DIR looks
    for name in ("index.html", "app.js", "style.css"):
        assert (WEB / name).is_file()
    html = (WEB / "index.html").read_text()
    # offline: nothing from a CDN
    assert "http://" not in html and "https://" not in html


@browser_mark
@pytest.mark.real_data
@pytest.mark.slow
def test_api_key_is_asked_for_once_and_sent(
    web_page: Any, lenet_model: Path, tmp_path: Path
) -> None:
    """``imgcls serve`` with a key: its API answers 401, the page's own files stay open; the
    page asks for the key (again, with a message, when it is wrong), keeps it for the tab and
    sends it as X-API-Key on every API request."""
    key = "correct horse battery staple"
    sent: list[str | None] = []
    web_page.on(
        "request",
        lambda r: (
            sent.append(r.headers.get("x-api-key"))
            if r.url.endswith(("/metadata", "/features", "/predict"))
            else None
        ),
    )
    with running_server(
        lenet_model, log=tmp_path / "serve.log", env={"IMGCLS_API_KEY": key}
    ) as server:
        web_page.goto(server.url + "/")
        web_page.wait_for_selector("#key-form", state="visible")
        assert "needs an API key" in (web_page.text_content("#key-message") or "")
        assert web_page.text_content("#model-name") == "loading model…"
        web_page.fill("#key-input", "wrong key")
        web_page.click("#key-submit")
        web_page.wait_for_function(
            "document.querySelector('#key-message').textContent.includes('refused')"
        )
        assert web_page.is_visible("#key-form")
        web_page.fill("#key-input", key)
        web_page.press("#key-input", "Enter")
        web_page.wait_for_selector("#key-form", state="hidden")
        web_page.wait_for_selector("#app[data-model=ready]", state="attached")
        assert "lenet5" in (web_page.text_content("#model-name") or "")
        draw(web_page, DIGITS[1])
        assert wait_for_prediction(web_page) == 1
        assert web_page.evaluate("sessionStorage.getItem('imgcls-api-key')") == key
        # a reload in the same tab asks for nothing: the key is kept for the session
        web_page.reload()
        web_page.wait_for_selector("#app[data-model=ready]", state="attached")
        assert not web_page.is_visible("#key-form")
        assert "lenet5" in (web_page.text_content("#model-name") or "")
    assert sent[:3] == [None, "wrong key", key]
    assert len(sent) > 4 and all(k == key for k in sent[2:])
