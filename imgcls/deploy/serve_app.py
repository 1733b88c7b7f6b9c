"""The ASGI app of ``imgcls serve``: FastAPI routes, the model in this process.

One process answers HTTP and holds the onnxruntime session (``--workers N``: N such processes
on one port, uvicorn's supervisor). A request goes:

1. ``Gate`` (plain ASGI, before any routing): the ``Host`` header must be one the service was
   told to answer (DNS rebinding), the API key when one is set (``Authorization: Bearer KEY``
   or ``X-API-Key: KEY``, compared with ``hmac.compare_digest``), and the request is counted
   for ``/metrics``. ``POST /predict`` goes from here straight to its handler: FastAPI's
   routing and dependency solving were the largest per-request cost on the event loop.
2. The handler reads the body (size limit, a deadline for a stalled upload, a client that goes
   away is dropped quietly). Image decoding and JSON parsing never run on the event loop: an
   image body up to ``RAW_JOB_BYTES`` goes as it is to the ``Batcher``
   (``imgcls.deploy.batcher``) and is decoded in the session thread, in its batch (one thread
   hop per batch, not per request: the hop is most of what a lone request to a small model
   costs); a bigger body, JSON, and an image whose header declares more than
   ``DIRECT_PIXELS`` go to the decode pool, where at most ``decode_threads`` run at once, so
   that decompression-bomb-like uploads take neither the memory, the loop nor a batch's time.
   A bad body gets its own 4xx and never reaches a session call.
3. The ``Batcher``'s session thread runs one session call per batch; a failed call answers
   503 to that batch only.

No torch (``tests/deploy/test_torch_free.py``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hmac
import importlib.util
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.staticfiles import StaticFiles

from imgcls.deploy.batcher import Batcher, BatchError, Job
from imgcls.deploy.classifier import OnnxClassifier, cuda_device_count, to_pixels
from imgcls.deploy.framing import framing_for
from imgcls.deploy.images import MAX_PIXELS, decode_image
from imgcls.deploy.metadata import without_local_paths
from imgcls.deploy.serve_metrics import CONTENT_TYPE_LATEST, Metrics
from imgcls.errors import ImageFileError, ImageTooLargeError, InputError
from imgcls.utils import sha256_file

__all__ = [
    "API_ROUTES",
    "OPTIONS_ENV",
    "ServeOptions",
    "Service",
    "app_from_env",
    "build_app",
    "encode_maps",
    "model_id",
]

log = logging.getLogger("imgcls.serve")

WEB_DIR = Path(__file__).with_name("web")
FEATURES_FILE = "model.features.onnx"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff")
MAX_JSON_IMAGES = 1024  # images in one JSON request: a bigger batch belongs in several requests
# An image body up to this size is decoded in the session thread, as part of its batch; a bigger
# one (or JSON) in the decode pool. A 28x28 digit is a few hundred bytes, a phone photo megabytes.
RAW_JOB_BYTES = 64 * 1024
# An image body decoded in the session thread that declares more pixels than this (a small GIF
# or PNG can declare millions) goes to the decode pool instead: a batch never waits for it.
DIRECT_PIXELS = 1 << 20
API_ROUTES = frozenset({"/predict", "/features", "/metadata", "/metrics"})  # behind the key
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
OPTIONS_ENV = "IMGCLS_SERVE_OPTIONS"  # the options, as JSON, for the worker processes
KEY_ENV = "IMGCLS_API_KEY"
ENDPOINTS = (
    "POST /predict, POST /features, GET /metadata, GET /metrics, GET /health, GET /docs, "
    "GET / (the page)"
)


@dataclass
class ServeOptions:
    model: Path
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_batch_size: int = 64
    max_body_mb: float = 10.0
    max_pixels: int = MAX_PIXELS
    preprocess: str = "auto"
    body_timeout_s: float = 30.0  # a body that takes longer to arrive is answered 408
    decode_threads: int = 2  # image decodes (and JSON parses) at once, per worker
    api_key: str | None = None
    allowed_hosts: list[str] | None = None  # None: the loopback names on loopback, else any
    log_level: str = "warning"
    access_log: bool = False
    intra_op_threads: int | None = 1  # None: onnxruntime's default, one thread per core
    features: Path | None = field(default=None)  # model.features.onnx beside the model, if any
    run_dir: Path | None = None  # the workers' shared folder (device slots), made by serve()

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def hosts(self) -> frozenset[str] | None:
        """The Host names answered; None answers any."""
        if self.allowed_hosts:
            return frozenset(h.lower() for h in self.allowed_hosts)
        if self.host in ("127.0.0.1", "::1"):
            return frozenset(LOOPBACK_HOSTS)
        return None

    def to_json(self) -> str:
        d = asdict(self)
        d["api_key"] = None  # the workers read the key from the environment, not the options
        return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in d.items()})

    @classmethod
    def from_json(cls, text: str) -> ServeOptions:
        d = json.loads(text)
        for k in ("model", "features", "run_dir"):
            if d.get(k) is not None:
                d[k] = Path(d[k])
        return cls(**d)


def model_id(path: Path) -> str:
    """The model's id in every answer: the first 12 hex digits of its file's sha256."""
    return sha256_file(path)[:12]


def encode_maps(maps: list[np.ndarray], layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Feature maps of one image -> JSON: per layer its label, kind, shape and the maps as
    base64 uint8 (C*H*W, row-major), each channel min-max scaled to 0..255 on its own so
    that a weak channel is still visible (its range is in ``min`` / ``max``)."""
    out = []
    for arr, layer in zip(maps, layers, strict=True):
        a = np.asarray(arr, dtype=np.float32)  # (C, H, W)
        lo = a.min(axis=(1, 2), keepdims=True)
        hi = a.max(axis=(1, 2), keepdims=True)
        span = np.where(hi > lo, hi - lo, 1.0)
        scaled = np.rint((a - lo) / span * 255.0).astype(np.uint8)
        out.append(
            {
                "label": layer["label"],
                "kind": layer["kind"],
                "shape": list(a.shape),
                "min": [float(v) for v in lo.ravel()],
                "max": [float(v) for v in hi.ravel()],
                "data": base64.b64encode(scaled.tobytes()).decode("ascii"),
            }
        )
    return out


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=detail, headers=headers)


def _header(request: Request, name: bytes) -> str:
    """One header's value ("" if absent) straight from the ASGI scope: a request to /predict
    needs two, and starlette's ``Headers`` object costs more than the scan."""
    for key, value in request.scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a pixel value (pixels must be finite, in [0, 1])")


def _nesting(x: Any) -> int:
    """Depth of a JSON array of numbers (2 for 28 rows of 28); refuses anything but numbers
    (booleans and strings too: json makes True a 1) and more than 4 levels."""
    level = [x]
    for depth in range(5):
        deeper: list[Any] = []
        for v in level:
            t = type(v)
            if t is list:
                deeper.extend(v)
            elif t is not float and t is not int:
                kind = {bool: "a boolean", str: "a string", dict: "an object"}.get(t, t.__name__)
                raise _error(
                    422,
                    f'"pixels" must hold numbers only, found {kind} ({str(v)[:40]!r}); send '
                    "floats in [0, 1] or integers 0..255 in nested arrays",
                )
        if not deeper:
            return depth
        if any(type(v) is not list for v in deeper) and any(type(v) is list for v in deeper):
            raise _error(422, '"pixels" must be a rectangular array of numbers (ragged nesting)')
        level = deeper
    raise _error(422, '"pixels" is nested more than 4 deep; send (H, W), (N, H, W) or (N, C, H, W)')


# ----------------------------------------------------------------------------- OpenAPI
class Prediction(BaseModel):
    label: int
    class_name: str
    probabilities: list[float]
    model_id: str
    provider: str


class BatchItem(BaseModel):
    label: int
    class_name: str
    probabilities: list[float]


class Predictions(BaseModel):
    predictions: list[BatchItem]
    model_id: str
    provider: str


class FeatureMap(BaseModel):
    label: str
    kind: str
    shape: list[int]
    min: list[float]
    max: list[float]
    data: str


class Features(Prediction):
    maps: list[FeatureMap]


class Problem(BaseModel):
    detail: str


class Health(BaseModel):
    status: str


_DETAIL = {"model": Problem}
_COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {**_DETAIL, "description": "API key missing or wrong (when the server requires one)"},
    400: {**_DETAIL, "description": "Host not served here, or a body that cannot be read"},
}
_BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    **_COMMON_ERRORS,
    400: {**_DETAIL, "description": "Not an image, damaged, empty body or not JSON"},
    408: {**_DETAIL, "description": "The body did not arrive in time"},
    413: {**_DETAIL, "description": "Body, image or batch over the limits"},
    415: {**_DETAIL, "description": "Content-Type not accepted"},
    422: {**_DETAIL, "description": "JSON or form that does not hold one image"},
    503: {**_DETAIL, "description": "The model failed on the batch: retry"},
}
_JSON_PIXELS = {
    "oneOf": [
        {
            "description": "one image: H rows of W numbers",
            "type": "array",
            "items": {"type": "array", "items": {"type": "number"}},
        },
        {
            "description": "a batch (N, H, W) or one image / a batch with channels",
            "type": "array",
            "items": {"type": "array", "items": {"type": "array"}},
        },
    ]
}
_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "string", "format": "binary"}},
                    "required": ["image"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"pixels": _JSON_PIXELS},
                    "required": ["pixels"],
                },
                "example": {"pixels": [[0.0] * 28] * 28},
            },
        },
    }
}


# ----------------------------------------------------------------------------- the gate
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Gate:
    """Host check, API key and request metrics, in plain ASGI (no per-request task)."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        hosts: frozenset[str] | None,
        key: str | None,
        metrics: Metrics,
        routes: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]]
        | None = None,
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.key = key.encode() if key else None
        self.metrics = metrics
        self.routes = routes or {}

    async def _refuse(self, send: Send, status: int, detail: str, headers: list[Any]) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _authorised(self, headers: list[tuple[bytes, bytes]]) -> bool:
        assert self.key is not None
        given = b""
        for name, value in headers:
            if name == b"x-api-key":
                given = value.strip()
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
        return hmac.compare_digest(given, self.key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path: str = scope["path"]
        status = 500

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            headers = scope["headers"]
            if self.hosts is not None:
                host = next((v for k, v in headers if k == b"host"), b"").decode("latin-1")
                name = host.lower()
                name = name[1:].partition("]")[0] if name.startswith("[") else name.split(":")[0]
                if name not in self.hosts:
                    await self._refuse(
                        counted,
                        400,
                        f"Host {host!r} is not served here (this server answers "
                        f"{', '.join(sorted(self.hosts))}); the server's --allowed_hosts "
                        "lists the names it answers",
                        [],
                    )
                    return
            if self.key is not None and path in API_ROUTES and not self._authorised(headers):
                await self._refuse(
                    counted,
                    401,
                    "this server requires an API key: send it as 'Authorization: Bearer KEY' "
                    "or 'X-API-Key: KEY'",
                    [(b"www-authenticate", b'Bearer realm="imgcls"')],
                )
                return
            direct = self.routes.get((scope["method"], path))
            await (direct or self.app)(scope, receive, counted)
        finally:
            self.metrics.request(path, status, time.perf_counter() - start)


# ----------------------------------------------------------------------------- the service
class Service:
    """The model, the decode pool and the batcher of one worker process, and the route
    handlers that use them."""

    def __init__(
        self, options: ServeOptions, clf: OnnxClassifier, features: OnnxClassifier | None
    ) -> None:
        self.options = options
        self.clf = clf
        self.features = features
        self.metadata = clf.metadata
        self.model_id = model_id(options.model)
        self.provider = clf.providers_in_use[0]
        self.class_names: list[str] = list(clf.class_names)
        self.input_shape = clf.input_shape
        self.input_name = clf.input_name
        self.framing = framing_for(
            options.preprocess, self.metadata.get("dataset"), self.metadata.get("framing")
        )
        self.metrics = Metrics(self.model_id, self.provider)
        self.decode_pool = ThreadPoolExecutor(
            options.decode_threads, thread_name_prefix="imgcls-decode"
        )
        self.batcher = Batcher(
            self._run, options.max_batch_size, self.metrics.batch, prepare=self._prepare
        )
        self.layers = features.metadata.get("feature_maps", []) if features else []
        self.too_big = (
            f"request body over the {options.max_body_mb:g} MB limit; send a smaller image "
            "(the server's --max_body_mb sets the limit)"
        )

    # -------------------------------------------------------------- the session thread
    def _prepare(self, job: Job) -> bool:
        """A job's pixels, in the session thread: a small image body is decoded here unless
        its header declares more than ``DIRECT_PIXELS`` (read before any pixel is decoded):
        that one goes to the decode pool, so that a slow decode never holds a batch, and
        comes back to the batcher decoded. False when handed to the pool."""
        if job.pixels is not None:
            return True
        assert job.data is not None
        try:
            job.pixels = self.decode(
                job.data, job.name, min(self.options.max_pixels, DIRECT_PIXELS)
            )
        except ImageTooLargeError:
            self.decode_pool.submit(self._decode_deferred, job)
            return False
        job.data = None
        return True

    def _decode_deferred(self, job: Job) -> None:
        """In the decode pool: a big image's decode, then back to the batcher."""
        assert job.data is not None
        try:
            job.pixels = self.decode(job.data, job.name)
        except Exception as e:
            self.batcher.fail(job, e)
            return
        job.data = None
        self.batcher.put(job)

    def _run(self, jobs: list[Job]) -> list[Any]:
        answers: list[Any] = [None] * len(jobs)
        plain = [i for i, job in enumerate(jobs) if not job.features]
        if plain:
            x = (
                jobs[plain[0]].pixels
                if len(plain) == 1
                else np.concatenate([jobs[i].pixels for i in plain])  # type: ignore[misc]
            )
            probs = self.clf.session.run(["probabilities"], {self.input_name: x})[0]
            start = 0
            for i in plain:
                n = jobs[i].images
                answers[i] = probs[start : start + n]
                start += n
        for i, job in enumerate(jobs):
            if job.features:
                assert self.features is not None
                out = self.features.session.run(None, {self.input_name: job.pixels})
                maps = encode_maps([m[0] for m in out[2:]], self.layers)
                answers[i] = {"probabilities": out[1], "maps": maps}
        return answers

    # -------------------------------------------------------------- reading the request
    async def body(self, request: Request) -> bytes:
        limit = self.options.max_body_bytes
        declared = _header(request, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            raise _error(413, self.too_big, {"connection": "close"})
        receive = request.receive
        message = await receive()  # a small body is here whole: no deadline to arm
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        body = message.get("body", b"")
        if message.get("more_body", False):
            body = await self._rest(receive, bytearray(body), limit)
        if len(body) > limit:
            raise _error(413, self.too_big, {"connection": "close"})
        if not body:
            raise _error(
                400,
                "empty body; send an image (PNG/JPEG, raw or as multipart field 'image') or "
                'JSON {"pixels": [[...28 floats in [0, 1]...] x 28]}',
            )
        return bytes(body)

    async def _rest(self, receive: Receive, body: bytearray, limit: int) -> bytes:
        """The rest of a body that came in pieces, within ``--body_timeout_s``."""
        try:
            async with asyncio.timeout(self.options.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientDisconnect()
                    body += message.get("body", b"")
                    if len(body) > limit:
                        raise _error(413, self.too_big, {"connection": "close"})
                    if not message.get("more_body", False):
                        return bytes(body)
        except TimeoutError:
            raise _error(
                408,
                f"the request body did not arrive within {self.options.body_timeout_s:g} s "
                f"({len(body)} bytes came); send it at once",
                {"connection": "close"},
            ) from None

    def decode(self, data: bytes, name: str, max_pixels: int | None = None) -> np.ndarray:
        """An image body -> pixels (1, C, H, W); 4xx for a bad one. With ``max_pixels``
        (the session thread's bound, below the server's limit) an image over it raises
        ``ImageTooLargeError`` for the caller to send it to the decode pool."""
        c, h, w = self.input_shape
        try:
            image = decode_image(
                data,
                name=name,
                channels=c,
                size=(h, w),
                preprocess=self.framing,
                max_pixels=max_pixels or self.options.max_pixels,
            )
        except ImageTooLargeError as e:
            if max_pixels is not None:
                raise
            raise _error(413, str(e)) from None
        except ImageFileError as e:
            raise _error(400, f"{e}; send a PNG or JPEG image") from None
        return (image[None].astype(np.float32)) / np.float32(255.0)

    def pixels(self, data: bytes) -> tuple[np.ndarray, bool]:
        """JSON ``{"pixels": ...}`` -> pixels (N, C, H, W), and whether a list of images
        (a batch) was sent."""
        try:
            # big integers become floats (1e400 -> inf, refused as not finite below)
            payload = json.loads(data, parse_constant=_refuse_constant, parse_int=float)
        except RecursionError:
            raise _error(400, 'JSON nested too deep; send {"pixels": [[...], ...]}') from None
        except ValueError as e:
            raise _error(400, f"body is not valid JSON ({str(e)[:200]})") from None
        if not isinstance(payload, dict) or "pixels" not in payload:
            raise _error(
                422,
                'JSON must be an object with a "pixels" key: one image as 28 rows of 28 floats '
                "in [0, 1], or a list of such images",
            )
        raw = payload["pixels"]
        depth = _nesting(raw)
        c, h, w = self.input_shape
        try:
            x = np.asarray(raw, dtype=np.float32)
        except (ValueError, TypeError, OverflowError) as e:
            raise _error(
                422, f'"pixels" must be a rectangular array of numbers ({str(e)[:200]})'
            ) from None
        # One image is (H, W) for one channel, (C, H, W) for more; one level more is a batch,
        # also when it holds one image (its answer keeps "predictions").
        single = depth == (2 if c == 1 else 3)
        if single:
            x = x.reshape((1, c, h, w)) if x.size == c * h * w else x[None]
        if x.ndim >= 1 and len(x) > MAX_JSON_IMAGES:
            raise _error(
                413, f"{len(x)} images in one request; send at most {MAX_JSON_IMAGES} per request"
            )
        try:
            return to_pixels(x, self.input_shape, self.input_name), not single
        except InputError as e:
            raise _error(422, f'"pixels": {e}') from None

    def prepare(self, kind: str, data: bytes, name: str, features: bool) -> tuple[Any, bool]:
        """In the decode pool: a JSON or big body -> checked pixels, (pixels, batch?)."""
        if kind == "json":
            x, batch = self.pixels(data)
        else:
            x, batch = self.decode(data, name), False
        if features and len(x) != 1:
            raise _error(422, f"/features takes one image, got {len(x)}")
        return x, batch

    async def read(self, request: Request, features: bool) -> tuple[Any, bool]:
        """The request's answer from the model, and whether it was a JSON batch."""
        content_type = _header(request, b"content-type").split(";")[0].strip().lower()
        if not content_type:
            raise _error(
                415,
                "no Content-Type; use image/png, image/jpeg, multipart/form-data (field "
                "'image') or application/json",
            )
        if content_type == "multipart/form-data":
            data, name, kind = await self.form(request), "the uploaded file", "image"
        elif content_type == "application/json":
            data, name, kind = await self.body(request), "", "json"
        elif content_type in IMAGE_TYPES:
            data, name, kind = await self.body(request), "the uploaded image", "image"
        else:
            raise _error(
                415,
                f"Content-Type {content_type[:80]} is not accepted; use one of "
                f"{', '.join(IMAGE_TYPES)}, multipart/form-data (field 'image') or "
                "application/json",
            )
        try:
            if kind == "image" and len(data) <= RAW_JOB_BYTES:
                # decoded in the session thread, in the batch: one thread hop for the batch
                job, batch = Job(features=features, data=data, name=name), False
            else:
                loop = asyncio.get_running_loop()
                x, batch = await loop.run_in_executor(
                    self.decode_pool, self.prepare, kind, data, name, features
                )
                job = Job(x, features)
            answer = await self.batcher.submit(job)
        except BatchError as e:
            raise _error(
                503,
                f"the model failed on the batch this request was in ({e}); the service is "
                "still up: retry, and see the server log",
            ) from None
        return answer, batch

    async def form(self, request: Request) -> bytes:
        data = await self.body(request)

        async def stream() -> Any:
            yield data

        try:
            form = await MultiPartParser(
                request.headers, stream(), max_part_size=self.options.max_body_bytes
            ).parse()
        except MultiPartException as e:
            raise _error(400, f"malformed multipart body ({e.message})") from None
        try:
            uploads = form.getlist("image")
            if len(uploads) > 1:
                raise _error(
                    422, f"{len(uploads)} files in the field 'image'; send one per request"
                )
            upload = uploads[0] if uploads else None
            if upload is None or isinstance(upload, str):
                fields = ", ".join(sorted(form.keys())) or "none"
                raise _error(
                    422,
                    f"multipart body needs a file in the field 'image' (fields sent: {fields})",
                )
            content = await upload.read()
            if not content:
                raise _error(400, f"the uploaded file {upload.filename!r} is empty")
            return bytes(content)
        finally:
            await form.close()  # the parts' temporary files

    def answer(self, probs: np.ndarray) -> dict[str, Any]:
        k = int(probs.argmax())
        return {
            "label": k,
            "class_name": self.class_names[k],
            "probabilities": np.round(probs.astype(np.float64), 7).tolist(),
        }

    def warm_up(self) -> None:
        """The first request should not pay for memory allocation or a TensorRT build."""
        shape = self.clf.input_shape
        for n in sorted({1, self.options.max_batch_size}):
            self.clf.session.run(None, {self.input_name: np.zeros((n, *shape), np.float32)})
        if self.features is not None:
            one = np.zeros((1, *shape), np.float32)
            self.features.session.run(None, {self.input_name: one})


# ----------------------------------------------------------------------------- the app
def _swagger_assets() -> Path | None:
    """Swagger UI's files from the fastapi-offline package (PyPI), so /docs needs no CDN."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    return static if (static / "swagger-ui-bundle.js").is_file() else None


def build_app(service: Service) -> Any:
    """The ASGI app: the routes on FastAPI, wrapped in the ``Gate``."""
    options = service.options

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await service.batcher.close()
        service.decode_pool.shutdown(wait=False)

    app = FastAPI(
        lifespan=lifespan,
        title="imgcls serve",
        summary="An exported imgcls image classifier",
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service

    async def predict(request: Request) -> Response:
        try:
            out, batch = await service.read(request, features=False)
        except ClientDisconnect:
            return Response(status_code=499)  # nobody to answer; nothing to log
        meta = {"model_id": service.model_id, "provider": service.provider}
        if batch:
            return JSONResponse({"predictions": [service.answer(p) for p in out], **meta})
        return JSONResponse({**service.answer(out[0]), **meta})

    async def features(request: Request) -> Response:
        if service.features is None:
            raise _error(
                404,
                "this export has no feature-map model (model.features.onnx): the net has no "
                "conv layer, or it was exported with --no-features; re-export with "
                "`imgcls export --features`",
            )
        try:
            out, _ = await service.read(request, features=True)
        except ClientDisconnect:
            return Response(status_code=499)
        answer = service.answer(out["probabilities"][0])
        return JSONResponse(
            {
                **answer,
                "model_id": service.model_id,
                "provider": service.provider,
                "maps": out["maps"],
            }
        )

    features_meta = service.features.metadata.get("feature_maps") if service.features else None
    info = without_local_paths(
        {
            **service.metadata,
            "model_id": service.model_id,
            "provider": service.provider,
            "features": service.features is not None,
            "feature_maps": features_meta,
            "preprocess": options.preprocess,
            "framing": service.framing,
            "max_batch_size": options.max_batch_size,
            "workers": options.workers,
            "api_key_required": bool(options.api_key),
        }
    )

    async def metadata_route() -> JSONResponse:
        return JSONResponse(info)

    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def metrics() -> Response:
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(None, service.metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def page() -> FileResponse:
        index = WEB_DIR / "index.html"
        if not index.is_file():
            raise _error(404, "the page is not installed (imgcls/deploy/web/index.html is missing)")
        return FileResponse(index)

    assets = _swagger_assets()

    async def docs() -> HTMLResponse:
        if assets is None:
            raise _error(
                404,
                "the API docs page needs Swagger UI's files from the fastapi-offline package: "
                "pip install fastapi-offline (the document itself is at /openapi.json)",
            )
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="imgcls serve - API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )

    body_kw: dict[str, Any] = {"methods": ["POST"], "openapi_extra": _IMAGE_BODY}
    app.add_api_route(
        "/predict",
        predict,
        summary="Classify an image (raw, multipart field 'image') or JSON pixels",
        response_model=Prediction | Predictions,
        responses=_BODY_ERRORS,
        **body_kw,
    )
    app.add_api_route(
        "/features",
        features,
        summary="Classify one image and return the feature maps of each conv / pooling layer",
        response_model=Features,
        responses={**_BODY_ERRORS, 404: {**_DETAIL, "description": "No feature-map model"}},
        **body_kw,
    )
    app.add_api_route(
        "/metadata",
        metadata_route,
        methods=["GET"],
        summary="The export's metadata, the service's settings",
        response_model=dict[str, Any],
        responses=_COMMON_ERRORS,
    )
    app.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        summary="Prometheus metrics (text format)",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **_COMMON_ERRORS,
        },
    )
    app.add_api_route(
        "/health",
        health,
        methods=["GET"],
        summary="200 once the model is loaded (no key needed)",
        response_model=Health,
        responses={400: _COMMON_ERRORS[400]},
    )
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
    if WEB_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    if assets is not None:
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    if options.api_key:
        schema = app.openapi()
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        for path in API_ROUTES:
            for op in schema["paths"].get(path, {}).values():
                op["security"] = [{"bearer": []}, {"apiKey": []}]

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such route {request.method} {request.url.path}; routes: {ENDPOINTS}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}; routes: {ENDPOINTS}"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    async def predict_direct(scope: Scope, receive: Receive, send: Send) -> None:
        """POST /predict without FastAPI's routing and dependency solving (about 30 us of
        the loop's time per request, measured): the same handler, the same answers and
        errors; FastAPI keeps the route for the OpenAPI document and anything else."""
        try:
            response = await predict(Request(scope, receive))
        except StarletteHTTPException as e:
            response = JSONResponse({"detail": e.detail}, e.status_code, e.headers)
        await response(scope, receive, send)

    return Gate(
        app,
        hosts=options.hosts(),
        key=options.api_key,
        metrics=service.metrics,
        routes={("POST", "/predict"): predict_direct},
    )


# ----------------------------------------------------------------------------- sessions
def trt_cache_dir(model: Path, mid: str) -> Path:
    """Where TensorRT keeps its engines and timing cache: beside the model when that folder
    is writable, else under ~/.cache/imgcls, so that a restart does not rebuild them."""
    beside = model.parent / ".trt-cache"
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    home = Path.home() / ".cache" / "imgcls" / "trt" / mid
    home.mkdir(parents=True, exist_ok=True)
    return home


def provider_options(options: ServeOptions, slot: int) -> dict[str, dict[str, Any]] | None:
    """Worker ``slot`` runs on GPU ``slot % n_gpus``; TensorRT engines cached on disk."""
    if options.device == "cpu":
        return None
    n = cuda_device_count()
    if n == 0:
        return None
    gpu: dict[str, Any] = {"device_id": slot % n}
    trt: dict[str, Any] = dict(gpu)
    if options.device == "tensorrt":
        cache = str(trt_cache_dir(options.model, model_id(options.model)))
        trt.update(
            trt_engine_cache_enable="1",
            trt_engine_cache_path=cache,
            trt_timing_cache_enable="1",
            trt_timing_cache_path=cache,
        )
    return {"CUDAExecutionProvider": gpu, "TensorrtExecutionProvider": trt}


def make_service(options: ServeOptions, slot: int = 0) -> Service:
    common: dict[str, Any] = {
        "device": options.device,
        "provider_options": provider_options(options, slot),
        # one intra-op thread: the HTTP side and the clients share the cores
        "intra_op_threads": options.intra_op_threads if options.device == "cpu" else None,
        "session_config": {"session.intra_op.allow_spinning": "0"},
        "batch_size": max(options.max_batch_size, MAX_JSON_IMAGES),
    }
    if options.device == "auto":
        common["intra_op_threads"] = options.intra_op_threads
    clf = OnnxClassifier(options.model, **common)
    feats = OnnxClassifier(options.features, **common) if options.features else None
    service = Service(options, clf, feats)
    service.warm_up()
    return service


def _claim_slot(run_dir: Path, workers: int) -> int:
    """The lowest free worker slot (a lock held for the process's life): a restarted worker
    takes the slot, and so the GPU, of the one that died."""
    while True:
        for i in range(workers):
            fh = open(run_dir / f"slot-{i}", "a")  # noqa: SIM115 - held until the process exits
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                continue
            _held.append(fh)
            return i
        time.sleep(0.05)


_held: list[Any] = []


def app_from_env() -> Any:
    """The app factory of a worker process (``--workers`` > 1): options from the environment."""
    options = ServeOptions.from_json(os.environ[OPTIONS_ENV])
    options.api_key = os.environ.get(KEY_ENV) or None
    slot = _claim_slot(options.run_dir, options.workers) if options.run_dir else 0
    return build_app(make_service(options, slot))
