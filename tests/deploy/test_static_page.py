"""The static site of ``imgcls page``, driven in a real Chromium against ``python -m http.server``.

One site per session (the trained LeNet-5 export), one browser. Every request that is not to
the local static server is aborted and fails the test: the site must work offline, from its own
files. Console errors and page errors fail the test too.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imgcls.__main__ import main
from imgcls.deploy import npm, site
from imgcls.deploy.idx import read_idx
from imgcls.deploy.images import decode_image
from tests.deploy import test_page
from tests.deploy.test_page import (
    DIGITS,
    bars,
    draw,
    tile_stats,
    wait_for_prediction,
)
from tests.helpers import free_port, wait_for_port

pytestmark = [pytest.mark.real_data]
browser = pytest.mark.browser
LOAD_TIMEOUT_MS = 30_000
PHOTOS = 300


# ----------------------------------------------------------------------------- building
@pytest.fixture(scope="module")
def lenet_site(exported_lenet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site") / "lenet"
    site.build_site(exported_lenet / "model.onnx", out, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def fashion_export(real_data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained Fashion-MNIST MLP, exported: the clothes' class names, no feature model."""
    from imgcls.export import export_checkpoint
    from tests.helpers.training import make_checkpoint

    work = tmp_path_factory.mktemp("fashion")
    ckpt = make_checkpoint(work / "mlp.ckpt", "mlp", {"hidden": [16]}, dataset="fashion_mnist")
    export_checkpoint(
        ckpt, work / "export", data_dir=real_data_root, parity_subset=100, log=lambda _: None
    )
    return work / "export"


def test_site_holds_the_page_models_metadata_and_runtime(
    lenet_site: Path, exported_lenet: Path
) -> None:
    files = sorted(str(p.relative_to(lenet_site)) for p in lenet_site.rglob("*") if p.is_file())
    assert files == [
        ".imgcls-site",
        "index.html",
        "metadata.json",
        "model.features.onnx",
        "model.onnx",
        "static/app.js",
        "static/epochs.js",
        "static/framing.js",
        "static/layers.js",
        "static/ort-wasm-simd-threaded.mjs",
        "static/ort-wasm-simd-threaded.wasm",
        "static/ort.wasm.min.js",
        "static/playground.js",
        "static/runtime-browser.js",
        "static/style.css",
        "static/teach.js",
        "weights.bin",
    ]
    html = (lenet_site / "index.html").read_text()
    assert site.RUNTIME_BROWSER in html and site.RUNTIME_SERVER not in html
    assert "http://" not in html and "https://" not in html
    # one code base: the scripts are the package's, byte for byte
    for name in site.PAGE_FILES:
        assert (lenet_site / "static" / name).read_bytes() == (site.WEB_DIR / name).read_bytes()
    assert (lenet_site / "model.onnx").read_bytes() == (exported_lenet / "model.onnx").read_bytes()
    meta = json.loads((lenet_site / "metadata.json").read_text())
    assert meta["runtime"] == "browser" and meta["framing"] == "mnist"
    assert meta["max_pixels"] == 64_000_000
    assert [m["shape"] for m in meta["feature_maps"]] == [
        [6, 28, 28],
        [6, 14, 14],
        [16, 10, 10],
        [16, 5, 5],
    ]
    text = json.dumps(meta)
    assert str(Path.home()) not in text and "/tmp" not in text and ".ckpt" not in text
    total = sum(p.stat().st_size for p in lenet_site.rglob("*") if p.is_file())
    print(f"\nsite: {len(files)} files, {total / 2**20:.1f} MiB")
    assert total < 20 * 2**20


def test_out_of_something_else_is_refused_and_kept(
    exported_lenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("keep me")
    code = main(["page", "--model", str(exported_lenet / "model.onnx"), "--out", str(notes)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("imgcls: error: --out") and "not a site imgcls built" in err[0]
    assert [p.name for p in notes.iterdir()] == ["thesis.tex"]
    assert (notes / "thesis.tex").read_text() == "keep me"


def test_failed_rebuild_leaves_the_previous_site(
    exported_lenet: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "site"
    site.build_site(exported_lenet / "model.onnx", out, log=lambda _: None)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(blob: bytes, members: dict[str, Path]) -> None:
        next(iter(members.values())).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(npm, "extract", broken)
    code = main(["page", "--model", str(exported_lenet / "model.onnx"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"imgcls: error: --out {out}: the site could not be written")
    assert "No space left on device" in err[0] and "previous site there is intact" in err[0]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["site"], "the staged folder was left"
    monkeypatch.undo()
    # a previous site is replaced whole by a good build
    site.build_site(exported_lenet / "model.onnx", out, log=lambda _: None)
    assert (out / "static" / "app.js").read_bytes() == (site.WEB_DIR / "app.js").read_bytes()


def page(model: Path, out: Path | str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["page", "--model", str(model / "model.onnx"), "--out", str(out)])
    return code, capsys.readouterr().err.strip().splitlines()


def test_out_that_is_a_symlink_writes_into_its_target_and_keeps_the_link(
    exported_lenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "target").mkdir()
    link = tmp_path / "link"
    link.symlink_to("target")
    for _ in range(2):  # a first build into the empty target, then a rebuild
        code, err = page(exported_lenet, link, capsys)
        assert code == 0 and err == []
        assert link.is_symlink() and os.readlink(link) == "target"
        assert (tmp_path / "target" / "model.onnx").read_bytes() == (
            exported_lenet / "model.onnx"
        ).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "target"]  # nothing staged
    # a link that loops is one line, and stays as it was
    (tmp_path / "loop").symlink_to("loop")
    code, err = page(exported_lenet, tmp_path / "loop", capsys)
    assert code == 2 and len(err) == 1 and "a symlink that loops" in err[0]
    assert os.readlink(tmp_path / "loop") == "loop"


def test_out_that_is_or_holds_the_current_folder_is_one_line(
    exported_lenet: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    here = tmp_path / "work" / "here"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    for out, what in [(".", "is the current folder"), ("..", "holds the current folder")]:
        code, err = page(exported_lenet, out, capsys)
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith(f"imgcls: error: --out {out}: {what}") and "--out site" in err[0]
    assert list(tmp_path.rglob("*")) == [tmp_path / "work", here]  # nothing written
    # the same site from the current folder's parent, as the message says
    monkeypatch.chdir(here.parent)
    code, _ = page(exported_lenet, "here", capsys)
    assert code == 0 and (here / "index.html").is_file()


@pytest.mark.slow
def test_rebuild_replaces_only_the_files_imgcls_wrote(
    exported_lenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "site"
    assert page(exported_lenet, out, capsys)[0] == 0
    # What a GitHub Pages repository holds beside the site, and a page of the user's own.
    mine = {
        "CNAME": b"digits.example.org\n",
        ".nojekyll": b"",
        ".git/HEAD": b"ref: refs/heads/main\n",
        ".git/objects/ab/cdef": b"\x78\x01 a git object",
        "static/extra.css": b"body { margin: 0 }",
        "about.html": b"<p>mine</p>",
    }
    for name, data in mine.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    (out / "cname-link").symlink_to("CNAME")
    (out / ".git" / "refs").mkdir()  # an empty folder
    (out / "model.onnx").write_bytes(b"edited: a file imgcls wrote is replaced")
    code, err = page(exported_lenet, out, capsys)
    assert code == 0 and err == []
    for name, data in mine.items():
        assert (out / name).read_bytes() == data, name
    assert os.readlink(out / "cname-link") == "CNAME" and (out / ".git" / "refs").is_dir()
    assert (out / "model.onnx").read_bytes() == (exported_lenet / "model.onnx").read_bytes()
    written = json.loads((out / site.SITE_MARKER).read_text())["files"]
    assert "index.html" in written and "static/app.js" in written and "CNAME" not in written
    # A site made before the marker listed its files: the files of that layout are replaced.
    (out / site.SITE_MARKER).write_text('{"format": "imgcls-site/1", "model_id": "x"}\n')
    (out / site.WEIGHTS_FILE).unlink()  # such sites had no layer weights
    (out / "static" / "app.js").write_text("old")
    assert page(exported_lenet, out, capsys)[0] == 0
    assert (out / "static" / "app.js").read_bytes() == (site.WEB_DIR / "app.js").read_bytes()
    assert (out / "CNAME").read_bytes() == mine["CNAME"]
    # A file of the user's where the new site writes one: refused, nothing changed.
    marker = json.loads((out / site.SITE_MARKER).read_text())
    marker["files"].remove("index.html")
    (out / site.SITE_MARKER).write_text(json.dumps(marker))
    (out / "index.html").write_text("my own index")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, err = page(exported_lenet, out, capsys)
    assert code == 2 and len(err) == 1
    assert f"{out / 'index.html'} is not a file imgcls wrote" in err[0]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["site"]


def test_npm_package_failing_its_sha256_is_never_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    pkg = npm.NpmPackage("left-pad", "1.3.0", "0" * 64)
    monkeypatch.setattr(npm, "_npm_pack", lambda p, work: b"substituted tarball")
    monkeypatch.setattr(npm.shutil, "which", lambda name: "/usr/bin/npm")
    with pytest.raises(npm.NpmError, match="failed its sha256 check"):
        npm.package_tarball(pkg)
    assert not (tmp_path / "cache" / "npm" / pkg.tarball_name).exists()
    # a damaged cached copy is not used: it is fetched again (and checked again)
    good = b"the real tarball"
    import hashlib

    pkg = npm.NpmPackage("left-pad", "1.3.0", hashlib.sha256(good).hexdigest())
    cached = tmp_path / "cache" / "npm" / pkg.tarball_name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"damaged")
    monkeypatch.setattr(npm, "_npm_pack", lambda p, work: good)
    assert npm.package_tarball(pkg) == good
    assert cached.read_bytes() == good


# ----------------------------------------------------------------------------- the browser
@contextlib.contextmanager
def static_server(folder: Path) -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", str(folder), str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=15)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


# the page tests' browser (module-scoped; skips, or fails in CI, as they do where none is)
chromium, chromium_path = test_page.chromium, test_page.chromium_path


class Visit:
    """A page of a static site, with every request off the site aborted and recorded."""

    def __init__(self, chromium: Any, folder: Path) -> None:
        self.folder = folder
        self.chromium = chromium
        self.outside: list[str] = []
        self.errors: list[str] = []

    def __enter__(self) -> Any:
        self._server = static_server(self.folder)
        self.url = self._server.__enter__()
        self.context = self.chromium.new_context(viewport={"width": 1100, "height": 1100})
        pg = self.context.new_page()
        pg.set_default_timeout(LOAD_TIMEOUT_MS)

        def route(r: Any) -> None:
            if r.request.url.startswith(self.url + "/") or r.request.url.startswith("blob:"):
                r.continue_()
            else:
                self.outside.append(r.request.url)
                r.abort()

        pg.route("**/*", route)
        pg.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        pg.on(
            "console",
            lambda m: (
                self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
            ),
        )
        pg.goto(self.url + "/")
        pg.wait_for_function(
            "document.querySelector('#status').textContent.startsWith('Ready')"
            " || document.querySelector('#status').classList.contains('error')"
        )
        self.page = pg
        return self

    def __exit__(self, *exc: Any) -> None:
        self.context.close()
        self._server.__exit__(*exc)
        if exc[0] is None:
            assert not self.outside, f"the page asked the network for {self.outside}"
            assert not self.errors, f"errors on the page: {self.errors}"


def upload(pg: Any, name: str, data: bytes, mime: str = "image/png") -> None:
    pg.evaluate("document.querySelector('#prediction').removeAttribute('data-label')")
    pg.set_input_files("#upload", files=[{"name": name, "mimeType": mime, "buffer": data}])
    pg.wait_for_function(
        "document.querySelector('#app').dataset.busy === 'false'"
        " && !document.querySelector('#status').textContent.startsWith('Reading')"
    )


@browser
@pytest.mark.slow
def test_static_page_reads_strokes_and_shows_every_feature_map(
    chromium: Any, lenet_site: Path, tmp_path: Path
) -> None:
    meta = json.loads((lenet_site / "metadata.json").read_text())
    with Visit(chromium, lenet_site) as v:
        pg = v.page
        assert "lenet5" in (pg.text_content("#title") or "")
        assert "onnxruntime-web" in (pg.text_content("#model-info") or "")
        assert [b["label"] for b in bars(pg)] == [str(i) for i in range(10)]
        for digit in (1, 7, 0):
            pg.click("#clear")
            draw(pg, DIGITS[digit])
            shown = wait_for_prediction(pg)
            assert shown == digit, f"drawn {digit}: the page reads {shown}, bars {bars(pg)}"
            assert sum(b["p"] for b in bars(pg)) == pytest.approx(1.0, abs=1e-3)
            # The answer is the whole stroke's, even where the page kept the request that was
            # in flight at the pointerup: its input is the framing of the pad's last pixels.
            url = pg.evaluate("document.querySelector('#pad').toDataURL('image/png')")
            png = base64.b64decode(url.split(",", 1)[1])
            pad = decode_image(png, preprocess="auto", dataset="mnist").ravel()
            ran = np.array(pg.evaluate("window.imgclsPage.input()"), np.uint8)
            assert np.array_equal(ran, pad), np.abs(ran.astype(int) - pad).max()
            tiles = tile_stats(pg)
            assert len(tiles) == sum(m["shape"][0] for m in meta["feature_maps"])
            for layer in meta["feature_maps"]:
                mine = [t for t in tiles if t["layer"] == layer["label"]]
                assert len(mine) == layer["shape"][0], layer
                assert all((t["h"], t["w"]) == tuple(layer["shape"][1:]) for t in mine)
                assert all(t["alpha"] == 255 for t in mine), f"{layer['label']}: not drawn"
                assert any(t["hi"] > t["lo"] for t in mine), f"{layer['label']}: all constant"
        kinds = pg.eval_on_selector_all(".fmap-layer", "ls => ls.map(l => l.className)")
        assert (
            sum("fmap-conv" in k for k in kinds) == 2 and sum("fmap-pool" in k for k in kinds) == 2
        )
        timings = pg.evaluate("window.imgclsPage.timings")
        assert len(timings) >= 3
        print(f"\nstroke end to every panel drawn: {[round(t, 1) for t in timings]} ms")
        pg.screenshot(path=str(tmp_path / "static-page.png"), full_page=True)


@browser
@pytest.mark.slow
def test_photos_through_the_page_agree_with_imgcls_infer(
    chromium: Any, lenet_site: Path, real_data_root: Path, tmp_path: Path
) -> None:
    from imgcls.deploy.photos import render_photos

    digits = read_idx(real_data_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte")[:PHOTOS]
    files = []
    for i, (kind, blob) in enumerate(render_photos(digits, seed=0)):
        f = tmp_path / f"photo{i:03d}.{'png' if kind == 'transparent_png' else 'jpg'}"
        f.write_bytes(blob)
        files.append(f)
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "infer", "--model", str(lenet_site / "model.onnx")]
        + ["--format", "json", "--device", "cpu", *map(str, files)],
        capture_output=True,
        text=True,
        check=True,
    )
    infer = {Path(r["input"]).name: r for r in json.loads(proc.stdout)}
    same, gaps, kinds_off = 0, [], {}
    with Visit(chromium, lenet_site) as v:
        for f in files:
            mime = "image/png" if f.suffix == ".png" else "image/jpeg"
            upload(v.page, f.name, f.read_bytes(), mime)
            label = int(v.page.get_attribute("#prediction", "data-label"))
            p = max(b["p"] for b in bars(v.page))
            want = infer[f.name]
            if label == want["label"]:
                same += 1
                gaps.append(abs(p - want["probability"]))
            else:
                kinds_off[f.suffix] = kinds_off.get(f.suffix, 0) + 1
    share = same / len(files)
    print(
        f"\n{len(files)} photos: same top-1 as imgcls infer for {same} ({100 * share:.1f} %), "
        f"differing {kinds_off}; top-1 probability gap where they agree: max "
        f"{max(gaps):.5f}, mean {np.mean(gaps):.5f}"
    )
    assert share >= 0.995
    assert max(gaps) <= 0.01


@browser
@pytest.mark.slow
def test_bad_input_is_a_message_on_the_page(chromium: Any, lenet_site: Path) -> None:
    from PIL import Image

    huge = io.BytesIO()
    Image.new("1", (9000, 8000), 1).save(huge, "PNG")  # 72 megapixels, a small file
    with Visit(chromium, lenet_site) as v:
        pg = v.page
        upload(pg, "notes.txt", b"not a picture at all", "image/png")
        status = pg.text_content("#status") or ""
        assert pg.locator("#status").evaluate("e => e.classList.contains('error')")
        assert "notes.txt: not an image file the page can read" in status
        assert pg.get_attribute("#prediction", "data-label") is None
        upload(pg, "huge.png", huge.getvalue())
        status = pg.text_content("#status") or ""
        assert "huge.png: refused, it declares 9000x8000 pixels" in status
        assert "64,000,000" in status
        assert pg.get_attribute("#prediction", "data-label") is None
        # the page still works afterwards
        pg.click("#clear")
        draw(pg, DIGITS[1])
        assert wait_for_prediction(pg) == 1


@browser
@pytest.mark.slow
def test_fashion_export_builds_a_page_about_clothes(
    chromium: Any, fashion_export: Path, tmp_path: Path
) -> None:
    out = tmp_path / "fashion-site"
    site.build_site(fashion_export / "model.onnx", out, log=lambda _: None)
    assert not (out / "model.features.onnx").exists()
    with Visit(chromium, out) as v:
        pg = v.page
        names = [b["label"] for b in bars(pg)]
        assert names[:2] == ["T-shirt/top", "Trouser"] and names[-1] == "Ankle boot"
        assert "Fashion-MNIST" in (pg.text_content("#title") or "")
        assert "piece of clothing" in (pg.text_content("#status") or "")
        note = pg.locator("#features-note")
        assert note.is_visible() and "No feature maps" in (note.text_content() or "")
        assert "model.features.onnx" in (note.text_content() or "")
        draw(pg, DIGITS[1])
        label = wait_for_prediction(pg)
        assert pg.text_content("#prediction") == names[label]
        assert pg.locator(".fmap-tile").count() == 0
        # an MLP gets its own picture: its dense layers, the logits and the softmax
        heads = pg.eval_on_selector_all(".layer-head", "hs => hs.map(h => h.textContent)")
        assert any("params 16×784+16 = 12,560" in h for h in heads), heads
        assert pg.locator(".layer-logits").count() == 1 and pg.locator(".dense-strip").count() == 1
        units = pg.evaluate("window.imgclsPage.units()")
        assert len(units["features.1"]) == 16 and min(units["features.1"]) >= 0
        assert np.argmax(units["head"]) == label
        # hover one of its hidden units: its 784 weights as the 28x28 picture they weigh
        from imgcls.deploy.onnx_weights import float_initializers

        weights = float_initializers(out / "model.onnx")
        u = pg.evaluate("window.imgclsPage.inspect('features.1', 5, 0, 0)")
        assert np.array_equal(np.float32(u["weights"]), weights["net.features.1.weight"][5])
        assert u["activated"] == pytest.approx(units["features.1"][5], abs=1e-5)
        picture = pg.locator(".inspector canvas.inspect-picture")
        assert picture.count() == 1
        assert picture.evaluate("c => [c.width, c.height]") == [28, 28]


FRAME_IN_PAGE = """async (photos) => {
  const out = [];
  for (const [name, b64, mime] of photos) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const file = new File([bytes], name, { type: mime });
    const t0 = performance.now();
    const x = await window.imgclsPage.backend.inputOf({ file });
    out.push([Array.from(x), performance.now() - t0]);
  }
  return out;
}"""


@browser
@pytest.mark.slow
def test_browser_decoding_and_framing_equal_decode_image_on_photos(
    chromium: Any, lenet_site: Path, real_data_root: Path
) -> None:
    """What the page feeds the model for each of the 300 photos (the browser's PNG / JPEG
    decoder, then framing.js) against ``decode_image`` (Pillow, then the Python framing)."""
    from imgcls.deploy.photos import render_photos

    digits = read_idx(real_data_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte")[:PHOTOS]
    photos = render_photos(digits, seed=0)
    t0 = time.perf_counter()
    want = [decode_image(b, preprocess="auto", dataset="mnist").ravel() for _, b in photos]
    python_ms = 1000 * (time.perf_counter() - t0) / len(photos)
    args = [
        [f"p{i}", base64.b64encode(b).decode(), "image/png" if "png" in k else "image/jpeg"]
        for i, (k, b) in enumerate(photos)
    ]
    with Visit(chromium, lenet_site) as v:
        got = v.page.evaluate(FRAME_IN_PAGE, args)
    diffs = {k: [] for k, _ in photos}
    for (kind, _), w, (g, _) in zip(photos, want, got, strict=True):
        diffs[kind].append(int(np.abs(np.array(g, int) - w).max()))
    page_ms = float(np.mean([ms for _, ms in got]))
    print(
        f"\nper image: Pillow + Python framing {python_ms:.1f} ms, "
        f"browser + framing.js {page_ms:.1f} ms"
    )
    for kind, d in diffs.items():
        print(
            f"{kind}: {sum(x == 0 for x in d)}/{len(d)} inputs identical, "
            f"largest difference {max(d)}"
        )
    # The browser's JPEG decoder (libjpeg-turbo, as Pillow's) gives the same pixels here.
    assert all(max(d) == 0 for d in diffs.values()), {k: max(d) for k, d in diffs.items()}


def test_bad_model_or_out_is_one_line_and_writes_nothing(
    exported_lenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 not a model")
    good = str(exported_lenet / "model.onnx")
    cases = [
        (str(tmp_path / "missing.onnx"), tmp_path / "a", "missing.onnx: no such ONNX file"),
        (str(photo), tmp_path / "b", "photo.jpg: onnxruntime cannot load it"),
        (good, photo, "a file is there; give a folder for the site"),
    ]
    for model, out, message in cases:
        code = main(["page", "--model", model, "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("imgcls: error: "), err
        assert message in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"]
    assert photo.read_bytes() == b"\xff\xd8 not a model"


# ----------------------------------------------------------------------------- teaching
SHIFTS = [(0, 0), (2, -1), (-3, 3), (1, 0), (0, -2)]


def python_grid(clf: Any, x: np.ndarray) -> np.ndarray:
    """onnxruntime in Python on the 49 shifts of ``x`` (uint8, 1x1x28x28), zero fill
    (``transforms.translate``): probabilities (7, 7, classes), rows dy -3..3, columns dx."""
    import torch

    from imgcls.data.transforms import translate

    t = torch.from_numpy(x)
    moved = torch.cat([translate(t, dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)])
    return clf.probabilities(clf.to_pixels(moved.numpy())).reshape(7, 7, -1)


@browser
@pytest.mark.slow
def test_mlp_beside_cnn_under_shifts_equals_python(
    chromium: Any, exported_lenet: Path, exported_mlp: Path, tmp_path: Path
) -> None:
    """``imgcls page --compare``: the input the page shows, its shifts, both models'
    probabilities and their 7x7 grids, each against Python on the same pixels."""
    import torch

    from imgcls.data.transforms import translate
    from imgcls.deploy.classifier import OnnxClassifier
    from imgcls.insight import lectures

    out = tmp_path / "site"
    args = ["page", "--model", str(exported_lenet / "model.onnx"), "--out", str(out)]
    assert main([*args, "--compare", str(exported_mlp / "model.onnx")]) == 0
    assert (out / "compare.onnx").read_bytes() == (exported_mlp / "model.onnx").read_bytes()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["compare"]["net"] == "mlp" and meta["net"] == "lenet5"
    assert [r["distance_px"] for r in meta["shift"]["distances"]] == [1, 2, 3]
    assert "/tmp" not in json.dumps(meta["compare"])
    clfs = [OnnxClassifier(out / name, device="cpu") for name in ("model.onnx", "compare.onnx")]
    worst = 0.0
    with Visit(chromium, out) as v:
        pg = v.page
        assert pg.locator(".shift-model").count() == 2
        lecture = pg.text_content(".shift-lecture") or ""
        for figure in (*lectures.MLP32_SHIFT[1:], *lectures.CNN_MNIST_SHIFT[1:]):
            assert f"{figure:g} %" in lecture, (figure, lecture)
        mean1 = meta["shift"]["distances"][0]["mean"]
        assert f"1 px {100 * mean1:.1f} %" in (pg.text_content(".shift-figures") or "")
        for digit in (7, 4):
            pg.click("#clear")
            draw(pg, DIGITS[digit])
            assert wait_for_prediction(pg) == digit
            x = np.array(pg.evaluate("window.imgclsPage.input()"), np.uint8).reshape(1, 1, 28, 28)
            assert x.max() == 255 and (x > 0).mean() > 0.05
            want = [python_grid(c, x) for c in clfs]
            grids = pg.evaluate("window.imgclsPage.grid()")
            assert [g["name"] for g in grids] == ["lenet5", "mlp"]
            for g, w in zip(grids, want, strict=True):
                home = int(w[3, 3].argmax())
                assert g["label"] == home
                gap = np.abs(np.array(g["rows"]) - w[:, :, home]).max()
                assert gap <= 1e-4, gap
                worst = max(worst, float(gap))
            # the main bars (the feature model) say what the shift panel says at no shift
            main_bars = np.array([b["p"] for b in bars(pg)])
            assert np.abs(main_bars - want[0][3, 3]).max() <= 1e-4
            for dx, dy in SHIFTS:
                pg.evaluate(f"window.imgclsPage.setShift({dx}, {dy})")
                moved = translate(torch.from_numpy(x), dy, dx).numpy()
                shown = np.array(pg.evaluate("window.imgclsPage.shifted()"), np.uint8)
                assert np.array_equal(shown, moved.ravel()), (dx, dy)
                answers = pg.evaluate("window.imgclsPage.answers()")
                assert [a["role"] for a in answers] == ["model", "compare"]
                for a, clf in zip(answers, clfs, strict=True):
                    p = clf.probabilities(clf.to_pixels(moved))[0]
                    gap = np.abs(np.array(a["probabilities"]) - p).max()
                    assert gap <= 1e-4, (dx, dy, a["name"], gap)
                    worst = max(worst, float(gap))
                # what the panel shows: the slider values, the current cell, each model's bars
                assert pg.input_value("#shift-dx") == str(dx)
                assert pg.input_value("#shift-dy") == str(dy)
                current = pg.eval_on_selector_all(
                    ".shift-cell.current", "cs => cs.map(c => [c.dataset.dx, c.dataset.dy])"
                )
                assert current == [[str(dx), str(dy)]] * 2
                shown_p = pg.eval_on_selector_all(
                    ".shift-model",
                    "ms => ms.map(m => [...m.querySelectorAll('.bar')].map("
                    "b => Number(b.dataset.probability)))",
                )
                for s, a in zip(shown_p, answers, strict=True):
                    assert s == pytest.approx(a["probabilities"], abs=1e-7)
            # the keyboard moves the slider; a click on a cell moves to its shift
            pg.focus("#shift-dx")
            pg.keyboard.press("ArrowRight")
            assert pg.evaluate("window.imgclsPage.shift()") == {"dx": 1, "dy": -2}
            pg.click(".shift-model[data-role=compare] .shift-cell[data-dx='-2'][data-dy='3']")
            assert pg.evaluate("window.imgclsPage.shift()") == {"dx": -2, "dy": 3}
            pg.click("#shift-reset")
            check_layers(pg, meta, clfs[0], out, x)
            check_playground(pg, out, x)
        pg.screenshot(path=str(tmp_path / "shift-panel.png"), full_page=True)
    print(f"\npage vs onnxruntime in Python: largest probability gap {worst:.2e}")


TILE_PIXELS = """() => [...document.querySelectorAll('.fmap-tile')].map(t => {
  const d = t.getContext('2d').getImageData(0, 0, t.width, t.height).data;
  return Array.from({length: d.length / 4}, (_, i) => d[4 * i]);
})"""


def check_layers(pg: Any, meta: dict[str, Any], clf: Any, site_dir: Path, x: np.ndarray) -> None:
    """The layer panel for input ``x``: the ledger against ``insight.cost``'s table, the dense
    units and logits against numpy on onnxruntime's maps, the grey scales against the maps."""
    import onnx
    from onnx import numpy_helper

    from imgcls.deploy.classifier import OnnxClassifier
    from imgcls.insight.cost import layer_costs
    from imgcls.models.registry import create_model

    net = create_model(meta["net"], **meta["net_args"])
    table = layer_costs(net, tuple(meta["input"]["shape"][1:]))
    layers = pg.evaluate("window.imgclsPage.layers()")
    assert [(r["name"], tuple(r["shape"]), r["params"], r["macs"]) for r in layers] == [
        (c.name, c.output_shape, c.params, c.macs) for c in table
    ]
    modules = dict(net.named_modules())
    for r in layers:
        m = modules[r["name"]]
        if r["kind"] == "conv":
            assert r["kernel"] == list(m.kernel_size) and r["stride"] == list(m.stride)
            assert r["padding"] == list(m.padding)
        if r["params_text"]:  # "6×5×5×1+6": the formula gives the count
            terms = [np.prod([int(f) for f in t.split("×")]) for t in r["params_text"].split("+")]
            assert sum(terms) == r["params"], r
    heads = pg.eval_on_selector_all(".layer-head", "hs => hs.map(h => h.textContent)")
    conv1 = next(h for h in heads if h.startswith(layers[0]["name"] + " "))
    assert f"params {layers[0]['params_text']} = {layers[0]['params']:,}" in conv1
    total = sum(r["params"] for r in layers)
    assert f"total {total:,} params" in heads[-2]  # the logits; then the softmax
    assert pg.text_content(".layer-total").startswith(f"{total:,} parameters")

    # dense units: numpy on the raw last map that onnxruntime gives in Python, the weights
    # from the ONNX file itself
    features = OnnxClassifier(site_dir / "model.features.onnx", device="cpu")
    _, maps = features.feature_maps(features.to_pixels(x))
    w = {
        t.name: numpy_helper.to_array(t)
        for t in onnx.load(site_dir / "model.onnx").graph.initializer
    }
    units = pg.evaluate("window.imgclsPage.units()")
    v = maps[-1].reshape(-1).astype(np.float64)
    dense = [r for r in layers if r["kind"] == "linear"]
    for i, r in enumerate(dense):
        v = w[f"net.{r['name']}.weight"] @ v + w[f"net.{r['name']}.bias"]
        if i < len(dense) - 1:
            v = np.maximum(v, 0)
        assert np.abs(np.array(units[r["name"]]) - v).max() <= 1e-4, r["name"]
    logits = clf.logits(clf.to_pixels(x))[0]
    assert np.abs(np.array(units[dense[-1]["name"]]) - logits).max() <= 1e-4
    shown = [
        float(c)
        for c in pg.eval_on_selector_all(
            ".layer-logits .logit-cell span", "cs => cs.map(c => c.textContent)"
        )
    ]
    assert shown == pytest.approx(logits, abs=0.006)

    # hover a unit: its sum against numpy on the same inputs, its window and receptive field
    mean, std = np.float32(meta["mean"]), np.float32(meta["std"])
    pixels = (x[0].astype(np.float32) / np.float32(255) - mean) / std  # normalised in the graph
    raw = [m[0] for m in maps]  # conv1, pool1, conv2, pool2 (C, H, W)
    for name, source, c, y, xx, pad in (
        ("features.0", pixels, 2, 0, 0, 2),
        ("features.0", pixels, 4, 13, 15, 2),
        ("features.3", raw[1], 5, 5, 4, 0),
    ):
        u = pg.evaluate(f"window.imgclsPage.inspect('{name}', {c}, {y}, {xx})")
        k = w[f"net.{name}.weight"][c]  # (C_in, 5, 5)
        padded = np.pad(source, ((0, 0), (pad, pad), (pad, pad)))
        window = padded[:, y : y + 5, xx : xx + 5]
        want = float((k.astype(np.float64) * window).sum())
        assert u["sum"] == pytest.approx(want, abs=1e-4), (name, c, y, xx)
        assert u["rebuilt"] and u["bias"] == pytest.approx(
            float(w[f"net.{name}.bias"][c]), abs=1e-7
        )
        assert u["activated"] == pytest.approx(max(0.0, want + u["bias"]), abs=1e-4)
        layer = raw[0] if name == "features.0" else raw[2]
        assert u["held"] == pytest.approx(float(layer[c, y, xx]), abs=1e-4)
        assert u["window"] == {"top": y - pad, "left": xx - pad, "bottom": y - pad + 4,
                               "right": xx - pad + 4}  # fmt: skip
        side = source.shape[1]
        rows = sum(0 <= r < side for r in range(y - pad, y - pad + 5))
        cols = sum(0 <= q < side for q in range(xx - pad, xx - pad + 5))
        assert u["padded"] == source.shape[0] * (25 - rows * cols)
        assert np.allclose(u["kernel"], k.ravel())
    # conv2's unit (5, 4) sees pool1 rows 5..9 -> conv1 rows 10..19 -> pixels 8..21 (pad 2)
    assert u["field"] == {"top": 8, "bottom": 21, "left": 6, "right": 19}
    p = pg.evaluate("window.imgclsPage.inspect('features.2', 1, 7, 7)")
    win = raw[0][1, 14:16, 14:16]
    assert p["value"] == pytest.approx(float(win.max()), abs=1e-6) == p["held"]
    assert tuple(p["at"]) == tuple(int(v) + 14 for v in np.unravel_index(win.argmax(), (2, 2)))
    fc = dense[0]["name"]
    d = pg.evaluate(f"window.imgclsPage.inspect('{fc}', 3, 0, 0)")
    v0 = maps[-1].reshape(-1).astype(np.float64)
    assert d["value"] == pytest.approx(
        float(w[f"net.{fc}.weight"][3] @ v0 + w[f"net.{fc}.bias"][3]), abs=1e-4
    )
    # a real hover: the inspector says the sum of the unit under the mouse
    tile = pg.locator(".layer[data-name='features.3'] .fmap-tile").nth(5)
    box = tile.bounding_box()
    tile.hover(position={"x": box["width"] * 0.45, "y": box["height"] * 0.55})
    text = pg.text_content(".inspector") or ""
    assert text.startswith("features.3, channel 6, row 5, column 4") and "Σ w·x over 150" in text

    # grey scales: per channel, per layer, whole network, against the raw maps
    for mode in ("layer", "network", "channel"):
        pg.evaluate(f"window.imgclsPage.setScale('{mode}')")
        got = pg.evaluate(TILE_PIXELS)
        lo_net = min(float(a.min()) for a in raw)
        hi_net = max(float(a.max()) for a in raw)
        k = 0
        for a in raw:
            for ch in a:
                lo, hi = {
                    "channel": (ch.min(), ch.max()),
                    "layer": (a.min(), a.max()),
                    "network": (lo_net, hi_net),
                }[mode]
                want = np.rint((ch - lo) / (hi - lo if hi > lo else 1) * 255).ravel()
                assert np.abs(np.array(got[k]) - want).max() <= 1, (mode, k)
                k += 1
        assert k == len(got)


def check_playground(pg: Any, site_dir: Path, x: np.ndarray) -> None:
    """The kernel playground for input ``x`` against a 2-D cross-correlation and torch's
    pooling, for every lecture kernel with and without ReLU and a kernel typed in; the model's
    first-layer kernels ranked as numpy ranks them."""
    import torch
    import torch.nn.functional as F

    from imgcls.deploy.onnx_weights import float_initializers
    from imgcls.insight.kernels import KERNELS, cross_correlate2d

    options = pg.eval_on_selector_all("#play-kernel option", "os => os.map(o => o.value)")
    assert options == [*KERNELS, "your own 3×3"]
    image = torch.from_numpy(x[0, 0].astype(np.float64) / 255)
    learned = float_initializers(site_dir / "model.onnx")["net.features.0.weight"][:, 0]

    def check(kernel: Any, relu: bool) -> dict[str, Any]:
        st = pg.evaluate("window.imgclsPage.playground()")
        want = cross_correlate2d(image, kernel)
        if relu:
            want = want.clamp(min=0)
        out = np.array(st["output"]["values"]).reshape(st["output"]["shape"])
        assert np.abs(out - want.numpy()).max() <= 1e-9
        t = want[None, None]
        for key, pooled in (
            ("maxpool", F.max_pool2d(t, 2)),
            ("avgpool", F.avg_pool2d(t, 2)),
            ("stride2", t[:, :, ::2, ::2]),
        ):
            got = np.array(st[key]["values"]).reshape(st[key]["shape"])
            assert np.abs(got - pooled[0, 0].numpy()).max() <= 1e-9, key
        return st

    for i, (name, kernel) in enumerate(KERNELS.items()):
        pg.select_option("#play-kernel", name)
        relu = i % 2 == 1
        pg.evaluate(f"window.imgclsPage.setRelu({str(relu).lower()})")
        st = check(kernel, relu)
        assert st["name"] == name and st["kernel"] == [list(r) for r in kernel]
        k = np.array(kernel, float)
        framed = np.zeros((5, 5))
        o = (5 - len(k)) // 2
        framed[o : o + len(k), o : o + len(k)] = k
        cos = (learned * framed).sum((1, 2)) / (
            np.linalg.norm(learned.reshape(len(learned), -1), axis=1) * np.linalg.norm(framed)
        )
        assert [r["channel"] for r in st["ranked"]] == list(np.argsort(-cos, kind="stable"))
        assert [r["cosine"] for r in st["ranked"]] == pytest.approx(sorted(cos, reverse=True))
    # a kernel typed in: the grid's cells, one by one
    pg.select_option("#play-kernel", "your own 3×3")
    mine = [[0.5, -1.0, 0.0], [2.0, 0.25, -3.0], [0.0, 1.0, -0.5]]
    cells = pg.locator(".play-cell")
    for i in range(9):
        cells.nth(i).fill(str(mine[i // 3][i % 3]))
    pg.evaluate("window.imgclsPage.setRelu(false)")
    st = check(mine, False)
    assert st["name"] == "your own" and st["kernel"] == mine


def test_compare_of_another_data_set_is_one_line(
    exported_lenet: Path, fashion_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(exported_lenet / "model.onnx")
    cases = [
        (str(fashion_export / "model.onnx"), "its classes differ from the model's"),
        (str(tmp_path / "missing.onnx"), "--compare " + str(tmp_path / "missing.onnx")),
    ]
    port = str(free_port())
    for compare, message in cases:
        for command in (["page", "--out", str(tmp_path / "s")], ["serve", "--port", port]):
            code = main([*command, "--model", model, "--compare", compare])
            err = capsys.readouterr().err.strip().splitlines()
            assert code == 2 and len(err) == 1 and message in err[0], (command, err)
    assert not (tmp_path / "s").exists()


# ----------------------------------------------------------------------------- watch it learn
def snapshot_probabilities(model: Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime in Python on ``x`` (uint8 pixels, 1x1xHxW) through a snapshot's model as the
    site carries it: the probabilities, its second output."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32) / 255})
    return np.asarray(out[1])[0]


@browser
@pytest.mark.slow
def test_epoch_slider_runs_each_snapshot_equal_to_python(
    chromium: Any, trained_run: Path, tmp_path: Path
) -> None:
    """``imgcls page --epochs RUN``: every snapshot the run kept answers the drawn input as
    onnxruntime in Python does, the slider shows the one chosen (its bars and kernels), and the
    curves are the run's."""
    import torch

    from imgcls.training.curves import run_series

    out = tmp_path / "site"
    assert main(["page", "--epochs", str(trained_run), "--out", str(out)]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    snaps = meta["epochs"]["snapshots"]
    assert [s["epoch"] for s in snaps] == [0, 1, 2]
    assert meta["epochs"]["run"] == "mnist-lenet5/version_0" and "/tmp" not in json.dumps(snaps)
    series = run_series(trained_run / "metrics.csv")
    for name, curve in meta["epochs"]["curves"].items():
        assert (curve["epochs"], curve["values"]) == (series[name][0], series[name][1]), name
    assert set(meta["epochs"]["curves"]) == {"train/loss", "val/loss", "train/acc", "val/acc"}
    states = {
        s["epoch"]: torch.load(trained_run / "snapshots" / f"epoch={s['epoch']}.ckpt")["state_dict"]
        for s in snaps
    }
    with Visit(chromium, out) as v:
        pg = v.page
        assert pg.is_visible("#epochs-panel")
        assert pg.evaluate("window.imgclsPage.epoch()") == 2  # the last, as the page's model
        draw(pg, DIGITS[7])
        assert wait_for_prediction(pg) == 7
        x = np.array(pg.evaluate("window.imgclsPage.input()"), np.uint8).reshape(1, 1, 28, 28)
        answers = pg.evaluate("window.imgclsPage.epochs()")
        assert [a["epoch"] for a in answers] == [0, 1, 2]
        want = {s["epoch"]: snapshot_probabilities(out / s["model"], x) for s in snaps}
        worst = 0.0
        for a in answers:
            gap = float(np.abs(np.array(a["probabilities"]) - want[a["epoch"]]).max())
            assert gap <= 1e-4, (a["epoch"], gap)
            worst = max(worst, gap)
        # untrained weights answer about evenly; trained ones read the 7
        assert np.abs(want[0] - want[2]).max() > 0.1 and want[0].max() < 0.5
        assert int(want[2].argmax()) == 7
        # the last snapshot is the page's model: its main bars say the same
        assert np.abs(np.array([b["p"] for b in bars(pg)]) - want[2]).max() <= 1e-4
        pg.focus("#epochs-slider")
        for key, epoch in (("Home", 0), ("ArrowRight", 1), ("End", 2)):
            pg.keyboard.press(key)
            assert pg.evaluate("window.imgclsPage.epoch()") == epoch
            assert pg.get_attribute("#epochs-body", "data-epoch") == str(epoch)
            shown = pg.eval_on_selector_all(
                ".epochs-bars .bar", "bs => bs.map(b => Number(b.dataset.probability))"
            )
            assert np.abs(np.array(shown) - want[epoch]).max() <= 1e-4
            drawn = pg.evaluate("window.imgclsPage.epochShown()")
            kernels = states[epoch]["net.features.0.weight"].numpy()  # (6, 1, 5, 5)
            assert np.abs(np.array(drawn["kernels"]["tiles"]) - kernels.reshape(6, -1)).max() < 1e-6
            assert [m["shape"] for m in drawn["maps"]] == [
                f["shape"] for f in snaps[epoch]["feature_maps"]
            ]
            assert pg.locator(".epochs-tile").count() == sum(
                f["shape"][0] for f in snaps[epoch]["feature_maps"]
            )
            assert pg.locator(".epochs-kernel").count() == 6
        assert pg.evaluate("window.imgclsPage.setEpoch(1)") is True
        assert pg.evaluate("window.imgclsPage.setEpoch(7)") is False
        assert pg.input_value("#epochs-slider") == "1"
        pg.click(".epochs-tick:has-text('0')")
        assert pg.evaluate("window.imgclsPage.epoch()") == 0
        pg.click("#clear")
        assert pg.evaluate("window.imgclsPage.epochs()")[0]["probabilities"] is None
        timings = pg.evaluate("window.imgclsPage.timings")
    print(f"\nepoch slider vs onnxruntime in Python: largest probability gap {worst:.2e}")
    print(f"stroke end to everything drawn, 3 snapshots too: {[round(t, 1) for t in timings]} ms")


def test_epochs_of_a_run_without_snapshots_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "runs" / "mnist-lenet5" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    out = tmp_path / "site"
    for spec in (run, run.parent):
        assert main(["page", "--epochs", str(spec), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "kept no snapshots" in err[0] and "--snapshots.epochs" in err[0]
    assert main(["page", "--epochs", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "no run there" in capsys.readouterr().err
    assert not out.exists()
    # an --out the site cannot replace is refused before any snapshot is exported
    (run / "snapshots").mkdir()
    (run / "snapshots" / "epoch=0.ckpt").write_bytes(b"never read")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["page", "--epochs", str(run), "--out", str(tmp_path / "mine")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a site imgcls built" in err[0], err


def test_epochs_without_torch_is_one_line(tmp_path: Path) -> None:
    """A torch-free install builds pages, but cannot export a run's snapshots: it says so."""
    snap = tmp_path / "runs" / "mnist-lenet5" / "version_0" / "snapshots" / "epoch=0.ckpt"
    snap.parent.mkdir(parents=True)
    snap.write_bytes(b"not read")
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['lightning'] = None; "
        "from imgcls.__main__ import main; "
        f"sys.exit(main(['page', '--epochs', {str(snap.parent.parent)!r}, '--out', 'site']))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'imgcls[train]'" in lines[0], r.stderr
    assert not (tmp_path / "site").exists()
