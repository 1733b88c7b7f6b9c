"""``imgcls serve``: an exported ONNX model behind HTTP, with dynamic batching, on LitServe.

Processes (LitServe's design): the main process supervises; one uvicorn process answers HTTP
(FastAPI); one inference worker per device (``workers_per_device`` of them) holds the
onnxruntime session. Requests reach the worker through a queue and the worker takes up to
``max_batch_size`` of them at once, waiting at most ``batch_timeout_ms`` for a batch to fill:
that is the dynamic batching.

Where each step runs, and why:

- The HTTP process reads the body (size limit first), decodes the image with the same code as
  ``imgcls infer`` (``imgcls.deploy.images.decode_image``: the model's framing, the pixel
  limit) or checks the JSON pixels (``imgcls.deploy.classifier.to_pixels``), and answers
  every bad request itself with a 4xx. Only valid pixel arrays are queued, so one bad request
  can never fail the batch it would have shared with good ones (LitServe fails a whole batch
  on an error).
- The worker runs the session on the whole batch and splits the answers.

Routes: ``build_server`` adds ``POST /predict``, ``POST /features``, ``GET /metadata`` and the
page at ``GET /`` to the FastAPI app of the ``LitServer`` itself (``app.add_api_route``), so
that a request body can be an image, a form or JSON; LitServe supplies ``/health`` and
``/docs``. ``ImageSpec`` holds those endpoint handlers: it is a ``LitSpec`` only because
LitServe connects a spec to the worker's request and response queues, which the handlers
use to queue jobs and await their answers. The spec's own hooks pass requests and answers
through unchanged.

No torch: this module imports LitServe, FastAPI, onnxruntime, numpy and Pillow only, like the
rest of ``imgcls.deploy`` (``tests/deploy/test_torch_free.py`` checks it in a fresh interpreter).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import multiprocessing
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

import litserve as ls
import numpy as np
from fastapi import HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.specs.base import LitSpec
from litserve.utils import LitAPIStatus, LoopResponseType, ResponseBufferItem
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.staticfiles import StaticFiles

from imgcls.deploy.classifier import OnnxClassifier, read_metadata, to_pixels
from imgcls.deploy.framing import framing_for
from imgcls.deploy.images import MAX_PIXELS, decode_image
from imgcls.errors import (
    ConfigError,
    ImageFileError,
    ImageTooLargeError,
    InputError,
    ServeError,
)
from imgcls.utils import sha256_file

__all__ = [
    "ClassifierAPI",
    "ServeOptions",
    "build_server",
    "encode_maps",
    "model_id",
    "serve",
]

WEB_DIR = Path(__file__).with_name("web")
FEATURES_FILE = "model.features.onnx"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff")
MAX_JSON_IMAGES = 1024  # images in one JSON request: a bigger batch belongs in several requests
DECODE_INLINE_BYTES = 64 * 1024  # larger uploads are decoded off the event loop
ENDPOINTS = "POST /predict, POST /features, GET /health, GET /metadata, GET /docs, GET / (the page)"


@dataclass
class ServeOptions:
    model: Path
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 64
    batch_timeout_ms: float = 0.0
    workers_per_device: int = 1
    max_body_mb: float = 10.0
    max_pixels: int = MAX_PIXELS
    preprocess: str = "auto"
    timeout_s: float = 30.0
    log_level: str = "warning"
    access_log: bool = False
    intra_op_threads: int | None = 1  # None: onnxruntime's default, one thread per core
    features: Path | None = field(default=None)  # model.features.onnx beside the model, if any

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


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


# ----------------------------------------------------------------------------- the worker
class GreedyBatchLoop(BatchedLoop):
    """Dynamic batching that adds no wait: block until a request arrives, take every request
    already queued behind it (up to ``max_batch_size``), then wait at most ``batch_timeout``
    for more while the batch is not full.

    LitServe's own collection waits out the whole ``batch_timeout`` in 1 ms slices even when
    nothing else is queued, so a lone request always paid it; with ``batch_timeout`` 0 it polls
    the queue without blocking, which keeps a core busy when idle. Under load, requests queue
    while the worker runs the previous batch, so batches form by themselves.
    """

    def get_batch_requests(self, lit_api: Any, request_queue: Any, transport: Any) -> Any:
        items = [request_queue.get()]
        deadline = time.monotonic() + lit_api.batch_timeout
        while len(items) < lit_api.max_batch_size:
            try:
                items.append(request_queue.get_nowait())
                continue
            except Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                items.append(request_queue.get(timeout=remaining))
            except Empty:
                break
        payloads, timed_out = [], []
        limit = lit_api.request_timeout
        limited = limit not in (None, False, -1)
        for item in items:
            if item == _SENTINEL_VALUE:
                raise _StopLoopError()
            response_queue_id, uid, timestamp, job = item
            # Tells the HTTP process which worker holds the request (as LitServe's own does).
            self.put_response(
                transport, response_queue_id, uid, (), LitAPIStatus.START, LoopResponseType.REGULAR
            )
            if limited and time.monotonic() - timestamp > limit:
                timed_out.append((response_queue_id, uid))
            else:
                payloads.append((response_queue_id, uid, job))
        return payloads, timed_out


@dataclass
class Job:
    """What crosses the queue: checked pixels (N, C, H, W) float32, and what to answer."""

    pixels: np.ndarray
    features: bool = False


class ClassifierAPI(ls.LitAPI):
    """The inference worker: one onnxruntime session (and the feature-map session, if the
    export has one) per worker, run on whole batches of jobs."""

    def __init__(self, options: ServeOptions, spec: LitSpec) -> None:
        super().__init__(
            max_batch_size=options.max_batch_size,
            batch_timeout=options.batch_timeout_ms / 1000.0,
            api_path="/predict",
            spec=spec,
            loop=GreedyBatchLoop() if options.max_batch_size > 1 else "auto",
        )
        self.options = options
        self.clf: OnnxClassifier | None = None
        self.features: OnnxClassifier | None = None

    def setup(self, device: str) -> None:
        kind, _, index = str(device).partition(":")
        gpu = {"device_id": int(index or 0)}
        provider_options = (
            {"CUDAExecutionProvider": gpu, "TensorrtExecutionProvider": gpu}
            if kind == "cuda"
            else None
        )
        common: dict[str, Any] = {
            "device": "cpu" if kind == "cpu" else self.options.device,
            "provider_options": provider_options,
            # On the CPU one thread per worker: the HTTP process and the clients share the
            # cores, and more workers (--workers_per_device) use more of them.
            "intra_op_threads": self.options.intra_op_threads if kind == "cpu" else None,
            # The HTTP process and the clients share the cores: spinning threads steal them.
            "session_config": {"session.intra_op.allow_spinning": "0"} if kind == "cpu" else None,
            "batch_size": max(self.options.max_batch_size, MAX_JSON_IMAGES),
        }
        self.clf = OnnxClassifier(self.options.model, **common)
        if self.options.features is not None:
            self.features = OnnxClassifier(self.options.features, **common)
        # Warm-up: /health answers 200 only after setup, so the first request is not the one
        # that pays for memory allocation or a TensorRT engine build.
        shape = (self.options.max_batch_size, *self.clf.input_shape)
        self.clf.run(np.zeros(shape, np.float32))
        self.clf.run(np.zeros((1, *self.clf.input_shape), np.float32))
        if self.features is not None:
            one = np.zeros((1, *self.clf.input_shape), np.float32)
            self.features.session.run(None, {self.features.input_name: one})

    def decode_request(self, request: Job, **kwargs: Any) -> Job:
        return request

    def batch(self, inputs: list[Job]) -> list[Job]:
        return inputs  # jobs hold different numbers of images: concatenated in predict

    def predict(self, x: Job | list[Job], **kwargs: Any) -> Any:
        jobs = x if isinstance(x, list) else [x]
        answers: list[dict[str, Any] | None] = [None] * len(jobs)
        plain = [i for i, job in enumerate(jobs) if not job.features]
        if plain:
            assert self.clf is not None
            probs = self.clf.run(np.concatenate([jobs[i].pixels for i in plain]))[1]
            start = 0
            for i in plain:
                n = len(jobs[i].pixels)
                answers[i] = {"probabilities": probs[start : start + n]}
                start += n
        for i, job in enumerate(jobs):
            if job.features:
                answers[i] = self._features(job.pixels)
        provider = self.clf.providers_in_use[0] if self.clf is not None else "?"
        for answer in answers:
            assert answer is not None
            answer["provider"] = provider
        return answers if isinstance(x, list) else answers[0]

    def _features(self, pixels: np.ndarray) -> dict[str, Any]:
        assert self.features is not None
        outputs = self.features.session.run(None, {self.features.input_name: pixels})
        layers = self.features.metadata.get("feature_maps", [])
        return {
            "probabilities": outputs[1],
            "maps": encode_maps([m[0] for m in outputs[2:]], layers),
        }

    def unbatch(self, output: Any) -> Any:
        return output

    def encode_response(self, output: Any, **kwargs: Any) -> Any:
        return output


# ----------------------------------------------------------------------------- HTTP side
def _error(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


class ImageSpec(LitSpec):
    """The handlers of ``POST /predict`` and ``POST /features`` (``build_server`` adds them to
    the app): read and check the request in the HTTP process, queue the pixels on the
    worker's request queue, await the answer, answer JSON.

    A ``LitSpec`` only so that LitServe connects it to its queues (``setup`` gives it
    ``request_queue`` and ``response_buffer``); it registers no endpoint through LitServe, and
    its ``decode_request`` / ``encode_response`` pass things through unchanged."""

    def __init__(self, options: ServeOptions, metadata: dict[str, Any], mid: str) -> None:
        super().__init__()
        self.api_path = "/predict"  # names LitServe's request queue for these endpoints
        self.options = options
        self.metadata = metadata
        self.model_id = mid
        self.class_names: list[str] = list(metadata["class_names"])
        c, h, w = (int(d) for d in metadata["input"]["shape"][1:])
        self.input_shape: tuple[int, int, int] = (c, h, w)
        self.input_name = str(metadata["input"]["name"])
        self.framing = framing_for(
            options.preprocess, metadata.get("dataset"), metadata.get("framing")
        )

    def decode_request(self, request: Any, context_kwargs: Any = None, **kwargs: Any) -> Any:
        return request

    def encode_response(self, output: Any, context_kwargs: Any = None, **kwargs: Any) -> Any:
        return output

    # -------------------------------------------------------------- reading the request
    async def _body(self, request: Request) -> bytes:
        limit = self.options.max_body_bytes
        too_big = _error(
            413,
            f"request body over the {self.options.max_body_mb:g} MB limit; send a smaller image "
            "(the server's --max_body_mb sets the limit)",
        )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_big
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_big
        if not body:
            raise _error(
                400,
                "empty body; send an image (PNG/JPEG, raw or as multipart field 'image') or "
                'JSON {"pixels": [[...28 floats in [0, 1]...] x 28]}',
            )
        return bytes(body)

    def _decode(self, data: bytes, name: str) -> np.ndarray:
        c, h, w = self.input_shape
        try:
            image = decode_image(
                data,
                name=name,
                channels=c,
                size=(h, w),
                preprocess=self.framing,
                max_pixels=self.options.max_pixels,
            )
        except ImageFileError as e:
            status = 413 if isinstance(e, ImageTooLargeError) else 400
            raise _error(status, str(e)) from None
        return image[None].astype(np.float32) / np.float32(255.0)

    async def _image(self, data: bytes, name: str) -> np.ndarray:
        if len(data) <= DECODE_INLINE_BYTES:
            return self._decode(data, name)
        return await asyncio.to_thread(self._decode, data, name)

    def _pixels(self, data: bytes) -> tuple[np.ndarray, bool]:
        """JSON pixels -> (checked pixels, whether a list of images was sent)."""
        try:
            payload = json.loads(data, parse_constant=_refuse_constant)
        except ValueError as e:
            raise _error(400, f"body is not valid JSON ({e})") from None
        if not isinstance(payload, dict) or "pixels" not in payload:
            raise _error(
                422,
                'JSON must be an object with a "pixels" key: one image as 28 rows of 28 floats '
                "in [0, 1], or a list of such images",
            )
        try:
            x = np.asarray(payload["pixels"], dtype=np.float32)
        except (ValueError, TypeError) as e:
            raise _error(
                422, f'"pixels" must be a rectangular array of numbers ({str(e)[:200]})'
            ) from None
        c, h, w = self.input_shape
        single = x.shape == (h, w) and c == 1 or x.shape == (c, h, w)
        if single:
            x = x.reshape(1, c, h, w)
        if x.ndim >= 1 and len(x) > MAX_JSON_IMAGES:
            raise _error(
                413, f"{len(x)} images in one request; send at most {MAX_JSON_IMAGES} per request"
            )
        try:
            return to_pixels(x, self.input_shape, self.input_name), not single
        except InputError as e:
            raise _error(422, f'"pixels": {e}') from None

    async def _read(self, request: Request) -> tuple[np.ndarray, bool]:
        """The request's pixels (N, C, H, W) float32, and whether it was a JSON batch."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not content_type:
            raise _error(
                415,
                "no Content-Type; use image/png, image/jpeg, multipart/form-data (field "
                "'image') or application/json",
            )
        if content_type == "multipart/form-data":
            return await self._form(request), False
        if content_type not in (*IMAGE_TYPES, "application/json"):
            raise _error(
                415,
                f"Content-Type {content_type} is not accepted; use one of {', '.join(IMAGE_TYPES)}"
                ", multipart/form-data (field 'image') or application/json",
            )
        data = await self._body(request)
        if content_type == "application/json":
            return self._pixels(data)
        return await self._image(data, "the uploaded image"), False

    async def _form(self, request: Request) -> np.ndarray:
        data = await self._body(request)

        async def stream() -> Any:
            yield data

        try:
            form = await MultiPartParser(
                request.headers, stream(), max_part_size=self.options.max_body_bytes
            ).parse()
        except MultiPartException as e:
            raise _error(400, f"malformed multipart body ({e.message})") from None
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            fields = ", ".join(sorted(form.keys())) or "none"
            raise _error(
                422, f"multipart body needs a file in the field 'image' (fields sent: {fields})"
            )
        content = await upload.read()
        if not content:
            raise _error(400, f"the uploaded file {upload.filename!r} is empty")
        return await self._image(content, f"the uploaded file {upload.filename!r}")

    # -------------------------------------------------------------- queue and answer
    async def _submit(self, job: Job) -> dict[str, Any]:
        uid = uuid.uuid4()
        event = asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(event=event)
        self.request_queue.put_nowait((self.response_queue_id, uid, time.monotonic(), job))
        await event.wait()
        response, status = self.response_buffer.pop(uid).response
        if status == LitAPIStatus.ERROR:
            if isinstance(response, HTTPException):
                raise response
            raise _error(500, "the inference worker failed on this batch; see the server log")
        return dict(response)

    def _answer(self, probs: np.ndarray) -> dict[str, Any]:
        k = int(np.argmax(probs))
        return {
            "label": k,
            "class_name": self.class_names[k],
            "probabilities": [round(float(p), 7) for p in probs],
        }

    async def predict_endpoint(self, request: Request) -> JSONResponse:
        pixels, batch = await self._read(request)
        out = await self._submit(Job(pixels))
        meta = {"model_id": self.model_id, "provider": out["provider"]}
        answers = [self._answer(p) for p in out["probabilities"]]
        if batch:
            return JSONResponse({"predictions": answers, **meta})
        return JSONResponse({**answers[0], **meta})

    async def features_endpoint(self, request: Request) -> JSONResponse:
        if self.options.features is None:
            raise _error(
                404,
                "this export has no feature-map model (model.features.onnx): the net has no "
                "conv layer, or it was exported with --no-features; re-export with "
                "`imgcls export --features`",
            )
        pixels, _ = await self._read(request)
        if len(pixels) != 1:
            raise _error(422, f"/features takes one image, got {len(pixels)}")
        out = await self._submit(Job(pixels, features=True))
        answer = self._answer(out["probabilities"][0])
        return JSONResponse(
            {**answer, "model_id": self.model_id, "provider": out["provider"], "maps": out["maps"]}
        )


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a pixel value (pixels must be finite, in [0, 1])")


_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES[:2]},
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
                    "properties": {
                        "pixels": {
                            "description": "28x28 floats in [0, 1], or a list of such images",
                            "type": "array",
                        }
                    },
                    "required": ["pixels"],
                },
                "example": {"pixels": [[0.0] * 28] * 28},
            },
        },
    }
}


# ----------------------------------------------------------------------------- the server
def build_server(
    options: ServeOptions,
    *,
    api_factory: Callable[[ServeOptions, LitSpec], ls.LitAPI] = ClassifierAPI,
    provider: str = "CPUExecutionProvider",
) -> ls.LitServer:
    """The LitServer, not started: ``/predict``, ``/features``, ``/metadata``, the page at ``/``
    (in place of LitServe's own) and its ``/static`` files added to LitServe's FastAPI app,
    and a handler that names the routes in a 404 / 405 answer."""
    metadata = read_metadata(options.model)
    mid = model_id(options.model)
    spec = ImageSpec(options, metadata, mid)
    api = api_factory(options, spec)
    accelerator = "cpu" if provider == "CPUExecutionProvider" else "cuda"
    server = ls.LitServer(
        api,
        accelerator=accelerator,
        devices="auto",
        workers_per_device=options.workers_per_device,
        timeout=options.timeout_s,
        fast_queue=True,
    )
    app = server.app
    # LitServe's own "/" only says it runs; the page takes its place.
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != "/"]
    app.add_api_route(
        "/predict",
        spec.predict_endpoint,
        methods=["POST"],
        summary="Classify one image (PNG/JPEG, raw or multipart) or JSON pixels",
        openapi_extra=_IMAGE_BODY,
    )
    app.add_api_route(
        "/features",
        spec.features_endpoint,
        methods=["POST"],
        summary="Classify one image and return the feature maps of each conv / pooling layer",
        openapi_extra=_IMAGE_BODY,
    )
    features_meta = None
    if options.features is not None:
        features_meta = read_metadata(options.features).get("feature_maps")
    info = {
        **metadata,
        "model_id": mid,
        "provider": provider,
        "features": options.features is not None,
        "feature_maps": features_meta,
        "preprocess": options.preprocess,
        "framing": spec.framing,
        "max_batch_size": options.max_batch_size,
        "batch_timeout_ms": options.batch_timeout_ms,
    }

    async def metadata_route() -> JSONResponse:
        return JSONResponse(info)

    async def page() -> FileResponse:
        index = WEB_DIR / "index.html"
        if not index.is_file():
            raise _error(404, "the page is not installed (imgcls/deploy/web/index.html is missing)")
        return FileResponse(index)

    app.add_api_route("/metadata", metadata_route, methods=["GET"], summary="The export's metadata")
    app.add_api_route("/", page, methods=["GET"], summary="Draw a digit", include_in_schema=False)
    if WEB_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such route {request.method} {request.url.path}; routes: {ENDPOINTS}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}; routes: {ENDPOINTS}"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    return server


def check_options(options: ServeOptions) -> None:
    """Refuse bad option values before any process starts."""
    if options.max_batch_size < 1:
        raise ConfigError(f"--max_batch_size must be >= 1, got {options.max_batch_size}")
    if options.batch_timeout_ms < 0 or not math.isfinite(options.batch_timeout_ms):
        raise ConfigError(f"--batch_timeout_ms must be >= 0, got {options.batch_timeout_ms}")
    if options.workers_per_device < 1:
        raise ConfigError(f"--workers_per_device must be >= 1, got {options.workers_per_device}")
    if options.max_body_mb <= 0:
        raise ConfigError(f"--max_body_mb must be > 0, got {options.max_body_mb}")
    if options.max_pixels < 1:
        raise ConfigError(f"--max_pixels must be >= 1, got {options.max_pixels}")
    if not 1024 <= options.port <= 65535:
        raise ConfigError(f"--port must be in 1024..65535, got {options.port}")
    if options.host not in ("127.0.0.1", "0.0.0.0", "::"):
        raise ConfigError(
            f"--host must be 127.0.0.1 (this machine only), 0.0.0.0 or :: (all interfaces), "
            f"got {options.host!r}"
        )
    framing_for(options.preprocess, None)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(
                f"cannot listen on {host} port {port}: {e.strerror or e} (is the port in use by "
                "another server?); choose another with --port"
            ) from e


def _stop_http_first(server: ls.LitServer) -> Callable[[int, Any], None]:
    """SIGTERM: let the HTTP processes finish their in-flight requests (uvicorn's graceful
    shutdown, while the workers still answer), then stop LitServe."""

    main = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != main:
            # An HTTP process (forked, so it inherits this handler) re-raises the signal once
            # uvicorn has finished its requests: it is done, and exits quietly.
            raise SystemExit(0)
        http = [p for p in multiprocessing.active_children() if p.name.startswith("LitServer-")]
        for p in http:
            if p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)
        for p in http:
            p.join(timeout=server.uvicorn_graceful_timeout)
        raise KeyboardInterrupt  # LitServe's run() then shuts the workers down

    return handler


def serve(
    options: ServeOptions,
    log: Callable[[str], None] = print,
    *,
    api_factory: Callable[[ServeOptions, LitSpec], ls.LitAPI] = ClassifierAPI,
) -> None:
    """Check the model and the device in this process (a clear error, exit 2, before any
    worker starts), then run the server until SIGINT / SIGTERM."""
    check_options(options)
    _check_port_free(options.host, options.port)
    beside = options.model.with_name(FEATURES_FILE)
    if options.features is None and beside.is_file() and beside != options.model:
        options.features = beside
    probe = OnnxClassifier(options.model, device=options.device)  # ModelLoadError, ProviderError
    provider = probe.providers_in_use[0]
    del probe
    if options.features is not None:
        features_meta = read_metadata(options.features)
        if features_meta.get("features_of") not in (None, sha256_file(options.model)):
            log(
                f"[imgcls serve] warning: {options.features} was exported from another "
                "model.onnx; /features is off (re-export to get it back)"
            )
            options.features = None
    server = build_server(options, api_factory=api_factory, provider=provider)
    url = f"http://{'127.0.0.1' if options.host != '::' else '[::1]'}:{options.port}"
    log(
        f"[imgcls serve] {options.model} on {url} (provider {provider}; dynamic batching up to "
        f"{options.max_batch_size} images, {options.batch_timeout_ms:g} ms; "
        f"{options.workers_per_device} worker(s) per device; feature maps "
        f"{'on' if options.features else 'off'})"
    )
    log(f"[imgcls serve] page {url}/   API docs {url}/docs   health {url}/health")
    signal.signal(signal.SIGTERM, _stop_http_first(server))
    try:
        server.run(
            host=options.host,
            port=options.port,
            generate_client_file=False,
            log_level=options.log_level,
            access_log=options.access_log,
            num_api_servers=1,
        )
    except RuntimeError as e:
        if "failed to start" not in str(e):
            raise
        raise ServeError(
            "the inference worker could not load the model (its error is logged above); "
            "the same model loaded in this process, so look for a device or memory problem"
        ) from e
