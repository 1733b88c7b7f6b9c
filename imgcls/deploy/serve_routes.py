"""The routes of ``imgcls serve``: their handlers, and the app built from the route table.

``build_app`` registers one FastAPI route per entry of ``serve_schemas.ROUTE_TABLE`` (its
handler is the ``Handlers`` method the entry names, its OpenAPI description the entry's) and
wraps the app in the ``Gate`` (``imgcls.deploy.serve_gate``), which is told the routes behind
the key and may answer the table's ``direct`` routes itself. ``direct_routes`` decides, at the
first request, which of those it may: a route the gate answers directly runs exactly what
FastAPI would run -- the handler, then the app's exception handlers on its error -- and a
route with a dependency, or an app with a middleware, goes through FastAPI instead.

``/docs`` is Swagger UI from the fastapi-offline package (its files served from this server:
no CDN); ``/openapi.json`` is FastAPI's.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.staticfiles import StaticFiles

from imgcls.deploy.metadata import without_local_paths
from imgcls.deploy.serve_bodies import http_error
from imgcls.deploy.serve_gate import ASGIApp, Gate, Receive, Scope, Send
from imgcls.deploy.serve_metrics import CONTENT_TYPE_LATEST
from imgcls.deploy.serve_schemas import API_ROUTES, ENDPOINTS, ROUTE_TABLE
from imgcls.deploy.serve_service import Service
from imgcls.deploy.teach import shift_figures

__all__ = ["WEB_DIR", "Handlers", "build_app", "direct_routes", "new_app"]

WEB_DIR = Path(__file__).with_name("web")
DOCS_ASSETS = "/docs-assets"


class Handlers:
    """One method per route of the table that has a handler; each takes the request."""

    def __init__(self, service: Service) -> None:
        self.service = service
        options = service.options
        features_meta = service.features.metadata.get("feature_maps") if service.features else None
        self.info = without_local_paths(
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
                "shift": shift_figures(options.model),
            }
        )
        self.meta = {"model_id": service.model_id, "provider": service.provider}
        # The model beside this one (--compare): its own handlers, its metadata in ours.
        self.beside = Handlers(service.compare) if service.compare is not None else None
        self.info["compare"] = None
        if self.beside is not None:
            self.info["compare"] = {**self.beside.info, "compare": None}

    async def predict(self, request: Request) -> Response:
        service = self.service
        try:
            out, batch = await service.infer(request, features=False)
        except ClientDisconnect:
            return Response(status_code=499)  # nobody to answer; nothing to log
        if batch:
            return JSONResponse({"predictions": [service.answer(p) for p in out], **self.meta})
        return JSONResponse({**service.answer(out[0]), **self.meta})

    async def compare_predict(self, request: Request) -> Response:
        if self.beside is None:
            raise http_error(
                404,
                "no model is served beside this one: start the server with --compare MODEL",
            )
        return await self.beside.predict(request)

    async def features(self, request: Request) -> Response:
        service = self.service
        if service.features is None:
            raise http_error(
                404,
                "this export has no feature-map model (model.features.onnx): the net has no "
                "conv layer, or it was exported with --no-features; re-export with "
                "`imgcls export --features`",
            )
        try:
            out, _ = await service.infer(request, features=True)
        except ClientDisconnect:
            return Response(status_code=499)
        answer = service.answer(out["probabilities"][0])
        return JSONResponse({**answer, **self.meta, "maps": out["maps"]})

    async def metadata(self, request: Request) -> Response:
        return JSONResponse(self.info)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(self, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(None, self.service.metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def page(self, request: Request) -> Response:
        index = WEB_DIR / "index.html"
        if not index.is_file():
            raise http_error(
                404, "the page is not installed (imgcls/deploy/web/index.html is missing)"
            )
        return FileResponse(index)

    async def docs_missing(self, request: Request) -> Response:
        raise http_error(
            404,
            "the API docs page needs Swagger UI's files from the fastapi-offline package: "
            "pip install fastapi-offline (the document itself is at /openapi.json)",
        )


def new_app(**kwargs: Any) -> tuple[FastAPI, bool]:
    """A FastAPI app with ``/docs`` from fastapi-offline (``FastAPIOffline``, its public
    API), and whether it has it; without the package, a plain app without ``/docs``."""
    try:
        from fastapi_offline import FastAPIOffline
    except ImportError:
        return FastAPI(docs_url=None, redoc_url=None, **kwargs), False
    app = FastAPIOffline(docs_url="/docs", redoc_url=None, static_url=DOCS_ASSETS, **kwargs)
    return app, True


def _exception_handler(app: FastAPI, exc: Exception) -> Any:
    """The handler the app would pick for ``exc``: by status code for an HTTP error, then by
    the first class of its MRO that has one (Starlette's ``ExceptionMiddleware`` rule)."""
    handlers = app.exception_handlers
    if isinstance(exc, StarletteHTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


def _direct(app: FastAPI, route: APIRoute) -> ASGIApp:
    endpoint = route.endpoint

    async def call(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = app
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = _exception_handler(app, exc)
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)

    return call


def direct_routes(app: FastAPI) -> dict[tuple[str, str], ASGIApp]:
    """The table's ``direct`` routes that the gate may answer itself: FastAPI would run nothing
    there but the handler and, on an error, the app's exception handlers (which the direct
    call runs too). None while a middleware is added to the app (it wraps every route) or
    where a dependency is attached to the route (FastAPI solves it)."""
    if app.user_middleware:
        return {}
    routes = {
        (method, r.path): r
        for r in app.routes
        if isinstance(r, APIRoute)
        for method in r.methods or ()
    }
    out: dict[tuple[str, str], ASGIApp] = {}
    for e in ROUTE_TABLE:
        route = routes.get((e.method, e.path))
        attached = route is None or route.dependencies or route.dependant.dependencies
        if e.direct and route is not None and not attached:
            out[(e.method, e.path)] = _direct(app, route)
    return out


def build_app(service: Service, *, dependencies: Sequence[Any] = ()) -> Gate:
    """The ASGI app: the table's routes on FastAPI, wrapped in the ``Gate``.

    ``dependencies`` (``fastapi.Depends(...)``) are attached to every route of the table, and
    run for every request to them, ``POST /predict`` included.
    """
    options = service.options

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for s in (service, service.compare):
            if s is not None:
                await s.batcher.close()
                s.decode_pool.shutdown(wait=False)

    app, has_docs = new_app(
        lifespan=lifespan,
        title="imgcls serve",
        summary="An exported imgcls image classifier",
        dependencies=list(dependencies) or None,
    )
    handlers = Handlers(service)
    for e in ROUTE_TABLE:
        if e.handler is not None:
            endpoint = getattr(handlers, e.handler)
            app.add_api_route(e.path, endpoint, methods=[e.method], **e.openapi)
        elif e.path == "/docs" and not has_docs:
            app.add_api_route(
                e.path, handlers.docs_missing, methods=[e.method], include_in_schema=False
            )
    if WEB_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

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
    async def http_error_answer(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such route {request.method} {request.url.path}; routes: {ENDPOINTS}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}; routes: {ENDPOINTS}"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    return Gate(
        app,
        hosts=options.hosts(),
        key=options.api_key,
        protected=API_ROUTES,
        metrics=service.metrics,
        resolve=lambda: direct_routes(app),
    )
