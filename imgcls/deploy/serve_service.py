"""The model side of one ``imgcls serve`` worker: ``Service``.

A ``Service`` holds the worker's classifier (and feature-map classifier), its decode pool and
its ``Batcher`` (``imgcls.deploy.batcher``), and turns a request into the model's answer:

1. ``infer`` reads the body (``imgcls.deploy.serve_bodies``). Image decoding and JSON parsing
   never run on the event loop: an image body up to ``RAW_JOB_BYTES`` goes as it is to the
   batcher and is decoded in the session thread, in its batch (one thread hop per batch, not
   per request: the hop is most of what a lone request to a small model costs); a bigger body,
   JSON, an image whose structure is not that of a plain PNG or JPEG (``image_costs``) and
   one whose header declares more than ``DIRECT_PIXELS`` go to the decode pool,
   where at most ``decode_threads`` run at once, so that decompression-bomb-like uploads take
   neither the memory, the loop nor a batch's time.
2. The batcher's session thread decodes the small bodies of a batch (``_decode_in_batch``) and
   runs one classifier call for it (``_run_batch``); a failed call answers 503 to that batch
   only.

Every call into onnxruntime goes through ``OnnxClassifier`` (outputs by name, its batch limit).
"""

from __future__ import annotations

import asyncio
import base64
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from starlette.requests import Request

from imgcls.deploy.batcher import Batcher, BatchError, Job
from imgcls.deploy.classifier import OnnxClassifier
from imgcls.deploy.framing import framing_for
from imgcls.deploy.image_costs import cheap_to_decode
from imgcls.deploy.images import decode_image
from imgcls.deploy.metadata import features_answer_is_the_models
from imgcls.deploy.serve_bodies import header, http_error, json_pixels, read_body, read_form_image
from imgcls.deploy.serve_metrics import Metrics
from imgcls.deploy.serve_settings import (
    DIRECT_PIXELS,
    IMAGE_TYPES,
    RAW_JOB_BYTES,
    ServeOptions,
    model_id,
)
from imgcls.errors import ImageFileError, ImageTooLargeError

__all__ = ["Service", "encode_maps"]


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


class Service:
    """The model, the decode pool and the batcher of one worker process."""

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
            self._run_batch,
            options.max_batch_size,
            self.metrics.batch,
            prepare=self._decode_in_batch,
        )
        self.layers = features.metadata.get("feature_maps", []) if features else []
        # an ensemble's feature-map model is one member: the answer comes from the model itself
        self.features_answer = features is not None and features_answer_is_the_models(
            features.metadata
        )
        self.compare: Service | None = None  # the model beside it (--compare), its own batcher
        self.too_big = (
            f"request body over the {options.max_body_mb:g} MB limit; send a smaller image "
            "(the server's --max_body_mb sets the limit)"
        )

    # -------------------------------------------------------------- the session thread
    def _decode_in_batch(self, job: Job) -> bool:
        """A job's pixels, in the session thread: a small image body is decoded here when its
        structure says it is cheap (a PNG or JPEG of few chunks and scans,
        ``imgcls.deploy.image_costs.cheap_to_decode``) and its header declares at most
        ``DIRECT_PIXELS`` (read before any pixel is decoded). Any other goes to the decode
        pool, so that a slow decode never holds a batch, and comes back to the batcher
        decoded. False when handed to the pool."""
        if job.pixels is not None:
            return True
        assert job.data is not None
        if not cheap_to_decode(job.data):
            self.decode_pool.submit(self._decode_deferred, job)
            return False
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

    def _run_batch(self, jobs: list[Job]) -> list[Any]:
        """One classifier call for the batch's plain jobs; one per feature-map job."""
        answers: list[Any] = [None] * len(jobs)
        plain = [i for i, job in enumerate(jobs) if not job.features]
        if plain:
            x = (
                jobs[plain[0]].pixels
                if len(plain) == 1
                else np.concatenate([jobs[i].pixels for i in plain])  # type: ignore[misc]
            )
            assert x is not None
            probs = self.clf.probabilities(x)
            start = 0
            for i in plain:
                n = jobs[i].images
                answers[i] = probs[start : start + n]
                start += n
        for i, job in enumerate(jobs):
            if job.features:
                assert self.features is not None and job.pixels is not None
                probs, maps = self.features.feature_maps(job.pixels)
                if not self.features_answer:
                    probs = self.clf.probabilities(job.pixels)
                answers[i] = {
                    "probabilities": probs,
                    "maps": encode_maps([m[0] for m in maps], self.layers),
                }
        return answers

    # -------------------------------------------------------------- decoding
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
            raise http_error(413, str(e)) from None
        except ImageFileError as e:
            raise http_error(400, f"{e}; send a PNG or JPEG image") from None
        return (image[None].astype(np.float32)) / np.float32(255.0)

    def decode_off_loop(
        self, kind: str, data: bytes, name: str, features: bool
    ) -> tuple[np.ndarray, bool]:
        """In the decode pool: a JSON or big image body -> checked pixels, and whether a JSON
        batch was sent."""
        if kind == "json":
            x, batch = json_pixels(data, self.input_shape, self.input_name)
        else:
            x, batch = self.decode(data, name), False
        if features and len(x) != 1:
            raise http_error(422, f"/features takes one image, got {len(x)}")
        return x, batch

    # -------------------------------------------------------------- a request
    async def body(self, request: Request) -> bytes:
        o = self.options
        return await read_body(request, o.max_body_bytes, o.body_timeout_s, self.too_big)

    async def infer(self, request: Request, features: bool) -> tuple[Any, bool]:
        """Read the request, run the model on it (in a batch): the model's answer, and
        whether a JSON batch was sent."""
        content_type = header(request, b"content-type").split(";")[0].strip().lower()
        if not content_type:
            raise http_error(
                415,
                "no Content-Type; use image/png, image/jpeg, multipart/form-data (field "
                "'image') or application/json",
            )
        if content_type == "multipart/form-data":
            data = await read_form_image(
                request, await self.body(request), self.options.max_body_bytes
            )
            name, kind = "the uploaded file", "image"
        elif content_type == "application/json":
            data, name, kind = await self.body(request), "", "json"
        elif content_type in IMAGE_TYPES:
            data, name, kind = await self.body(request), "the uploaded image", "image"
        else:
            raise http_error(
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
                    self.decode_pool, self.decode_off_loop, kind, data, name, features
                )
                job = Job(x, features)
            answer = await self.batcher.submit(job)
        except BatchError as e:
            raise http_error(
                503,
                f"the model failed on the batch this request was in ({e}); the service is "
                "still up: retry, and see the server log",
            ) from None
        return answer, batch

    def answer(self, probs: np.ndarray) -> dict[str, Any]:
        """One image's probabilities -> its label, class name and probabilities (JSON)."""
        k = int(probs.argmax())
        return {
            "label": k,
            "class_name": self.class_names[k],
            "probabilities": np.round(probs.astype(np.float64), 7).tolist(),
        }

    def warm_up(self) -> None:
        """The first request should not pay for memory allocation or a TensorRT build."""
        self.clf.warm_up((1, self.options.max_batch_size))
        if self.features is not None:
            self.features.warm_up((1,))
