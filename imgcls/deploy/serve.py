"""``imgcls serve``: an exported ONNX model behind HTTP, on FastAPI and uvicorn.

The onnxruntime session lives in the process that answers HTTP; a micro-batcher
(``imgcls.deploy.batcher``, one session thread) gathers the requests that are waiting into one
session call, with no fixed wait. The service is in rooms, one concern each:

- ``serve_settings``: the options and the limits the parts share;
- ``serve_schemas``: the route table, from which the routes, the key's paths and the metrics'
  route labels are derived, and the OpenAPI description;
- ``serve_gate``: Host check, API key and request metrics, in plain ASGI before any routing;
- ``serve_bodies``: reading a body (limits, deadline, forms) and checking JSON pixels;
- ``serve_service``: the model side of a worker (decoding, batching, the classifier calls);
- ``serve_routes``: the handlers and the FastAPI app built from the table;
- ``serve_workers``: the worker processes' sessions (GPU slots, TensorRT caches, the factory).
 ``--workers N`` runs N such processes on one
port under uvicorn's supervisor, which restarts a worker that dies; each has its own session, on
GPU ``i % n_gpus``. ``/metrics`` is Prometheus' text format (``imgcls.deploy.serve_metrics``).

This module checks the options and the model in the calling process (a clear error, exit 2,
before any worker starts), then runs uvicorn until SIGINT / SIGTERM: uvicorn stops accepting,
finishes the requests in flight, and the command exits 0.

No torch (``tests/deploy/test_torch_free.py`` checks it in a fresh interpreter).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import re
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from imgcls.deploy.classifier import MAX_BATCH, OnnxClassifier, read_metadata
from imgcls.deploy.framing import framing_for
from imgcls.deploy.serve_gate import key_bytes
from imgcls.deploy.serve_metrics import MULTIPROC_ENV
from imgcls.deploy.serve_routes import build_app
from imgcls.deploy.serve_service import encode_maps
from imgcls.deploy.serve_settings import FEATURES_FILE, KEY_ENV, OPTIONS_ENV, ServeOptions, model_id
from imgcls.deploy.serve_workers import APP_FACTORY, make_service
from imgcls.deploy.teach import compare_metadata
from imgcls.deploy.uvicorn_compat import BoundedHttpToolsProtocol
from imgcls.errors import ConfigError
from imgcls.utils import sha256_file

__all__ = ["ServeOptions", "check_options", "encode_maps", "model_id", "serve"]

ALL_INTERFACES = ("0.0.0.0", "::")


def check_options(options: ServeOptions) -> None:
    """Refuse bad option values before anything starts."""

    def finite(name: str, value: float, low: float) -> None:
        if not (math.isfinite(value) and value > low):
            raise ConfigError(f"--{name} must be a number > {low:g}, got {value}")

    if not 1 <= options.max_batch_size <= MAX_BATCH:
        raise ConfigError(
            f"--max_batch_size must be in 1..{MAX_BATCH}, got {options.max_batch_size}"
        )
    if options.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {options.workers}")
    finite("max_body_mb", options.max_body_mb, 0)
    finite("body_timeout_s", options.body_timeout_s, 0)
    if options.max_body_bytes < 1:
        raise ConfigError(f"--max_body_mb {options.max_body_mb} is less than one byte")
    if options.max_pixels < 1:
        raise ConfigError(f"--max_pixels must be >= 1, got {options.max_pixels}")
    if options.decode_threads < 1:
        raise ConfigError(f"--decode_threads must be >= 1, got {options.decode_threads}")
    if not 1024 <= options.port <= 65535:
        raise ConfigError(f"--port must be in 1024..65535, got {options.port}")
    if options.host not in ("127.0.0.1", "::1", *ALL_INTERFACES):
        raise ConfigError(
            f"--host must be 127.0.0.1 or ::1 (this machine only), 0.0.0.0 or :: (all "
            f"interfaces), got {options.host!r}"
        )
    if options.api_key is not None:
        try:
            key_bytes(options.api_key)
        except ValueError as e:
            raise ConfigError(
                f"--api_key (or {KEY_ENV}): {e}; give a key, or leave both unset to serve "
                "without one"
            ) from None
    for h in options.allowed_hosts or []:
        if not _is_host_name(h):
            raise ConfigError(
                f"--allowed_hosts: {h!r} is not a host name; give names such as "
                "imgcls.example.org, IPv4 addresses, or IPv6 addresses as ::1 or [::1] (no "
                "port, no scheme, no wildcard)"
            )
    framing_for(options.preprocess, None)


_DNS_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?")


def _is_host_name(text: str) -> bool:
    """A DNS name (a trailing dot allowed), an IPv4 address, or an IPv6 address with or
    without brackets: what a Host header can name."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if ":" in inner:
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return False
        return True
    return text == inner and _DNS_NAME.fullmatch(text.lower()) is not None


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


@contextlib.contextmanager
def _run_dir(workers: int) -> Iterator[Path | None]:
    """The workers' shared folder: their device slots and Prometheus' multiprocess files.
    Made before they start, removed on exit."""
    if workers == 1:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="imgcls-serve-"))
    metrics = path / "metrics"
    metrics.mkdir()
    old = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = str(metrics)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = old
        shutil.rmtree(path, ignore_errors=True)


def _exit_quietly(signum: int, frame: Any) -> None:
    # uvicorn re-raises the signal it stopped on once its requests are finished: that is a
    # clean stop, exit 0.
    raise SystemExit(0)


def serve(options: ServeOptions, log: Callable[[str], None] = print) -> None:
    """Check the options, the model and the device here (exit 2 on a problem), then serve
    until SIGINT / SIGTERM."""
    import uvicorn

    if options.api_key is None:
        options.api_key = os.environ.get(KEY_ENV) or None
    check_options(options)
    if options.api_key is not None:
        # as the gate compares it (a secret file ends in a newline), also for the workers
        options.api_key = key_bytes(options.api_key).decode()
    _check_port_free(options.host, options.port)
    beside = options.model.with_name(FEATURES_FILE)
    if options.features is None and beside.is_file() and beside != options.model:
        options.features = beside
    if options.features is not None:
        features_meta = read_metadata(options.features)
        if features_meta.get("features_of") not in (None, sha256_file(options.model)):
            log(
                f"[imgcls serve] warning: {options.features} was exported from another "
                "model.onnx; /features is off (re-export to get it back)"
            )
            options.features = None
    if options.compare is not None:
        compare_metadata(read_metadata(options.model), options.compare)
    url = f"http://{'[::1]' if ':' in options.host else '127.0.0.1'}:{options.port}"
    hosts = options.hosts()
    common: dict[str, Any] = {
        "host": options.host,
        "port": options.port,
        "log_level": options.log_level,
        "access_log": options.access_log,
        "timeout_graceful_shutdown": 30,
        "server_header": False,
        # httptools reads headers of any size: this one answers 431 past MAX_HEAD_BYTES
        "http": BoundedHttpToolsProtocol,
    }
    with _run_dir(options.workers) as run_dir:
        app: Any
        if options.workers == 1:
            service = make_service(options)  # ModelLoadError, ProviderError: exit 2
            provider = service.provider
            app, factory = build_app(service), False
        else:
            probe = OnnxClassifier(options.model, device=options.device)
            provider = probe.providers_in_use[0]
            del probe
            options.run_dir = run_dir
            os.environ[OPTIONS_ENV] = options.to_json()
            if options.api_key:
                os.environ[KEY_ENV] = options.api_key
            # uvicorn's supervisor imports the factory in each worker, and restarts a worker
            # that dies
            app, factory = APP_FACTORY, True
        log(
            f"[imgcls serve] {options.model} on {url} (provider {provider}; dynamic batching "
            f"up to {options.max_batch_size} images; {options.workers} worker process(es); "
            f"feature maps {'on' if options.features else 'off'}; "
            + (f"{options.compare} beside it; " if options.compare else "")
            + "API key "
            f"{'required' if options.api_key else 'not required'}; Host "
            f"{', '.join(sorted(hosts)) if hosts else 'any'})"
        )
        if options.host in ALL_INTERFACES and not options.api_key:
            log(
                f"[imgcls serve] warning: listening on every interface ({options.host}) "
                "without an API key: anyone who can reach this port can use the model; set "
                f"--api_key or {KEY_ENV}, and put it behind a TLS proxy"
            )
        log(f"[imgcls serve] page {url}/   API docs {url}/docs   health {url}/health")
        logging.getLogger("imgcls.serve").setLevel(logging.INFO)
        signal.signal(signal.SIGTERM, _exit_quietly)
        signal.signal(signal.SIGINT, _exit_quietly)
        uvicorn.run(app, factory=factory, workers=options.workers, **common)
