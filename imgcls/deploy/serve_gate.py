"""The gate of ``imgcls serve``: plain ASGI in front of FastAPI, for what every request needs.

Before any routing, the gate checks the ``Host`` header (a name the service was told to
answer: DNS rebinding), the API key on the routes behind it (``Authorization: Bearer KEY``
or ``X-API-Key: KEY``, compared with ``hmac.compare_digest``) and counts the request for
``/metrics``. It is plain ASGI, not a Starlette middleware, because it runs on every request
and costs no task, no ``Request`` and no ``Headers`` object.

Then it hands the request on: to FastAPI, or, for the routes the route table marks
``direct``, straight to the route's handler. FastAPI's routing and dependency solving were
the largest per-request cost on the event loop (``docs/benchmarks.md``), and for a route with
nothing attached they only lead to the same handler. Which routes may be answered directly
is decided by ``resolve`` (``imgcls.deploy.serve_routes.direct_routes``) at the first
request, once the app can no longer change: a route with a dependency, or an app with a
middleware added, goes through FastAPI, so that whatever is attached to a route runs.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from imgcls.deploy.serve_metrics import Metrics

__all__ = ["ASGIApp", "Gate", "Receive", "Scope", "Send", "host_name", "key_bytes"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
DirectRoutes = dict[tuple[str, str], ASGIApp]

# What a client's key is stripped of (bytes.strip's set), and so the server's too.
KEY_SPACE = " \t\n\r\x0b\x0c"


def host_name(host: str) -> str:
    """A host name as the gate compares it, the same for a Host header's and for
    ``--allowed_hosts``: lower case, no port, no trailing dot (``example.org.`` is
    ``example.org``), an IPv6 address without brackets and in its shortest form (``[::1]``,
    ``::1`` and ``0:0:0:0:0:0:0:1`` are all ``::1``)."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:  # name:port (an IPv6 address has at least two)
        name = name.partition(":")[0]
    if ":" in name:
        try:
            return ipaddress.IPv6Address(name).compressed
        except ValueError:
            return name
    return name.rstrip(".")


def key_bytes(key: str) -> bytes:
    """The API key as the gate compares it: stripped of the white space that a client's key is
    stripped of (a secret file's trailing newline); ValueError when nothing is left or a line
    break or control character is inside it (no HTTP header can carry one)."""
    stripped = key.strip(KEY_SPACE)
    if not stripped:
        raise ValueError("the API key is empty or only white space")
    if any(ord(c) < 32 or ord(c) == 127 for c in stripped):
        raise ValueError(
            "the API key holds a line break or another control character, which no HTTP "
            "header can carry"
        )
    return stripped.encode()


class Gate:
    """Host check, API key and request metrics, in plain ASGI (no per-request task); then the
    route's handler directly where ``resolve`` allows it, else ``app``."""

    def __init__(
        self,
        app: Any,
        *,
        hosts: frozenset[str] | None,
        key: str | None,
        protected: frozenset[str],
        metrics: Metrics,
        resolve: Callable[[], DirectRoutes] | None = None,
    ) -> None:
        self.app = app
        self.hosts = None if hosts is None else frozenset(host_name(h) for h in hosts)
        self.key = key_bytes(key) if key else None
        self.protected = protected
        self.metrics = metrics
        self.resolve = resolve
        self.direct: DirectRoutes | None = None  # resolved at the first request

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
        if self.direct is None:
            self.direct = self.resolve() if self.resolve is not None else {}
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
                if name.startswith("["):
                    name = host_name(name)
                else:  # "name:port", the usual case, inline
                    name = name.partition(":")[0].rstrip(".")
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
            if self.key is not None and path in self.protected and not self._authorised(headers):
                await self._refuse(
                    counted,
                    401,
                    "this server requires an API key: send it as 'Authorization: Bearer KEY' "
                    "or 'X-API-Key: KEY'",
                    [(b"www-authenticate", b'Bearer realm="imgcls"')],
                )
                return
            direct = self.direct.get((scope["method"], path))
            await (direct or self.app)(scope, receive, counted)
        finally:
            self.metrics.request(path, status, time.perf_counter() - start)
