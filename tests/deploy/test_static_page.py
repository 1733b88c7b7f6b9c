"""The static site of ``imgcls page``, driven in a real Chromium against ``python -m http.server``.

One site per session (the trained LeNet-5 export), one browser. Every request that is not to
the local static server is aborted and fails the test: the site must work offline, from its own
files. Console errors and page errors fail the test too.
"""

from __future__ import annotations

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
from tests.deploy.test_page import (
    CHROMIUM_ARGS,
    DIGITS,
    INSTALL,
    bars,
    draw,
    find_chromium,
    tile_stats,
    wait_for_prediction,
)
from tests.helpers import free_port, require_system, wait_for_port

try:
    from playwright import sync_api
except ImportError:
    sync_api = None

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
        "static/framing.js",
        "static/ort-wasm-simd-threaded.mjs",
        "static/ort-wasm-simd-threaded.wasm",
        "static/ort.wasm.min.js",
        "static/runtime-browser.js",
        "static/style.css",
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


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    require_system(sync_api is not None and find_chromium() is not None, "Chromium", INSTALL)
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


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
        print(f"\nstroke end to answer and maps drawn: {[round(t, 1) for t in timings]} ms")
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
    import base64

    from imgcls.deploy.images import decode_image
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
