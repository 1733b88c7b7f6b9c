"""``imgcls serve``: an exported ONNX model behind HTTP (FastAPI on uvicorn, the session in the
process that answers) with dynamic batching, an API key, Prometheus metrics, and the
draw-a-digit page at ``/``. No torch is imported (see ``imgcls.deploy.serve``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from imgcls.commands.options import add_compare, add_device, add_model, add_preprocess
from imgcls.deploy.zoo import DEFAULT_MODEL


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p, default=DEFAULT_MODEL)
    add_compare(p)
    add_device(p, "auto")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="127.0.0.1 or ::1 (this machine only; 127.0.0.1 is the default), or 0.0.0.0 / :: "
        "to listen on every interface (set an API key and put it behind a TLS proxy first)",
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument(
        "--max_batch_size",
        type=int,
        default=64,
        help="dynamic batching: the most requests run together in one session call; 1 turns "
        "batching off (default 64)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="HTTP worker processes on the port, each with its own session (on GPUs, worker i "
        "uses GPU i %% n); uvicorn restarts one that dies (default 1)",
    )
    p.add_argument(
        "--max_body_mb",
        type=float,
        default=10.0,
        help="larger request bodies are refused with 413 (default 10)",
    )
    p.add_argument(
        "--max_pixels",
        type=int,
        default=None,
        help="an image declaring more pixels is refused (413) before it is decoded "
        "(default 64,000,000)",
    )
    p.add_argument(
        "--body_timeout_s",
        type=float,
        default=30.0,
        help="a request body that has not fully arrived after this many seconds is answered "
        "408 (default 30)",
    )
    p.add_argument(
        "--decode_threads",
        type=int,
        default=2,
        help="image decodes at once per worker, off the event loop; more wait their turn, so "
        "a few huge images cannot take all the memory (default 2)",
    )
    p.add_argument(
        "--api_key",
        default=None,
        help="require this key on /predict, /features, /metadata and /metrics, sent as "
        "'Authorization: Bearer KEY' or 'X-API-Key: KEY' (default: the IMGCLS_API_KEY "
        "environment variable, else no key); prefer the variable: a command line is visible "
        "to other users of the machine",
    )
    p.add_argument(
        "--allowed_hosts",
        default=None,
        help="comma-separated host names the server answers in the Host header, e.g. "
        "'imgcls.example.org' (default: 127.0.0.1, localhost and ::1 when listening on "
        "127.0.0.1 / ::1; any name on 0.0.0.0 / ::, where a proxy should check it)",
    )
    add_preprocess(p)
    p.add_argument(
        "--features",
        type=Path,
        default=None,
        help="the feature-map model for /features and the page (default: model.features.onnx "
        "beside --model, when there)",
    )
    p.add_argument(
        "--log_level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log level (default warning)",
    )
    p.add_argument("--access_log", action="store_true", help="log every request")


def run(args: argparse.Namespace) -> int:
    from imgcls.deploy.serve import ServeOptions, serve
    from imgcls.deploy.zoo import resolve_model

    options = ServeOptions(
        model=resolve_model(args.model),
        device=args.device,
        host=args.host,
        port=args.port,
        max_batch_size=args.max_batch_size,
        workers=args.workers,
        max_body_mb=args.max_body_mb,
        body_timeout_s=args.body_timeout_s,
        decode_threads=args.decode_threads,
        api_key=args.api_key,
        allowed_hosts=[h.strip() for h in args.allowed_hosts.split(",")]
        if args.allowed_hosts
        else None,
        preprocess=args.preprocess,
        log_level=args.log_level,
        access_log=args.access_log,
        features=args.features,
        compare=resolve_model(args.compare) if args.compare else None,
    )
    if args.max_pixels is not None:
        options.max_pixels = args.max_pixels
    serve(options)
    return 0
