"""The one place imgcls reaches into uvicorn's internals: a bound on a request's head.

uvicorn's fast HTTP/1.1 protocol (httptools, the one ``uvicorn[standard]`` runs) reads a
request line and headers of any size: a client that never ends its headers grows the worker by
every byte it sends, before the application -- and so the Host check and the API key -- sees
anything (four such connections took a worker from 112 MB to 1.7 GB). uvicorn bounds the head
only for its pure-Python h11 protocol (``h11_max_incomplete_event_size``), which costs the
service its lead over a plain endpoint (``docs/benchmarks.md``).

``BoundedHttpToolsProtocol`` is uvicorn's httptools protocol with the head counted twice: every
network read that arrives while a head is unfinished (a head that never ends, or one header
that never ends, which httptools holds before handing it over, is cut one read past the
bound), and the request line and headers once they are complete. A head over
``MAX_HEAD_BYTES`` is answered ``431 Request Header Fields Too Large`` and the connection
closed, before any application code runs. It overrides ``data_received`` and two parser
callbacks of ``uvicorn.protocols.http.httptools_impl.HttpToolsProtocol``, calling uvicorn's own
for everything else; ``tests/deploy/test_compat.py`` fails, naming uvicorn, when a release
changes what this relies on.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

__all__ = ["MAX_HEAD_BYTES", "BoundedHttpToolsProtocol"]

# A request line and headers of more than this are refused: browsers send 1-2 KB, a cookie-heavy
# one a few KB; nginx's default limit is 4 buffers of 8 KB, Node's 16 KB.
MAX_HEAD_BYTES = 32 * 1024

_DETAIL = json.dumps(
    {
        "detail": f"request line and headers over {MAX_HEAD_BYTES // 1024} KB; send fewer or "
        "shorter headers"
    }
).encode()
_ANSWER_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(_DETAIL)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _DETAIL
)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing at once."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; a request head over ``MAX_HEAD_BYTES`` gets 431 and the
    connection is closed."""

    max_head_bytes = MAX_HEAD_BYTES

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.head_reads = 0  # bytes of the reads that arrived wholly inside an unfinished head
        self.in_head = False  # a message has begun and its headers are not complete
        self.begun = 0  # messages begun on this connection

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, but a head over the bound is answered 431 (not logged as a bad request)
        begun, counted = self.begun, self.in_head
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            if isinstance(e.__context__, _HeadTooLarge):
                self.refuse_head()
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self.in_head and counted and self.begun == begun:
            # the whole read belongs to an unfinished head that began in an earlier read
            self.head_reads += len(data)
            if self.head_reads > self.max_head_bytes:
                self.refuse_head()

    def refuse_head(self) -> None:
        if not self.transport.is_closing():
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(_ANSWER_431)
            self.transport.close()

    # parser callbacks
    def on_message_begin(self) -> None:
        self.begun += 1
        self.in_head = True
        self.head_reads = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.in_head = False
        # the whole head, once: cheaper than counting at every header
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_head_bytes:
            raise _HeadTooLarge
        super().on_headers_complete()


def uvicorn_protocol_ok() -> str | None:
    """None when uvicorn still has what ``BoundedHttpToolsProtocol`` relies on, else what
    changed (for ``tests/deploy/test_compat.py``)."""
    needed = (
        "_unset_keepalive_if_required",
        "_should_upgrade",
        "handle_websocket_upgrade",
        "_unsupported_upgrade_warning",
        "send_400_response",
        "on_message_begin",
        "on_headers_complete",
    )
    missing = [n for n in needed if not callable(getattr(HttpToolsProtocol, n, None))]
    if missing:
        return f"HttpToolsProtocol has no {', '.join(missing)}"
    return None
