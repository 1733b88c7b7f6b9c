"""Serving under load: ``imgcls serve`` against the HTTP floor, with and without batching.

Concurrent clients (asyncio + httpx, one process) post real MNIST test images as 28x28 PNGs
(encoded once, up front) for ``--duration`` seconds per cell, at 1, 8 and 64 clients, to a
server this script starts on 127.0.0.1. Three set-ups per model, measured in ONE run:

  (a) the HTTP floor: the same server (``imgcls.deploy.serve.build_server``: the same HTTP process,
      image decoding and queue) whose worker answers constant probabilities instead of
      running the model;
  (b) ``imgcls serve --max_batch_size 1``: batching off;
  (c) ``imgcls serve``: dynamic batching, the defaults.

For LeNet-5 and a ResNet. Prints requests/s, p50/p95/p99 latency and failed requests (non-200
or an exception) per cell, the ratios (LeNet-5: c/a at 64 clients, target >= 70 %; ResNet:
c/b at 64 clients, target >= 2x) and p99 at 8 clients, then one JSON line with every figure.
``--soak N`` then sends N requests at the most clients to (c) LeNet-5 and counts failures.

Without ``--lenet5`` / ``--resnet`` the model is trained here for one short epoch and exported:
throughput does not depend on accuracy.

    python benchmarks/serve_load.py --duration 10 --soak 20000
    python benchmarks/serve_load.py --quick     # smoke run: 1 s cells, 1 and 8 clients

The clients share the machine's cores with the server, as they do on a one-box deployment; on
a small machine they are part of what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imgcls.deploy.serve import ClassifierAPI, Job, ServeOptions  # noqa: E402

HOST = "127.0.0.1"  # the servers listen here only
READY_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 30.0
MAX_RPS_PER_CLIENT = 20_000  # bounds a client's request count: duration x this
SETUPS = {
    "a": "HTTP floor (constant worker)",
    "b": "imgcls serve --max_batch_size 1",
    "c": "imgcls serve (dynamic batching)",
}


# ----------------------------------------------------------------------------- (a)'s worker
class ConstantAPI(ClassifierAPI):
    """ClassifierAPI without the model: the same queue and batching, a constant answer."""

    def setup(self, device: str) -> None:
        self.answer = np.full((1, 10), 0.1, np.float32)

    def predict(self, x: Job | list[Job], **kwargs: Any) -> Any:
        jobs = x if isinstance(x, list) else [x]
        answers = [
            {"probabilities": np.repeat(self.answer, len(j.pixels), 0), "provider": "constant"}
            for j in jobs
        ]
        return answers if isinstance(x, list) else answers[0]


def constant_server(model: Path, port: int) -> None:
    """Run (a): ``imgcls.deploy.serve.serve`` with the constant worker in place of the model's."""
    from imgcls.deploy.serve import serve

    serve(ServeOptions(model=model, host=HOST, port=port), api_factory=ConstantAPI)


# ----------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def setup_command(setup: str, model: Path, port: int, extra: Sequence[str] = ()) -> list[str]:
    if setup == "a":
        script = str(Path(__file__).resolve())
        return [
            sys.executable,
            script,
            "--constant-server",
            "--model",
            str(model),
            "--port",
            str(port),
        ]
    cmd = [sys.executable, "-m", "imgcls", "serve", "--model", str(model), "--host", HOST]
    cmd += ["--port", str(port)]
    if setup == "b":
        cmd += ["--max_batch_size", "1"]
    return [*cmd, *extra]


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM, as a process manager stops a service; SIGKILL the group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=2, trust_env=False).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(
        f"server not ready after {READY_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}"
    )


@contextlib.contextmanager
def running(
    cmd: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Start ``cmd`` (a server on HOST:port), yield its URL once /health answers, stop it."""
    with log.open("ab") as out:
        out.write(f"$ {shlex.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,  # Ctrl-C reaches this script only; it stops the server
        )
    try:
        url = f"http://{HOST}:{port}"
        wait_ready(url, proc, log)
        yield url
    finally:
        stop(proc)


# ----------------------------------------------------------------------------- clients
@dataclass
class Cell:
    clients: int
    requests: int
    failed: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def load_images(n: int) -> list[bytes]:
    """The first n MNIST test images as PNG files."""
    from PIL import Image

    from imgcls.data.provision import default_root
    from imgcls.deploy.idx import read_idx

    images = read_idx(default_root() / "MNIST" / "raw" / "t10k-images-idx3-ubyte")[:n]
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


async def _load(
    url: str, images: list[bytes], clients: int, duration: float, total: int | None
) -> Cell:
    """``clients`` loops posting images until the deadline, their request bound, or (with
    ``total``) until ``total`` requests have been sent in all."""
    import httpx

    latencies: list[float] = []
    failed = 0
    sent = 0
    headers = {"content-type": "image/png"}
    per_client = max(1, int(duration * MAX_RPS_PER_CLIENT))

    async def client(k: int, deadline: float) -> None:
        nonlocal failed, sent
        # One connection per client, as separate users have: one pool shared by 64 loops
        # makes httpx itself the bottleneck (encode/httpx#3215), not the server.
        async with httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1),
            timeout=REQUEST_TIMEOUT_S,
            trust_env=False,  # no proxy between the clients and 127.0.0.1
        ) as http:
            for i in range(per_client):
                if time.perf_counter() >= deadline or (total is not None and sent >= total):
                    return
                sent += 1
                body = images[(k * 7919 + i) % len(images)]
                t0 = time.perf_counter()
                try:
                    r = await http.post(url + "/predict", content=body, headers=headers)
                    ok = r.status_code == 200
                except (httpx.HTTPError, OSError):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    failed += 1

    start = time.perf_counter()
    deadline = start + duration
    await asyncio.gather(*(client(k, deadline) for k in range(clients)))
    seconds = time.perf_counter() - start
    ms = np.asarray(latencies) * 1e3 if latencies else np.zeros(1)
    p50, p95, p99 = (float(v) for v in np.percentile(ms, [50, 95, 99]))
    return Cell(clients, sent, failed, seconds, len(latencies) / seconds, p50, p95, p99)


def load(
    url: str,
    images: list[bytes],
    clients: int,
    duration: float,
    total: int | None = None,
    warmup: float = 1.0,
) -> Cell:
    """One cell: a short warm-up at the same concurrency (connections opened, the worker's
    batch sizes seen once), then the measured run."""
    if warmup > 0:
        asyncio.run(_load(url, images, clients, warmup, None))
    return asyncio.run(_load(url, images, clients, duration, total))


# ----------------------------------------------------------------------------- models
def make_model(name: str, work: Path, log: Path) -> Path:
    """Train ``name`` briefly (one epoch on 2,000 images) and export it; returns model.onnx."""
    from imgcls.data.provision import default_root

    config = {"lenet5": "lenet5.yaml", "resnet": "resnet.yaml"}[name]
    run_dir = work / f"fit-{name}"
    run_dir.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = {"cwd": run_dir, "check": True, "stderr": subprocess.STDOUT}
    fit = [sys.executable, "-m", "imgcls", "fit", "-c", str(ROOT / "configs/model" / config)]
    fit += ["--trainer.max_epochs", "1", "--trainer.accelerator", "cpu", "--trainer.devices", "1"]
    fit += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    fit += ["--data.init_args.data_dir", str(default_root())]
    fit += ["--data.init_args.train_subset", "2000", "--data.init_args.val_size", "1000"]
    export_dir = work / f"export-{name}"
    export = [sys.executable, "-m", "imgcls", "export", "--out", str(export_dir)]
    export += ["--parity_subset", "500", "--no-features", "--ckpt"]
    try:
        with log.open("ab") as out:
            subprocess.run(fit, stdout=out, **common)
            run = next((run_dir / "runs").glob("*/version_*"))
            subprocess.run([*export, str(run)], stdout=out, **common)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{shlex.join(e.cmd)} failed:\n{log.read_text()[-3000:]}") from None
    return export_dir / "model.onnx"


# ----------------------------------------------------------------------------- report
def table(name: str, cells: dict[str, dict[int, Cell]]) -> str:
    lines = [
        f"### {name}",
        "",
        "| set-up | clients | requests/s | p50 ms | p95 ms | p99 ms | requests | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for setup, by_clients in cells.items():
        for n, c in by_clients.items():
            lines.append(
                f"| {setup}) {SETUPS[setup]} | {n} | {c.rps:,.0f} | {c.p50_ms:.1f} | "
                f"{c.p95_ms:.1f} | {c.p99_ms:.1f} | {c.requests:,} | {c.failed} |"
            )
    return "\n".join(lines)


def ratios(results: dict[str, dict[str, dict[int, Cell]]], top: int) -> dict[str, Any]:
    out: dict[str, Any] = {"ratio_clients": top}
    if "lenet5" in results:
        cells = results["lenet5"]
        out["lenet5_c_over_a_pct"] = 100 * cells["c"][top].rps / cells["a"][top].rps
    if "resnet" in results:
        cells = results["resnet"]
        out["resnet_c_over_b"] = cells["c"][top].rps / cells["b"][top].rps
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lenet5", type=Path, help="LeNet-5 model.onnx (default: train one briefly)")
    p.add_argument("--resnet", type=Path, help="ResNet model.onnx (default: train one briefly)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per cell (default 10)")
    p.add_argument("--clients", default="1,8,64", help="client counts (default 1,8,64)")
    p.add_argument(
        "--soak",
        "--total",
        dest="soak",
        type=int,
        default=None,
        help="then send this many requests at the most clients to (c) LeNet-5, count failures",
    )
    p.add_argument("--images", type=int, default=1000, help="distinct test images sent (1000)")
    p.add_argument("--setups", default="a,b,c", help="which set-ups to run (default a,b,c)")
    p.add_argument(
        "--serve_args", default="", help="extra `imgcls serve` flags for (b) and (c), one string"
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 1 s cells, clients 1,8")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--constant-server", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.clients = 1.0, "1,8"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.constant_server:
        constant_server(args.model, args.port)
        return 0
    clients = [int(c) for c in args.clients.split(",")]
    setups = args.setups.split(",")
    top = max(clients)
    warmup = min(1.0, args.duration)
    extra = shlex.split(args.serve_args)
    # Ctrl-C and SIGTERM (also when started in the background, where SIGINT is ignored) unwind
    # through the ``finally`` blocks that stop the servers.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="serve_load-") as tmp:
        work = Path(tmp)
        log = work / "servers.log"
        models: dict[str, Path] = {}
        trained: list[str] = []
        for name in ("lenet5", "resnet"):
            given = getattr(args, name)
            if given is None:
                print(
                    f"[serve_load] training {name} briefly (1 epoch, 2,000 images) and "
                    "exporting it: the weights are barely trained, throughput does not "
                    "depend on accuracy",
                    flush=True,
                )
                given = make_model(name, work, work / f"make-{name}.log")
                trained.append(name)
            models[name] = Path(given).resolve()
        images = load_images(args.images)
        print(
            f"[serve_load] {len(images)} MNIST test images as PNG; {args.duration:g} s per "
            f"cell after a {warmup:g} s warm-up; clients {clients}; server log {log}",
            flush=True,
        )
        results: dict[str, dict[str, dict[int, Cell]]] = {}
        soak: Cell | None = None
        try:
            for name, model in models.items():
                results[name] = {}
                for setup in setups:
                    port = free_port()
                    cmd = setup_command(setup, model, port, extra if setup != "a" else ())
                    with running(cmd, port, log) as url:
                        results[name][setup] = {}
                        for n in clients:
                            cell = load(url, images, n, args.duration, warmup=warmup)
                            results[name][setup][n] = cell
                            print(
                                f"[serve_load] {name} {setup}) {n:>3} clients: "
                                f"{cell.rps:8,.0f} req/s  p50 {cell.p50_ms:6.1f} ms  p99 "
                                f"{cell.p99_ms:6.1f} ms  failed {cell.failed}",
                                flush=True,
                            )
                        if args.soak and name == "lenet5" and setup == "c":
                            # bounded in time too: far longer than the run needs at 100 req/s
                            soak = load(url, images, top, args.soak / 100 + 60, args.soak, 0)
                            print(
                                f"[serve_load] soak: {soak.requests:,} requests at {top} "
                                f"clients, {soak.failed} failed, {soak.rps:,.0f} req/s",
                                flush=True,
                            )
        except KeyboardInterrupt:
            print("[serve_load] interrupted; servers stopped", file=sys.stderr)
            return 130
        except Exception:
            print(
                f"[serve_load] failed; last server output:\n{log.read_text()[-3000:]}",
                file=sys.stderr,
            )
            raise
    print()
    for name, cells in results.items():
        note = " (briefly trained here)" if name in trained else ""
        print(table(f"{name}{note}: {models[name]}", cells))
        print()
    summary: dict[str, Any] = {"p99_ms_at_8_clients": {}}
    if set("abc") <= set(setups):
        summary.update(ratios(results, top))
        if "lenet5_c_over_a_pct" in summary:
            pct = summary["lenet5_c_over_a_pct"]
            print(
                f"LeNet-5: (c) requests/s = {pct:.0f} % of (a) at {top} clients "
                f"(target >= 70 %: {'met' if pct >= 70 else 'MISSED'})"
            )
        if "resnet_c_over_b" in summary:
            x = summary["resnet_c_over_b"]
            print(
                f"ResNet: (c)/(b) requests/s = {x:.2f}x at {top} clients "
                f"(target >= 2x: {'met' if x >= 2 else 'MISSED'})"
            )
    if 8 in clients:
        for name, cells in results.items():
            p99 = {s: round(c[8].p99_ms, 2) for s, c in cells.items()}
            summary["p99_ms_at_8_clients"][name] = p99
            print(
                f"{name}: p99 at 8 clients: "
                + ", ".join(f"({s}) {v:.1f} ms" for s, v in p99.items())
            )
    if soak is not None:
        print(
            f"soak: {soak.requests:,} requests to (c) LeNet-5 at {top} clients: "
            f"{soak.failed} failed ({soak.rps:,.0f} req/s, p99 {soak.p99_ms:.1f} ms)"
        )
    figures = {
        "benchmark": "serve_load",
        "duration_s": args.duration,
        "clients": clients,
        "serve_args": args.serve_args,
        "models": {n: {"path": str(p), "trained_here": n in trained} for n, p in models.items()},
        "cells": {
            name: {s: {str(n): asdict(c) for n, c in by.items()} for s, by in cells.items()}
            for name, cells in results.items()
        },
        **summary,
        "soak": asdict(soak) if soak is not None else None,
    }
    line = json.dumps(figures)
    if args.json is not None:
        args.json.write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
