"""The service's app in this process (httpx's ASGI transport, no socket): the API key, the Host
check, what JSON and forms may hold, the batcher (a failed session call answers 503 to its own
batch only, and the service goes on), ``/metrics`` parsed with prometheus_client's own parser,
the OpenAPI document's answers and ``/docs`` without a CDN.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import Depends, HTTPException, Request  # module level: FastAPI reads annotations
from fastapi.responses import JSONResponse
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from starlette.middleware.base import BaseHTTPMiddleware

from imgcls.deploy.classifier import OnnxClassifier
from imgcls.deploy.idx import read_idx
from imgcls.deploy.serve_routes import build_app
from imgcls.deploy.serve_service import Service
from imgcls.deploy.serve_settings import ServeOptions
from imgcls.deploy.serve_workers import make_service

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

KEY = "s3cret-key"


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def images(real_data_root: Path) -> np.ndarray:
    return read_idx(real_data_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte")[:32]


@pytest.fixture(scope="module")
def expected(exported_lenet: Path, images: np.ndarray) -> np.ndarray:
    return OnnxClassifier(exported_lenet / "model.onnx", device="cpu").predict(images)[1]


def service(model: Path, **kw: Any) -> Service:
    return make_service(ServeOptions(model=model, **{"device": "cpu", **kw}))


@pytest.fixture(scope="module")
def keyed(exported_lenet: Path) -> Service:
    return service(exported_lenet / "model.onnx", api_key=KEY)


@pytest.fixture(scope="module")
def open_service(exported_lenet: Path) -> Service:
    return service(exported_lenet / "model.onnx")


def client(svc: Service, host: str = "127.0.0.1:8000") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(svc)), base_url=f"http://{host}"
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ----------------------------------------------------------------------------- the key
def test_api_key_is_required_on_the_api_and_not_on_the_page(
    keyed: Service, images: np.ndarray, expected: np.ndarray
) -> None:
    async def go() -> None:
        async with client(keyed) as c:
            body, ct = png(images[0]), {"content-type": "image/png"}
            for method, path in (
                ("POST", "/predict"),
                ("POST", "/features"),
                ("GET", "/metadata"),
                ("GET", "/metrics"),
            ):
                for headers in ({}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}):
                    r = await c.request(method, path, content=body, headers={**ct, **headers})
                    assert r.status_code == 401, (path, headers, r.text)
                    assert r.headers["www-authenticate"] == 'Bearer realm="imgcls"'
                    assert "X-API-Key" in r.json()["detail"]
            for headers in ({"x-api-key": KEY}, {"authorization": f"Bearer {KEY}"}):
                r = await c.post("/predict", content=body, headers={**ct, **headers})
                assert r.status_code == 200, r.text
                assert r.json()["label"] == int(expected[0].argmax())
            meta = await c.get("/metadata", headers={"x-api-key": KEY})
            assert meta.json()["api_key_required"] is True
            # the page, its files, health and the API docs stay open (no secret in them)
            for path in ("/", "/static/app.js", "/static/style.css", "/health", "/docs"):
                r = await c.get(path)
                assert r.status_code == 200, (path, r.text[:200])
            schema = (await c.get("/openapi.json")).json()
            assert schema["paths"]["/predict"]["post"]["security"]
            assert "401" in schema["paths"]["/predict"]["post"]["responses"]
            assert "security" not in schema["paths"]["/health"]["get"]

    run(go())


# ----------------------------------------------------------------------------- Host
def test_host_header_must_be_a_served_name(open_service: Service, exported_lenet: Path) -> None:
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends
    ``Host: evil.example``; only the loopback names are answered on loopback."""

    async def go() -> None:
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example"):
            async with client(open_service, host) as c:
                r = await c.get("/metadata")
                assert r.status_code == 400 and "--allowed_hosts" in r.json()["detail"], host
        for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST"):
            async with client(open_service, host) as c:
                assert (await c.get("/metadata")).status_code == 200, host
        named = service(exported_lenet / "model.onnx", allowed_hosts=["imgcls.example.org"])
        async with client(named, "imgcls.example.org") as c:
            assert (await c.get("/health")).status_code == 200
        async with client(named, "localhost:8000") as c:
            assert (await c.get("/health")).status_code == 400

    run(go())


def test_allowed_hosts_take_ipv6_literals_and_trailing_dots(exported_lenet: Path) -> None:
    """``--allowed_hosts '[::1]'`` shut everyone out (the Host's brackets were stripped, the
    option's not) and ``::1`` was refused at start-up; ``example.org.`` was accepted and never
    matched. Both sides are now compared as one normal form."""
    from imgcls.deploy.serve import check_options
    from imgcls.errors import ConfigError

    model = exported_lenet / "model.onnx"
    for given in (["[::1]"], ["::1"], ["0:0:0:0:0:0:0:1"], ["example.org."], ["Example.ORG"]):
        check_options(ServeOptions(model=model, allowed_hosts=given))
    for bad in ("example.org:8000", "http://example.org", "*", "[example.org]", ".", "::1::2"):
        with pytest.raises(ConfigError, match="--allowed_hosts.*not a host name"):
            check_options(ServeOptions(model=model, allowed_hosts=[bad]))

    async def answered(svc: Service, host: str) -> int:
        async with client(svc, host) as c:
            return (await c.get("/health")).status_code

    async def go() -> None:
        for given in ("[::1]", "::1"):
            svc = service(model, allowed_hosts=[given])
            assert await answered(svc, "[::1]:8000") == 200, given
            assert await answered(svc, "[::1]") == 200, given
            assert await answered(svc, "127.0.0.1:8000") == 400, given
        for given in ("example.org.", "example.org"):
            svc = service(model, allowed_hosts=[given])
            for host in ("example.org", "example.org.", "EXAMPLE.org.:8000"):
                assert await answered(svc, host) == 200, (given, host)
            assert await answered(svc, "example.org.evil") == 400

    run(go())


def test_a_key_with_a_trailing_newline_matches_the_key(
    exported_lenet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``IMGCLS_API_KEY=$'s3cret\\n'`` (a secret file) could never be matched: the client's
    value was stripped, the server's not. Both are stripped now; a key that is nothing but
    white space, or holds a line break, is refused at start-up (exit 2, one line)."""
    from imgcls.deploy.serve import serve
    from imgcls.errors import ConfigError

    model = exported_lenet / "model.onnx"
    svc = service(model, api_key="s3cret\n")

    async def go() -> None:
        async with client(svc) as c:
            for headers in ({"x-api-key": "s3cret"}, {"authorization": "Bearer s3cret "}):
                assert (await c.get("/metadata", headers=headers)).status_code == 200
            assert (await c.get("/metadata", headers={"x-api-key": "s3cre"})).status_code == 401

    run(go())
    for key, words in (("\n", "empty or only white space"), ("s3c\nret", "line break")):
        with pytest.raises(ConfigError, match=words) as e:
            serve(ServeOptions(model=model, api_key=key))  # refused before anything starts
        assert "\n" not in str(e.value) and "IMGCLS_API_KEY" in str(e.value)
    monkeypatch.setenv("IMGCLS_API_KEY", " \n")
    with pytest.raises(ConfigError, match="empty or only white space"):
        serve(ServeOptions(model=model))


# ----------------------------------------------------------------------------- bodies
def test_json_and_form_edge_cases(
    open_service: Service, images: np.ndarray, expected: np.ndarray
) -> None:
    one = (images[0] / 255.0).tolist()

    async def go() -> None:
        async with client(open_service) as c:
            # a list of ONE image is a batch: its answer keeps "predictions"
            r = await c.post("/predict", json={"pixels": [one]})
            assert r.status_code == 200 and len(r.json()["predictions"]) == 1, r.text
            assert r.json()["predictions"][0]["label"] == int(expected[0].argmax())
            r = await c.post("/predict", json={"pixels": one})
            assert "predictions" not in r.json() and r.json()["label"] == int(expected[0].argmax())
            cases = [
                ({"pixels": [[True] * 28] * 28}, 422, "boolean"),
                ({"pixels": [["0.5"] * 28] * 28}, 422, "string"),
                ({"pixels": [[None] * 28] * 28}, 422, "found null"),
                ({"pixels": [[{"a": 1}] * 28] * 28}, 422, "object"),
                ({"pixels": [[[[[[0.5]]]]]]}, 422, "nested more than 4"),
            ]
            for payload, status, words in cases:
                r = await c.post("/predict", json=payload)
                assert r.status_code == status and words in r.json()["detail"], (payload, r.text)
            # each message says what was wrong and what to send, and what it says to send works
            said = [
                ({"pixels": None}, "found null"),
                ({"pixels": [[False] * 28] * 28}, "found a boolean (false)"),
                ({"pixels": [0.5] * 120_000}, "a flat list of 120,000 numbers"),
                ({"pixels": [[]]}, '"pixels" is empty'),
                ({"pixels": 0.5}, "a single number"),
                ({"pixels": [[255] * 28] * 28}, "divided by 255"),
            ]
            for payload, words in said:
                r = await c.post("/predict", json=payload)
                detail = r.json()["detail"]
                assert r.status_code == 422 and words in detail, (str(payload)[:40], r.text)
                assert "0..255" not in detail.replace("0..255 divided", ""), detail
                assert "images[None]" not in detail and "images in one" not in detail, detail
            r = await c.post("/predict", json={"pixels": [[255 / 255] * 28] * 28})
            assert r.status_code == 200, r.text
            raw = [
                (b'{"pixels": [[1' + b"0" * 400 + b"]]}", 422),  # 1e400 as an integer
                (b'{"pixels": [[1e400]]}', 422),
                (b'{"pixels": ' + b"[" * 990 + b"]" * 990 + b"}", 400),
                (b"[" * 100_000, 400),
            ]
            for body, status in raw:
                r = await c.post(
                    "/predict", content=body, headers={"content-type": "application/json"}
                )
                assert r.status_code == status, (body[:40], r.status_code, r.text)
                assert r.json()["detail"]
            two = [
                ("image", ("a.png", png(images[0]), "image/png")),
                ("image", ("b.png", png(images[1]), "image/png")),
            ]
            r = await c.post("/predict", files=two)
            assert r.status_code == 422 and "2 files" in r.json()["detail"], r.text
            # Starlette's own form limits: a 400 that names them, not a 500
            many = "".join(
                f'--XX\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nv\r\n'
                for i in range(70)
            )
            r = await c.post(
                "/predict",
                content=(many + "--XX--\r\n").encode(),
                headers={"content-type": "multipart/form-data; boundary=XX"},
            )
            assert r.status_code == 400 and "Too many fields" in r.json()["detail"], r.text
            r = await c.post("/predict", json={"pixels": one})
            assert r.status_code == 200

    run(go())


# ----------------------------------------------------------------------------- the batcher
class FailingSession:
    """A session proxy that fails every call whose batch holds an image with a given first
    pixel (the marker), and counts the calls and their sizes."""

    def __init__(self, session: Any, marker: float, hold: Any = None) -> None:
        self.session = session
        self.marker = marker
        self.hold = hold  # the first call waits until hold() is true (2 s at most)
        self.sizes: list[int] = []
        self.failed: list[int] = []

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        if self.hold is not None:
            import time

            deadline = time.monotonic() + 2
            while not self.hold() and time.monotonic() < deadline:
                time.sleep(0.005)
            self.hold = None
        x = next(iter(feeds.values()))
        self.sizes.append(len(x))
        if np.any(np.isclose(x[:, 0, 0, 0], self.marker)):
            self.failed.append(len(x))
            raise RuntimeError("injected failure")
        return self.session.run(names, feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def test_a_failed_batch_answers_503_to_its_requests_only(
    exported_lenet: Path, images: np.ndarray, expected: np.ndarray
) -> None:
    svc = service(exported_lenet / "model.onnx")
    # the first session call waits for a queue to form, so that batches do form however
    # fast this machine decodes (else every request could take the fast path alone)
    proxy = FailingSession(svc.clf.session, marker=0.25, hold=lambda: svc.batcher.depth >= 8)
    svc.clf.session = proxy  # type: ignore[assignment]
    good = [(images[i] / 255.0).tolist() for i in range(24)]
    bad = [[0.25] * 28] + [[0.0] * 28] * 27

    async def go() -> list[httpx.Response]:
        async with client(svc) as c:
            jobs = [c.post("/predict", json={"pixels": p}) for p in good[:12]]
            jobs.append(c.post("/predict", json={"pixels": bad}))
            jobs += [c.post("/predict", json={"pixels": p}) for p in good[12:]]
            answers = await asyncio.gather(*jobs)
            after = await c.post("/predict", json={"pixels": good[0]})
            return [*answers, after]

    answers = run(go())
    marker = answers[12]
    assert marker.status_code == 503 and "injected failure" in marker.json()["detail"]
    others = [a for i, a in enumerate(answers) if i != 12]
    # one session call failed: the marker's batch, and exactly its requests got 503
    assert len(proxy.failed) == 1
    assert sum(a.status_code == 503 for a in answers) == proxy.failed[0]
    assert all(a.status_code in (200, 503) for a in answers)
    want = [int(expected[i].argmax()) for i in [*range(24), 0]]
    got = [a.json()["label"] if a.status_code == 200 else None for a in others]
    assert all(g is None or g == w for g, w in zip(got, want, strict=True))
    assert answers[-1].status_code == 200
    # requests were batched: fewer session calls than requests (after the warm-up)
    assert len(proxy.sizes) < len(answers)


def test_a_bad_image_never_reaches_a_batch(
    exported_lenet: Path, images: np.ndarray, expected: np.ndarray
) -> None:
    svc = service(exported_lenet / "model.onnx")
    proxy = FailingSession(svc.clf.session, marker=-1.0)
    svc.clf.session = proxy  # type: ignore[assignment]

    async def go() -> list[httpx.Response]:
        async with client(svc) as c:
            ct = {"content-type": "image/png"}
            jobs = []
            for i in range(16):
                body = png(images[i]) if i % 2 == 0 else b"\x89PNG\r\n\x1a\nbroken"
                jobs.append(c.post("/predict", content=body, headers=ct))
            return list(await asyncio.gather(*jobs))

    answers = run(go())
    for i, a in enumerate(answers):
        if i % 2:
            assert a.status_code == 400 and "not a readable image" in a.json()["detail"]
        else:
            assert a.status_code == 200 and a.json()["label"] == int(expected[i].argmax())
    assert sum(proxy.sizes) == 8  # only the good images were run


def test_small_images_decode_in_the_batch_and_big_ones_in_the_pool(
    exported_lenet: Path, images: np.ndarray, expected: np.ndarray
) -> None:
    """A small PNG is decoded in the session thread, in its batch (one thread hop per batch);
    a small PNG that declares a megapixel is read to its header there and decoded in
    the decode pool instead, and a small GIF goes to the pool by its format: the batch never
    waits for either."""
    from imgcls.deploy.serve_settings import DIRECT_PIXELS

    svc = service(exported_lenet / "model.onnx")
    seen = spy_decodes(svc)
    big = io.BytesIO()
    Image.new("1", (1000, 1000), 0).save(big, "PNG")  # 1 megapixel, ~40 ms to frame, 4 KB
    buf = io.BytesIO()
    Image.new("P", (3000, 3000), 0).save(buf, "GIF")
    gif = buf.getvalue()
    assert len(gif) < 64 * 1024 and len(big.getvalue()) < 64 * 1024

    async def go() -> list[httpx.Response]:
        async with client(svc) as c:
            jobs = [c.post("/predict", content=gif, headers={"content-type": "image/gif"})]
            ct = {"content-type": "image/png"}
            jobs.append(c.post("/predict", content=big.getvalue(), headers=ct))
            jobs += [c.post("/predict", content=png(images[i]), headers=ct) for i in range(8)]
            return list(await asyncio.gather(*jobs))

    answers = run(go())
    assert [a.status_code for a in answers] == [200] * 10
    assert [a.json()["label"] for a in answers[2:]] == [int(p.argmax()) for p in expected[:8]]
    # the digits: decoded in the session thread, each on its first try
    assert seen.count(("imgcls-session", DIRECT_PIXELS, True)) == 8
    # the big PNG: refused by its header there, then decoded in the pool with the server's
    # limit; the GIF: straight to the pool
    assert seen.count(("imgcls-session", DIRECT_PIXELS, False)) == 1
    assert seen.count(("imgcls-decode", None, True)) == 2
    assert len(seen) == 11


def spy_decodes(svc: Service) -> list[tuple[str, int | None, bool]]:
    """(thread, max_pixels, decoded) of each of the service's decodes, as they happen."""
    import threading

    seen: list[tuple[str, int | None, bool]] = []
    decode = svc.decode

    def spy(data: bytes, name: str, max_pixels: int | None = None) -> np.ndarray:
        thread = threading.current_thread().name.split("_")[0]
        try:
            x = decode(data, name, max_pixels)
        except Exception:
            seen.append((thread, max_pixels, False))
            raise
        seen.append((thread, max_pixels, True))
        return x

    svc.decode = spy  # type: ignore[method-assign]
    return seen


def test_crafted_small_bodies_never_decode_in_a_batch(
    exported_lenet: Path, images: np.ndarray, expected: np.ndarray
) -> None:
    """Bodies under 64 KB declaring under a megapixel were all decoded in the session thread:
    a 28x28 PNG with 60 zTXt chunks of 1 MiB each (~150 ms), a progressive JPEG of 4,800
    empty scans (~256 ms), answered 200 while every batch waited. Now their structure sends
    them to the decode pool, the PNG's text is never inflated (answered as the black image it
    is) and the JPEG is refused for its scans; the digits beside them are decoded in the batch."""
    from tests.helpers.crafted import jpeg_with_empty_scans, png_with_text

    svc = service(exported_lenet / "model.onnx")
    black = svc.decode(png(np.zeros((28, 28), np.uint8)), "black")
    want_black = int(svc.clf.probabilities(black)[0].argmax())
    seen = spy_decodes(svc)
    crafted = [
        (png_with_text("zTXt"), "image/png"),
        (png_with_text("iTXt"), "image/png"),
        (jpeg_with_empty_scans(), "image/jpeg"),
    ]

    async def go() -> list[httpx.Response]:
        async with client(svc) as c:
            jobs = [c.post("/predict", content=b, headers={"content-type": t}) for b, t in crafted]
            ct = {"content-type": "image/png"}
            jobs += [c.post("/predict", content=png(images[i]), headers=ct) for i in range(6)]
            return list(await asyncio.gather(*jobs))

    answers = run(go())
    assert [a.status_code for a in answers] == [200, 200, 413] + [200] * 6, answers
    assert [a.json()["label"] for a in answers[:2]] == [want_black] * 2
    assert "4,80" in answers[2].json()["detail"] and "scans" in answers[2].json()["detail"]
    assert [a.json()["label"] for a in answers[3:]] == [int(p.argmax()) for p in expected[:6]]
    in_batch = [s for s in seen if s[0] == "imgcls-session"]
    assert len(in_batch) == 6 and all(ok for _, _, ok in in_batch), seen
    assert sorted(ok for t, _, ok in seen if t == "imgcls-decode") == [False, True, True]


# ----------------------------------------------------------------------------- metrics
def test_metrics_count_the_requests(exported_lenet: Path, images: np.ndarray) -> None:
    svc = service(exported_lenet / "model.onnx")

    async def go() -> str:
        async with client(svc) as c:
            ct = {"content-type": "image/png"}
            for i in range(7):
                assert (await c.post("/predict", content=png(images[i]), headers=ct)).is_success
            for _ in range(3):
                assert (await c.post("/predict", json={"pixels": [[2.0]]})).status_code == 422
            r = await c.post("/predict", json={"pixels": (images[:5] / 255.0).tolist()})
            assert r.status_code == 200
            await c.get("/health")
            return (await c.get("/metrics")).text

    text = run(go())
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    labels = (("model_id", svc.model_id), ("provider", "CPUExecutionProvider"))

    def requests(route: str, status: str) -> float:
        key = tuple(sorted((("route", route), ("status", status), *labels)))
        return samples.get(("imgcls_requests_total", key), 0.0)

    assert requests("/predict", "200") == 8
    assert requests("/predict", "422") == 3
    assert requests("/health", "200") == 1
    latency = tuple(sorted((("route", "/predict"), *labels)))
    assert samples[("imgcls_request_seconds_count", latency)] == 11
    assert samples[("imgcls_request_seconds_sum", latency)] > 0
    # 7 single images and one JSON batch of 5: 12 images in session calls
    assert samples[("imgcls_batch_images_sum", tuple(sorted(labels)))] == 12
    assert samples[("imgcls_queue_depth", tuple(sorted(labels)))] == 0


# ----------------------------------------------------------------------------- docs
def test_openapi_documents_the_bodies_and_answers(open_service: Service) -> None:
    async def go() -> tuple[dict[str, Any], str, list[httpx.Response]]:
        async with client(open_service) as c:
            schema = (await c.get("/openapi.json")).json()
            html = (await c.get("/docs")).text
            urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
            assets = [await c.get(u) for u in urls]
            return schema, html, assets

    schema, html, assets = run(go())
    predict = schema["paths"]["/predict"]["post"]
    assert {"image/png", "image/jpeg", "multipart/form-data", "application/json"} <= set(
        predict["requestBody"]["content"]
    )
    for status in ("200", "400", "401", "408", "413", "415", "422", "503"):
        assert status in predict["responses"], status
    assert schema["paths"]["/health"]["get"]["responses"]["200"]
    # /docs loads Swagger UI from this server, not from a CDN
    assert "cdn" not in html.lower() and "https://" not in html
    assert len(assets) >= 2 and all(a.status_code == 200 for a in assets)
    assert max(len(a.content) for a in assets) > 100_000  # the Swagger UI bundle itself


@pytest.fixture()
def no_swagger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import sys

    # as if the package were not installed: importing it fails
    monkeypatch.setitem(sys.modules, "fastapi_offline", None)
    yield


def test_docs_without_the_assets_says_what_to_install(
    open_service: Service, no_swagger: None
) -> None:
    async def go() -> httpx.Response:
        async with client(open_service) as c:
            return await c.get("/docs")

    r = run(go())
    assert r.status_code == 404 and "pip install fastapi-offline" in r.json()["detail"]


# ----------------------------------------------------------------------------- GPUs
def test_workers_spread_over_gpus_with_tensorrt_caches_on_disk(
    exported_lenet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider options a worker slot gets (no GPU needed to compute them): slot i on GPU
    i % n, TensorRT's engine and timing caches in one folder on disk."""
    import imgcls.deploy.serve_workers as sa

    model = tmp_path / "model.onnx"
    model.write_bytes((exported_lenet / "model.onnx").read_bytes())
    monkeypatch.setattr(sa, "cuda_device_count", lambda: 3)
    options = ServeOptions(model=model, device="tensorrt")
    got = [sa.provider_options(options, slot) for slot in range(5)]
    assert [g["CUDAExecutionProvider"]["device_id"] for g in got if g] == [0, 1, 2, 0, 1]
    trt = got[4]["TensorrtExecutionProvider"] if got[4] else {}
    assert trt["device_id"] == 1
    assert trt["trt_engine_cache_enable"] == "1" and trt["trt_timing_cache_enable"] == "1"
    assert (
        trt["trt_engine_cache_path"] == trt["trt_timing_cache_path"] == str(tmp_path / ".trt-cache")
    )
    assert (tmp_path / ".trt-cache").is_dir()
    assert sa.provider_options(ServeOptions(model=model, device="cpu"), 1) is None
    monkeypatch.setattr(sa, "cuda_device_count", lambda: 0)
    assert sa.provider_options(options, 1) is None


@pytest.mark.gpu
def test_tensorrt_engine_is_built_once(exported_lenet: Path, tmp_path: Path) -> None:
    """A second service on the same model finds the engine on disk: it starts faster and
    writes no new engine file."""
    import time

    from imgcls.deploy.classifier import cuda_device_count

    if cuda_device_count() == 0:
        pytest.skip("no CUDA GPU")
    model = tmp_path / "model.onnx"
    model.write_bytes((exported_lenet / "model.onnx").read_bytes())
    t0 = time.monotonic()
    first = service(model, device="tensorrt")
    cold = time.monotonic() - t0
    assert first.provider == "TensorrtExecutionProvider"
    engines = sorted(p.name for p in (tmp_path / ".trt-cache").iterdir())
    assert any(name.endswith(".engine") for name in engines), engines
    t0 = time.monotonic()
    second = service(model, device="tensorrt")
    warm = time.monotonic() - t0
    assert second.provider == "TensorrtExecutionProvider"
    assert sorted(p.name for p in (tmp_path / ".trt-cache").iterdir()) == engines
    assert warm < cold, (warm, cold)


# ----------------------------------------------------------------------------- the route table
def test_what_is_attached_to_a_route_runs_for_post_predict_too(
    open_service: Service, images: np.ndarray
) -> None:
    """POST /predict may skip FastAPI's routing, but never what FastAPI would run: a dependency
    on the route, an exception handler and a middleware of the app all run for it."""
    seen: list[str] = []

    async def count(request: Request) -> None:
        seen.append(request.url.path)
        if request.headers.get("x-refuse"):
            raise HTTPException(429, "refused by the dependency")

    body, ct = png(images[0]), {"content-type": "image/png"}

    async def with_dependency() -> list[httpx.Response]:
        app = build_app(open_service, dependencies=[Depends(count)])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
        ) as c:
            return [
                await c.post("/predict", content=body, headers=ct),
                await c.post("/predict", content=body, headers={**ct, "x-refuse": "1"}),
                await c.get("/health"),
            ]

    ok, refused, health = run(with_dependency())
    assert ok.status_code == 200 and health.status_code == 200
    assert refused.status_code == 429 and refused.json()["detail"] == "refused by the dependency"
    assert seen == ["/predict", "/predict", "/health"]

    class Stamp(BaseHTTPMiddleware):
        async def dispatch(self, request: Any, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers["x-stamped"] = "1"
            return response

    async def teapot(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": "handled here"}, status_code=418)

    async def with_handler_and_middleware() -> list[httpx.Response]:
        plain, stamped = build_app(open_service), build_app(open_service)
        plain.app.add_exception_handler(400, teapot)
        stamped.app.add_middleware(Stamp)
        answers = []
        for gate in (plain, stamped):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=gate), base_url="http://127.0.0.1:8000"
            ) as c:
                answers.append(await c.post("/predict", content=b"", headers=ct))
                answers.append(await c.post("/predict", content=body, headers=ct))
        # the plain app's POST /predict is answered past FastAPI's routing, the other is not
        assert set(plain.direct or ()) == {("POST", "/predict")} and stamped.direct == {}
        return answers

    empty, good, empty_stamped, good_stamped = run(with_handler_and_middleware())
    assert empty.status_code == 418 and empty.json()["detail"] == "handled here"
    assert good.status_code == 200 and "x-stamped" not in good.headers
    assert empty_stamped.status_code == 400 and empty_stamped.headers["x-stamped"] == "1"
    assert good_stamped.status_code == 200 and good_stamped.headers["x-stamped"] == "1"


def test_routes_key_and_metric_labels_come_from_one_table(open_service: Service) -> None:
    from fastapi.routing import APIRoute

    from imgcls.deploy import serve_metrics
    from imgcls.deploy.serve_schemas import API_ROUTES, ENDPOINTS, ROUTE_TABLE

    app = build_app(open_service).app
    served = {(m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods or ()}
    # every entry with a handler is a FastAPI route, and FastAPI has no route of ours beyond
    assert {(e.method, e.path) for e in ROUTE_TABLE if e.handler} <= served
    assert {p for _, p in served} <= {e.path for e in ROUTE_TABLE}
    assert {e.path for e in ROUTE_TABLE} == serve_metrics.ROUTES
    assert {"/predict", "/compare/predict", "/features", "/metadata", "/metrics"} == API_ROUTES
    assert all(f"{e.method} {e.path}" in ENDPOINTS for e in ROUTE_TABLE if e.listed)
