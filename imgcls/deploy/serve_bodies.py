"""Reading a request's body for ``imgcls serve``, on the event loop, and checking JSON pixels.

Every bad body gets its own 4xx and a message saying what to send instead, before anything
reaches a session call: a body over ``--max_body_mb`` (413, from ``Content-Length`` before a
byte is read, else as it arrives), one that stalls (408 after ``--body_timeout_s``), an empty
one (400), a multipart form without exactly one file in the field ``image`` (422), JSON that
is not numbers in [0, 1] in a rectangular array (400 / 422). A client that goes away raises
``ClientDisconnect``, answered by nobody.

The body is read here, whole, before a form is parsed, so that the size limit and the
deadline hold for every content type; Starlette's ``Request.form`` then parses it from memory.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from fastapi import HTTPException
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request

from imgcls.deploy.pixels import to_pixels
from imgcls.deploy.serve_settings import MAX_JSON_IMAGES
from imgcls.errors import InputError

__all__ = ["header", "http_error", "json_pixels", "read_body", "read_form_image"]

# A form holds one file (the field 'image'); a few more parts are tolerated and named in the
# answer, thousands are refused by Starlette's parser before they cost memory.
MAX_FORM_FILES = 16
MAX_FORM_FIELDS = 64


def http_error(status: int, detail: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=detail, headers=headers)


def header(request: Request, name: bytes) -> str:
    """One header's value ("" if absent) straight from the ASGI scope: a request to /predict
    needs two, and starlette's ``Headers`` object costs more than the scan."""
    for key, value in request.scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


async def read_body(request: Request, limit: int, timeout_s: float, too_big: str) -> bytes:
    """The whole body, within ``limit`` bytes and, once it comes in pieces, ``timeout_s``."""
    declared = header(request, b"content-length")
    if declared.isdigit() and int(declared) > limit:
        raise http_error(413, too_big, {"connection": "close"})
    receive = request.receive
    message = await receive()  # a small body is here whole: no deadline to arm
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    body = message.get("body", b"")
    if message.get("more_body", False):
        body = await _rest(request, bytearray(body), limit, timeout_s, too_big)
    if len(body) > limit:
        raise http_error(413, too_big, {"connection": "close"})
    if not body:
        raise http_error(
            400,
            "empty body; send an image (PNG/JPEG, raw or as multipart field 'image') or "
            'JSON {"pixels": [[...28 floats in [0, 1]...] x 28]}',
        )
    return bytes(body)


async def _rest(
    request: Request, body: bytearray, limit: int, timeout_s: float, too_big: str
) -> bytes:
    """The rest of a body that came in pieces, within ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                body += message.get("body", b"")
                if len(body) > limit:
                    raise http_error(413, too_big, {"connection": "close"})
                if not message.get("more_body", False):
                    return bytes(body)
    except TimeoutError:
        raise http_error(
            408,
            f"the request body did not arrive within {timeout_s:g} s ({len(body)} bytes came); "
            "send it at once",
            {"connection": "close"},
        ) from None


async def read_form_image(request: Request, data: bytes, max_part_size: int) -> bytes:
    """The file in the field ``image`` of a multipart body already read (``data``)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:  # the parser reads to the end of the body only
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": data, "more_body": False}

    # Starlette answers a malformed form with an HTTPException(400) when the scope names an
    # app, and with an exception class of its internals otherwise; the gate's fast path calls
    # this before any app has set one, so name it here and catch only the public exception.
    scope = {**request.scope}
    scope.setdefault("app", None)
    try:
        async with Request(scope, replay).form(
            max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS, max_part_size=max_part_size
        ) as form:
            uploads = form.getlist("image")
            if len(uploads) > 1:
                raise http_error(
                    422, f"{len(uploads)} files in the field 'image'; send one per request"
                )
            upload = uploads[0] if uploads else None
            if upload is None or isinstance(upload, str):
                fields = ", ".join(sorted(form.keys())) or "none"
                raise http_error(
                    422,
                    f"multipart body needs a file in the field 'image' (fields sent: {fields})",
                )
            content = await upload.read()
            if not content:
                raise http_error(400, f"the uploaded file {upload.filename!r} is empty")
            return bytes(content)
    except StarletteHTTPException as e:
        if e.status_code != 400 or isinstance(e, HTTPException):
            raise  # ours, from above
        raise http_error(400, f"malformed multipart body ({e.detail})") from None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a pixel value (pixels must be finite, in [0, 1])")


_JSON_KINDS = {bool: "a boolean", str: "a string", dict: "an object", type(None): "null"}
_SEND = "numbers in [0, 1] (a pixel's 0..255 divided by 255)"


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
                kind = _JSON_KINDS.get(t, t.__name__)
                shown = "" if v is None else f" ({json.dumps(v)[:40]})"
                raise http_error(
                    422, f'"pixels" must hold numbers only, found {kind}{shown}; send {_SEND}'
                )
        if not deeper:
            return depth
        if any(type(v) is not list for v in deeper) and any(type(v) is list for v in deeper):
            raise http_error(
                422, '"pixels" must be a rectangular array of numbers (ragged nesting)'
            )
        level = deeper
    raise http_error(
        422, '"pixels" is nested more than 4 deep; send (H, W), (N, H, W) or (N, C, H, W)'
    )


def _shape_error(x: np.ndarray, depth: int, input_shape: tuple[int, int, int]) -> str | None:
    """What is wrong with the shape of JSON pixels, in the words of the JSON sent; None when
    nothing is."""
    c, h, w = input_shape
    one = f"{h} rows of {w} numbers" if c == 1 else f"{c} channels of {h} rows of {w} numbers"
    send = f"send one image as {one}, or a list of such images"
    if x.size == 0:
        return f'"pixels" is empty (shape {list(x.shape)}); {send}'
    if depth < (2 if c == 1 else 3):
        what = {0: "a single number", 1: f"a flat list of {x.size:,} numbers"}.get(
            depth, f"rows of numbers without channels (shape {list(x.shape)})"
        )
        return f'"pixels" is {what}, not an image; {send} (nested lists)'
    image = x.shape[-2:] if c == 1 and depth in (2, 3) else x.shape[-3:]
    want = (h, w) if c == 1 and depth in (2, 3) else (c, h, w)
    if tuple(image) != want:
        shape = " x ".join(str(n) for n in image)
        return f'"pixels" holds images of shape {shape}; this model takes {one}'
    return None


def json_pixels(
    data: bytes, input_shape: tuple[int, int, int], input_name: str
) -> tuple[np.ndarray, bool]:
    """JSON ``{"pixels": ...}`` -> pixels (N, C, H, W), and whether a list of images (a batch)
    was sent."""
    try:
        # big integers become floats (1e400 -> inf, refused as not finite below)
        payload = json.loads(data, parse_constant=_refuse_constant, parse_int=float)
    except RecursionError:
        raise http_error(400, 'JSON nested too deep; send {"pixels": [[...], ...]}') from None
    except ValueError as e:
        raise http_error(400, f"body is not valid JSON ({str(e)[:200]})") from None
    if not isinstance(payload, dict) or "pixels" not in payload:
        raise http_error(
            422,
            'JSON must be an object with a "pixels" key: one image as 28 rows of 28 floats '
            "in [0, 1], or a list of such images",
        )
    raw = payload["pixels"]
    depth = _nesting(raw)
    c, h, w = input_shape
    try:
        x = np.asarray(raw, dtype=np.float32)
    except (ValueError, TypeError, OverflowError) as e:
        raise http_error(
            422, f'"pixels" must be a rectangular array of numbers ({str(e)[:200]})'
        ) from None
    problem = _shape_error(x, depth, input_shape)
    if problem:
        raise http_error(422, problem)
    # One image is (H, W) for one channel, (C, H, W) for more; one level more is a batch,
    # also when it holds one image (its answer keeps "predictions").
    single = depth == (2 if c == 1 else 3)
    if single:
        x = x.reshape((1, c, h, w))
    if len(x) > MAX_JSON_IMAGES:
        raise http_error(
            413, f"{len(x)} images in one request; send at most {MAX_JSON_IMAGES} per request"
        )
    lo, hi = float(x.min()), float(x.max())
    if np.isfinite(lo) and np.isfinite(hi) and (lo < 0.0 or hi > 1.0):
        raise http_error(422, f'"pixels" must be {_SEND}; got values from {lo:.4g} to {hi:.4g}')
    try:
        return to_pixels(x, input_shape, input_name), not single
    except InputError as e:
        raise http_error(422, f'"pixels": {e}') from None
