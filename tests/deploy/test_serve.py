"""``imgcls serve``: a real server (FastAPI on uvicorn, a subprocess on 127.0.0.1) on a model
exported from a checkpoint trained on real MNIST, asked the way clients ask: raw image bodies,
multipart uploads, JSON pixels. Every bad request gets its 4xx and a message, and the next good
request is still answered correctly. SIGTERM lets in-flight requests finish.
"""

from __future__ import annotations

import io
import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from imgcls.deploy.classifier import OnnxClassifier
from imgcls.deploy.idx import read_idx
from imgcls.deploy.images import decode_image
from imgcls.utils import sha256_file
from tests.helpers import run_imgcls
from tests.helpers.serving import (
    Server,
    free_port,
    raw_request,
    read_response,
    running_server,
    wait_ready,
)

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A 60-byte PNG whose header declares width x height pixels: a decompression bomb's
    opening, refused before any pixel is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def test_images(real_data_root: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = real_data_root / "MNIST" / "raw"
    x = read_idx(raw / "t10k-images-idx3-ubyte")[:64]
    y = read_idx(raw / "t10k-labels-idx1-ubyte")[:64]
    return x, y.astype(np.int64)


@pytest.fixture(scope="module")
def model(exported_lenet: Path) -> Path:
    return exported_lenet / "model.onnx"


@pytest.fixture(scope="module")
def expected(model: Path, test_images: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The runtime's probabilities for the test images: what every answer must equal."""
    return OnnxClassifier(model, device="cpu").predict(test_images[0])[1]


@pytest.fixture(scope="module")
def server(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with running_server(model, "--device", "cpu", "--max_body_mb", "1", log=log) as s:
        yield s


@pytest.fixture()
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def check_good(client: httpx.Client, images: np.ndarray, expected: np.ndarray, i: int) -> None:
    """A good request after a bad one: answered, and with the model's own probabilities."""
    r = client.post("/predict", content=png(images[i]), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == int(expected[i].argmax())
    np.testing.assert_allclose(body["probabilities"], expected[i], atol=1e-6)


# ----------------------------------------------------------------------------- no torch
def test_serve_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['lightning'] = None; "
        "import imgcls.deploy.serve, imgcls.commands.serve; "
        "bad = [m for m in ('torch', 'lightning', 'torchvision') if sys.modules.get(m)]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ----------------------------------------------------------------------------- answers
def test_health_metadata_docs(client: httpx.Client, model: Path) -> None:
    health = client.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    meta = client.get("/metadata").json()
    # the checkpoint is described, but not where it lies on the server's disk
    assert "sha256" in meta["checkpoint"] and "path" not in meta["checkpoint"]
    assert "/" not in json.dumps(meta).replace("imgcls-onnx/1", "")
    assert meta["class_names"] == [str(k) for k in range(10)]
    assert meta["dataset"] == "mnist"
    assert meta["model_id"] == sha256_file(model)[:12]
    assert meta["provider"] == "CPUExecutionProvider"
    # the export's own shift accuracy (parity.json) for the page; no model beside this one
    assert [r["distance_px"] for r in meta["shift"]["distances"]] == [1, 2, 3]
    assert meta["compare"] is None
    beside = client.post("/compare/predict", json={"pixels": [[0.0] * 28] * 28})
    assert beside.status_code == 404 and "--compare MODEL" in beside.json()["detail"]
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/predict" in paths and "/features" in paths
    content = paths["/predict"]["post"]["requestBody"]["content"]
    assert {"image/png", "multipart/form-data", "application/json"} <= set(content)


def test_raw_multipart_and_json_agree_with_the_runtime(
    client: httpx.Client,
    model: Path,
    test_images: tuple[np.ndarray, np.ndarray],
    expected: np.ndarray,
) -> None:
    images, labels = test_images
    mid = sha256_file(model)[:12]
    for i in range(8):
        raw = client.post("/predict", content=png(images[i]), headers={"content-type": "image/png"})
        form = client.post("/predict", files={"image": (f"{i}.png", png(images[i]), "image/png")})
        js = client.post("/predict", json={"pixels": (images[i] / 255.0).tolist()})
        for r in (raw, form, js):
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["label"] == int(expected[i].argmax())
            assert body["class_name"] == str(body["label"])
            assert body["model_id"] == mid
            assert body["provider"] == "CPUExecutionProvider"
            np.testing.assert_allclose(body["probabilities"], expected[i], atol=1e-6)
            assert abs(sum(body["probabilities"]) - 1.0) < 1e-4
    # The trained model is right on most of them: the answers are real predictions.
    assert (expected[:8].argmax(1) == labels[:8]).mean() >= 0.75


def test_json_batch(
    client: httpx.Client, test_images: tuple[np.ndarray, np.ndarray], expected: np.ndarray
) -> None:
    images, _ = test_images
    r = client.post("/predict", json={"pixels": (images[:20] / 255.0).tolist()})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["label"] for p in preds] == expected[:20].argmax(1).tolist()
    np.testing.assert_allclose([p["probabilities"] for p in preds], expected[:20], atol=1e-6)


def test_jpeg_photo_is_framed_like_infer(
    client: httpx.Client, model: Path, test_images: tuple[np.ndarray, np.ndarray]
) -> None:
    """A digit photographed as dark ink on light paper: the server frames it with the same
    code as ``imgcls infer`` (one code path), so both give the same answer."""
    images, _ = test_images
    digit = Image.fromarray(255 - images[0]).resize((168, 168), Image.Resampling.BICUBIC)
    paper = Image.new("L", (300, 220), 215)
    paper.paste(digit, (90, 20))
    buf = io.BytesIO()
    paper.convert("RGB").save(buf, "JPEG", quality=85)
    r = client.post("/predict", content=buf.getvalue(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    framed = decode_image(buf.getvalue(), preprocess="auto", dataset="mnist")
    want = OnnxClassifier(model, device="cpu").predict(framed[None])[1][0]
    np.testing.assert_allclose(r.json()["probabilities"], want, atol=1e-6)


def test_concurrent_requests_are_batched_and_correct(
    server: Server, test_images: tuple[np.ndarray, np.ndarray], expected: np.ndarray
) -> None:
    images, _ = test_images
    results: dict[int, int] = {}

    def one(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            r = c.post("/predict", content=png(images[i]), headers={"content-type": "image/png"})
            results[i] = r.json()["label"] if r.status_code == 200 else -r.status_code

    threads = [threading.Thread(target=one, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: int(expected[i].argmax()) for i in range(64)}


# ----------------------------------------------------------------------------- bad requests
BAD_REQUESTS = [
    # (name, request kwargs, status, words the message must hold)
    ("not an image", {"content": b"hello, world", "ct": "image/png"}, 400, "not in a format"),
    ("truncated png", {"truncated": True, "ct": "image/png"}, 400, "not a readable image"),
    ("empty body", {"content": b"", "ct": "image/png"}, 400, "empty body"),
    ("over the size limit", {"content": b"\0" * (1024 * 1024 + 1), "ct": "image/png"}, 413, "1 MB"),
    (
        "decompression bomb",
        {"content": png_declaring(100_000, 100_000), "ct": "image/png"},
        413,
        "refused",
    ),
    (
        "over the pixel limit",
        {"content": png_declaring(10_000, 8_000), "ct": "image/png"},
        413,
        "declares 10000x8000 pixels",
    ),
    ("wrong content type", {"content": b"x", "ct": "text/plain"}, 415, "not accepted"),
    ("no content type", {"content": b"x", "ct": None}, 415, "Content-Type"),
    ("not json", {"content": b"{pixels", "ct": "application/json"}, 400, "not valid JSON"),
    ("json without pixels", {"json": {"image": 1}}, 422, '"pixels"'),
    ("json wrong shape", {"json": {"pixels": [[0.5] * 27] * 28}}, 422, "shape"),
    ("json ragged", {"json": {"pixels": [[0.5] * 28, [0.5]]}}, 422, "rectangular"),
    ("json NaN", {"content": b'{"pixels": [[NaN]]}', "ct": "application/json"}, 400, "NaN"),
    ("json above 1", {"json": {"pixels": [[2.0] * 28] * 28}}, 422, "[0, 1]"),
    ("json below 0", {"json": {"pixels": [[-0.5] * 28] * 28}}, 422, "[0, 1]"),
    ("json strings", {"json": {"pixels": [["a"] * 28] * 28}}, 422, "numbers only"),
    ("form without image", {"form": {"file": b"x"}}, 422, "'image'"),
    ("form with an empty file", {"form": {"image": b""}}, 400, "empty"),
]


@pytest.mark.parametrize(
    ("name", "req", "status", "words"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_request_gets_4xx_then_a_good_one_works(
    client: httpx.Client,
    test_images: tuple[np.ndarray, np.ndarray],
    expected: np.ndarray,
    name: str,
    req: dict[str, object],
    status: int,
    words: str,
) -> None:
    images, _ = test_images
    if "json" in req:
        r = client.post("/predict", json=req["json"])
    elif "form" in req:
        form = req["form"]
        assert isinstance(form, dict)
        r = client.post("/predict", files={k: ("f.png", v, "image/png") for k, v in form.items()})
    else:
        content = png(images[3])[:60] if req.get("truncated") else req["content"]
        headers = {"content-type": str(req["ct"])} if req["ct"] else {}
        assert isinstance(content, bytes)
        r = client.post("/predict", content=content, headers=headers)
    assert r.status_code == status, (name, r.status_code, r.text)
    assert words in r.json()["detail"], r.json()
    check_good(client, images, expected, 5)


def test_unknown_route_and_wrong_method(
    client: httpx.Client, test_images: tuple[np.ndarray, np.ndarray], expected: np.ndarray
) -> None:
    r = client.get("/predictions")
    assert r.status_code == 404 and "POST /predict" in r.json()["detail"]
    r = client.get("/predict")
    assert r.status_code == 405 and "GET is not allowed" in r.json()["detail"]
    check_good(client, test_images[0], expected, 6)


def test_features_answer_the_feature_maps(
    client: httpx.Client, test_images: tuple[np.ndarray, np.ndarray], expected: np.ndarray
) -> None:
    """/features: the same prediction as /predict, plus one entry per conv / pooling layer
    whose bytes decode to the shape the export's metadata gives."""
    import base64

    images, _ = test_images
    meta = client.get("/metadata").json()
    assert meta["features"] is True
    layers = meta["feature_maps"]
    assert [m["kind"] for m in layers] == ["conv", "pool", "conv", "pool"]  # LeNet-5
    r = client.post("/features", content=png(images[0]), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == int(expected[0].argmax())
    np.testing.assert_allclose(body["probabilities"], expected[0], atol=1e-6)
    assert [m["shape"] for m in body["maps"]] == [m["shape"] for m in layers]
    for m in body["maps"]:
        data = np.frombuffer(base64.b64decode(m["data"]), np.uint8)
        assert data.size == int(np.prod(m["shape"]))
        assert data.max() == 255 or max(m["max"]) == min(m["min"])  # each channel min-max scaled
    r = client.post("/features", json={"pixels": (images[:2] / 255.0).tolist()})
    assert r.status_code == 422 and "one image" in r.json()["detail"]
    check_good(client, images, expected, 7)


# ----------------------------------------------------------------------------- lifecycle
def test_sigterm_lets_in_flight_requests_finish(
    model: Path, tmp_path: Path, test_images: tuple[np.ndarray, np.ndarray], expected: np.ndarray
) -> None:
    """Requests whose bodies are still arriving when SIGTERM comes are answered (uvicorn's
    graceful shutdown), then the server exits 0. (A model without its feature-map model:
    /features says how to get one.)"""
    images, _ = test_images
    alone = tmp_path / "model.onnx"  # without the feature-map model beside it
    alone.write_bytes(model.read_bytes())
    log = tmp_path / "serve.log"
    with running_server(alone, "--device", "cpu", log=log) as s:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            assert c.get("/metadata").json()["features"] is False
            r = c.post("/features", content=png(images[0]), headers={"content-type": "image/png"})
            assert r.status_code == 404 and "--features" in r.json()["detail"]
        bodies = [png(images[i]) for i in range(4)]
        socks = []
        for body in bodies:  # headers and half of each body: four requests in flight
            sock, head = raw_request(s.url, body)
            sock.sendall(head + body[: len(body) // 2])
            socks.append(sock)
        time.sleep(0.3)
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the server is shutting down now, waiting for these four
        answers = []
        for sock, body in zip(socks, bodies, strict=True):
            sock.sendall(body[len(body) // 2 :])
            answers.append(read_response(sock))
            sock.close()
        assert s.proc.wait(25) == 0, s.output()
        labels = [json.loads(body)["label"] if code == 200 else -code for code, body in answers]
        assert labels == [int(expected[i].argmax()) for i in range(4)], s.output()
        assert time.monotonic() - t0 < 25
        assert "Traceback" not in s.output()


def test_bad_options_exit_2(model: Path, tmp_path: Path) -> None:
    cases = [
        (["--model", str(tmp_path / "none.onnx")], "no such ONNX file"),
        (["--model", str(model), "--max_batch_size", "0"], "--max_batch_size must be in 1..1024"),
        (["--model", str(model), "--port", "80"], "--port must be in 1024..65535"),
        (["--model", str(model), "--host", "10.1.2.3"], "--host must be"),
        (["--model", str(model), "--max_body_mb", "nan"], "--max_body_mb must be a number > 0"),
        (["--model", str(model), "--max_body_mb", "inf"], "--max_body_mb must be a number > 0"),
        (["--model", str(model), "--body_timeout_s", "0"], "--body_timeout_s must be"),
        (["--model", str(model), "--workers", "0"], "--workers must be >= 1"),
        (["--model", str(model), "--api_key", " "], "empty or only white space"),
    ]
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_text("not a model")
    cases.append((["--model", str(not_onnx)], "onnxruntime cannot load it"))
    for args, words in cases:
        proc = run_imgcls("serve", *args, cwd=tmp_path, check=False, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_port_in_use_is_a_clear_error(model: Path, tmp_path: Path) -> None:

    port = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        proc = run_imgcls(
            "serve", "--model", str(model), "--port", str(port), cwd=tmp_path, check=False
        )
    assert proc.returncode == 2, proc.stderr
    assert f"port {port}" in proc.stderr and "--port" in proc.stderr


@pytest.mark.gpu
def test_cuda_serving(
    model: Path, tmp_path: Path, test_images: tuple[np.ndarray, np.ndarray], expected: np.ndarray
) -> None:
    from imgcls.deploy.classifier import cuda_device_count

    if cuda_device_count() == 0:
        pytest.skip("no CUDA GPU")
    with (
        running_server(model, "--device", "cuda", "--workers", "2", log=tmp_path / "s.log") as s,
        httpx.Client(base_url=s.url, timeout=30) as c,
    ):
        assert c.get("/metadata").json()["provider"] == "CUDAExecutionProvider"
        r = c.post("/predict", json={"pixels": (test_images[0][:32] / 255.0).tolist()})
        assert r.json()["provider"] == "CUDAExecutionProvider"
        got = np.array([p["probabilities"] for p in r.json()["predictions"]])
        np.testing.assert_allclose(got, expected[:32], atol=1e-4)


def test_cuda_without_gpu_is_an_error(model: Path, tmp_path: Path) -> None:
    from imgcls.deploy.classifier import cuda_device_count

    if cuda_device_count() > 0:
        pytest.skip("a GPU is here: the CUDA provider loads")
    proc = run_imgcls("serve", "--model", str(model), "--device", "cuda", cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "CUDAExecutionProvider" in proc.stderr and "--device cpu" in proc.stderr


def test_wait_ready_reports_a_dead_server(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("boom")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], text=True)
    proc.wait()
    with pytest.raises(AssertionError, match="exited with 3"):
        wait_ready("http://127.0.0.1:1", proc, log, 5)
