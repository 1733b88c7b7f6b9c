"""What ``imgcls serve`` answers, in one table: every route, and its OpenAPI description.

``ROUTE_TABLE`` is the single list of the service's routes. Everything else is derived from
it, so that a route cannot be added in one place and missed in another:

- FastAPI's routes (``imgcls.deploy.serve_routes.build_app`` registers each entry's handler
  with the entry's OpenAPI description);
- the routes the gate answers itself, past FastAPI's routing (``direct``;
  ``imgcls.deploy.serve_gate``);
- ``API_ROUTES``, the paths behind the API key, and ``ENDPOINTS``, the list a 404 / 405 shows;
- ``ROUTE_LABELS``, the ``route`` label values of the Prometheus metrics
  (``imgcls.deploy.serve_metrics``: any other path is counted as ``other``).

The pydantic models describe the JSON answers for ``/openapi.json`` (the handlers build the
JSON themselves: validating each answer through pydantic would cost more than the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response

from imgcls.deploy.serve_settings import IMAGE_TYPES

__all__ = [
    "API_ROUTES",
    "ENDPOINTS",
    "ROUTE_LABELS",
    "ROUTE_TABLE",
    "BatchItem",
    "Endpoint",
    "FeatureMap",
    "Features",
    "Health",
    "Prediction",
    "Predictions",
    "Problem",
]


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


@dataclass(frozen=True, eq=False)
class Endpoint:
    """One route of the service.

    ``handler`` names the method of ``serve_routes.Handlers`` that answers it; None for the
    routes FastAPI serves itself (``/openapi.json``) or fastapi-offline does (``/docs``, with
    a handler of ours that says what to install when the package is missing). ``key``: behind
    the API key. ``direct``: the gate calls the handler itself while nothing is attached to
    the FastAPI route that only FastAPI would run (``serve_gate``). ``openapi``: the keyword
    arguments of ``FastAPI.add_api_route`` that describe it.
    """

    method: str
    path: str
    handler: str | None
    key: bool = False
    direct: bool = False
    note: str = ""  # beside the route in ENDPOINTS
    listed: bool = True  # in ENDPOINTS
    openapi: dict[str, Any] = field(default_factory=dict)


_BODY_ROUTE = {"openapi_extra": _IMAGE_BODY}
ROUTE_TABLE: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/predict",
        "predict",
        key=True,
        direct=True,
        openapi={
            **_BODY_ROUTE,
            "summary": "Classify an image (raw, multipart field 'image') or JSON pixels",
            "response_model": Prediction | Predictions,
            "responses": _BODY_ERRORS,
        },
    ),
    Endpoint(
        "POST",
        "/compare/predict",
        "compare_predict",
        key=True,
        note="the model beside it, with --compare",
        openapi={
            **_BODY_ROUTE,
            "summary": "Classify with the model served beside the main one (--compare)",
            "response_model": Prediction | Predictions,
            "responses": {**_BODY_ERRORS, 404: {**_DETAIL, "description": "No --compare"}},
        },
    ),
    Endpoint(
        "POST",
        "/features",
        "features",
        key=True,
        openapi={
            **_BODY_ROUTE,
            "summary": "Classify one image and return the feature maps of each conv / pooling "
            "layer",
            "response_model": Features,
            "responses": {**_BODY_ERRORS, 404: {**_DETAIL, "description": "No feature-map model"}},
        },
    ),
    Endpoint(
        "GET",
        "/metadata",
        "metadata",
        key=True,
        openapi={
            "summary": "The export's metadata, the service's settings",
            "response_model": dict[str, Any],
            "responses": _COMMON_ERRORS,
        },
    ),
    Endpoint(
        "GET",
        "/metrics",
        "metrics",
        key=True,
        openapi={
            "summary": "Prometheus metrics (text format)",
            "response_class": Response,
            "responses": {
                200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
                **_COMMON_ERRORS,
            },
        },
    ),
    Endpoint(
        "GET",
        "/health",
        "health",
        openapi={
            "summary": "200 once the model is loaded (no key needed)",
            "response_model": Health,
            "responses": {400: _COMMON_ERRORS[400]},
        },
    ),
    Endpoint("GET", "/docs", None, note="Swagger UI"),
    # Swagger UI's OAuth2 redirect page, which fastapi-offline adds beside /docs
    Endpoint("GET", "/docs/oauth2-redirect", None, listed=False),
    Endpoint("GET", "/openapi.json", None),
    Endpoint("GET", "/", "page", note="the page", openapi={"include_in_schema": False}),
)

API_ROUTES = frozenset(e.path for e in ROUTE_TABLE if e.key)
ROUTE_LABELS = frozenset(e.path for e in ROUTE_TABLE)
ENDPOINTS = ", ".join(
    f"{e.method} {e.path}" + (f" ({e.note})" if e.note else "") for e in ROUTE_TABLE if e.listed
)
