"""``imgcls serve``: an exported ONNX model behind HTTP with dynamic batching (LitServe), and
the draw-a-digit page at ``/``. No torch is imported (see ``imgcls.deploy.serve``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from imgcls.commands.options import add_device, add_model, add_preprocess


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    add_device(p, "auto")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="127.0.0.1 (this machine only, the default), or 0.0.0.0 / :: to listen on every "
        "interface (put it behind a proxy with TLS and authentication first)",
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
        "--batch_timeout_ms",
        type=float,
        default=0.0,
        help="dynamic batching: how long a worker waits for more requests once one has come, "
        "while its batch is not full; 0 takes only what is already queued, which adds no "
        "latency (default 0)",
    )
    p.add_argument(
        "--workers_per_device",
        type=int,
        default=1,
        help="inference worker processes per device (each GPU, or the CPU) (default 1)",
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

    options = ServeOptions(
        model=Path(args.model),
        device=args.device,
        host=args.host,
        port=args.port,
        max_batch_size=args.max_batch_size,
        batch_timeout_ms=args.batch_timeout_ms,
        workers_per_device=args.workers_per_device,
        max_body_mb=args.max_body_mb,
        preprocess=args.preprocess,
        log_level=args.log_level,
        access_log=args.access_log,
        features=args.features,
    )
    if args.max_pixels is not None:
        options.max_pixels = args.max_pixels
    serve(options)
    return 0
