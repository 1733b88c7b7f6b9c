"""Start ``imgcls serve`` the way a user does (a subprocess on 127.0.0.1, a free port) and wait
until ``GET /health`` says it is ready; talk raw HTTP/1.1 over a socket where a test must
control each byte (a stalled upload, a client that goes away). Shared by the service, page and
benchmark tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port

READY_TIMEOUT_S = 120.0


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_ready(url: str, proc: subprocess.Popen[str], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"imgcls serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise AssertionError(
        f"imgcls serve not ready after {timeout:.0f} s:\n{log.read_text()[-4000:]}"
    )


def stop(proc: subprocess.Popen[str], timeout: float = 30.0) -> int:
    """SIGTERM, as a process manager stops a service; SIGKILL the group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return int(proc.returncode)


@contextlib.contextmanager
def running_server(
    model: Path,
    *args: str,
    log: Path,
    env: dict[str, str] | None = None,
    python: str | Path | None = None,
) -> Iterator[Server]:
    """``imgcls serve --model MODEL --port <free> ARGS``; yields once /health answers 200.
    ``python``: the interpreter to run it with (another venv's), default this one."""
    port = free_port()
    py = str(python or sys.executable)
    cmd = [py, "-m", "imgcls", "serve", "--model", str(model), "--port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*cmd, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,  # its workers can be killed as a group if it hangs
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log, READY_TIMEOUT_S)
        yield Server(url, proc, log)
    finally:
        stop(proc)


def raw_request(
    url: str, body: bytes, *, path: str = "/predict", content_type: str = "image/png"
) -> tuple[socket.socket, bytes]:
    """A connected socket and the request's head (with Content-Length), nothing sent yet."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return sock, head.encode()


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 answer with a Content-Length: (status, body); (0, b"...") if the server
    closed the connection first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(fields.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), body
