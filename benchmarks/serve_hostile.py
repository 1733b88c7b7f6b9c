"""``imgcls serve`` against hostile clients: what a header flood costs the server's memory, and
what small crafted images cost everyone else's latency.

1. **Header flood**: ``--flood_connections`` connections (default 4) each send the start of a
   ``POST /predict`` and then header lines (1 KB each) without end, up to ``--flood_mb`` MB
   each (default 400) or until the server closes the connection. Printed: the server's
   resident memory before, its peak (``VmHWM``) and after the connections are gone, how many
   bytes it took from each connection and what it answered.
2. **Crafted images**: four clients (``wrk -t1 -c4``) POST one crafted body in a loop for
   ``--duration`` seconds while one client POSTs an MNIST test digit (a 254-byte PNG), one
   request at a time, and records each latency. Printed: that client's median and p90 latency
   alone, and beside each body: a 28x28 PNG with 60 zTXt (or iTXt) chunks of 1 MiB of
   inflated text each (63 KB), and a progressive 1000x1000 JPEG with 4,800 empty scans
   (63 KB); with how the server answered the crafted bodies. The bodies are made by
   ``tests/helpers/crafted.py``.

    python benchmarks/serve_hostile.py --model export/<run>/model.onnx
    PYTHONPATH=<another checkout> python benchmarks/serve_hostile.py --model ...  # its server

The server is started as ``python -m imgcls serve --device cpu`` from whatever ``imgcls`` the
interpreter imports (``PYTHONPATH`` picks a checkout), on 127.0.0.1, and one JSON line with
every figure ends the output.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from serve_load import HOST, free_port, wait_healthy  # the neighbour script: same folder

ROOT = Path(__file__).resolve().parents[1]

POST_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("IMGCLS_BENCH_TYPE")
local f = assert(io.open(os.getenv("IMGCLS_BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
"""


def crafted() -> Any:
    """``tests/helpers/crafted.py`` of this tree, loaded by its path: the server under test may
    come from another checkout (``PYTHONPATH``), whose tests lack it."""
    spec = importlib.util.spec_from_file_location("crafted", ROOT / "tests/helpers/crafted.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


@contextlib.contextmanager
def server(model: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``imgcls serve`` as this interpreter imports it, run from the log's folder (not from
    this tree: ``python -m`` puts the working folder first on the path)."""
    port = free_port()
    cmd = [sys.executable, "-m", "imgcls", "serve", "--model", str(model), "--device", "cpu"]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*cmd, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, cwd=log.parent
        )
    url = f"http://{HOST}:{port}"
    try:
        wait_healthy(url, proc, "imgcls serve", log)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ----------------------------------------------------------------------------- 1. the flood
def flood_one(port: int, limit: int, result: dict[str, Any]) -> None:
    """Send an endless head on one connection: how many bytes went, what came back."""
    sent = 0
    with socket.create_connection((HOST, port), timeout=30) as sock:
        try:
            for block in crafted().header_flood(f"{HOST}:{port}"):
                sock.sendall(block)
                sent += len(block)
                if sent >= limit:
                    break
        except OSError as e:  # the server closed the connection
            result["error"] = type(e).__name__
        result["sent_mb"] = sent / 1e6
        try:
            sock.settimeout(2)  # an answer to a head that never ended comes at once, or never
            answer = sock.recv(200)
        except OSError as e:
            answer = f"({type(e).__name__})".encode()
        status = re.match(rb"HTTP/1\.1 (\d+)", answer)
        result["answer"] = int(status.group(1)) if status else answer.decode(errors="replace")


def flood(url: str, pid: int, connections: int, mb: float) -> dict[str, Any]:
    port = int(url.rsplit(":", 1)[1])
    before = memory_mb(pid, "VmRSS")
    results: list[dict[str, Any]] = [{} for _ in range(connections)]
    threads = [
        threading.Thread(target=flood_one, args=(port, int(mb * 1e6), results[i]))
        for i in range(connections)
    ]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - t0
    time.sleep(1.0)
    with urllib.request.urlopen(url + "/health", timeout=30) as r:
        health = r.status
    return {
        "rss_before_mb": before,
        "rss_peak_mb": memory_mb(pid, "VmHWM"),
        "rss_after_mb": memory_mb(pid, "VmRSS"),
        "seconds": seconds,
        "connections": results,
        "health_after": health,
    }


# ----------------------------------------------------------------------------- 2. the bodies
def digit_png() -> bytes:
    from PIL import Image

    from imgcls.data.provision import default_root
    from imgcls.deploy.idx import read_idx

    image = read_idx(default_root() / "MNIST" / "raw" / "t10k-images-idx3-ubyte")[0]
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def latencies(url: str, body: bytes, seconds: float) -> list[float]:
    """One client, one request at a time: each answer's latency in ms (all must be 200)."""
    import http.client

    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        conn.request("POST", "/predict", body, {"Content-Type": "image/png"})
        r = conn.getresponse()
        r.read()
        out.append((time.perf_counter() - t0) * 1e3)
        if r.status != 200:
            raise RuntimeError(f"the digit was answered {r.status}")
    conn.close()
    return out


def hostile(url: str, body: Path, ctype: str, lua: Path, seconds: float) -> subprocess.Popen[str]:
    """wrk: 4 connections looping on ``body`` for ``seconds``."""
    cmd = ["wrk", "-t1", "-c4", f"-d{max(1, round(seconds))}s", "-s", str(lua), url + "/predict"]
    env = {**os.environ, "IMGCLS_BENCH_BODY": str(body), "IMGCLS_BENCH_TYPE": ctype}
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def answers_of(url: str, body: bytes, ctype: str) -> tuple[int, float, str]:
    """One crafted request: status, seconds, detail."""
    req = urllib.request.Request(url + "/predict", body, {"Content-Type": ctype})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    return status, time.perf_counter() - t0, text[:160]


def summary(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {
        "requests": len(ms),
        "p50_ms": statistics.median(ms),
        "p90_ms": ms[int(0.9 * (len(ms) - 1))],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="an exported model.onnx")
    p.add_argument("--duration", type=float, default=6.0, help="seconds per latency cell")
    p.add_argument("--flood_mb", type=float, default=400.0, help="MB sent per connection")
    p.add_argument("--flood_connections", type=int, default=4)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: run `apt-get install wrk` as root (`nox -s bench` does it)")
        return 2
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="serve-hostile-") as tmp:
        work = Path(tmp)
        where = subprocess.run(
            [sys.executable, "-c", "import imgcls; print(imgcls.__file__)"],
            capture_output=True,
            text=True,
            cwd=work,
            check=True,
        ).stdout.strip()
        print(f"imgcls serve from {Path(where).parent}; model {args.model}")
        figures["imgcls"] = str(Path(where).parent)
        c = crafted()
        log, lua = work / "server.log", work / "post.lua"
        lua.write_text(POST_LUA)
        bodies = {
            "png_ztxt": (c.png_with_text("zTXt"), "image/png"),
            "png_itxt": (c.png_with_text("iTXt"), "image/png"),
            "jpeg_scans": (c.jpeg_with_empty_scans(), "image/jpeg"),
        }
        digit = digit_png()
        try:
            with server(args.model.resolve(), log) as (url, proc):
                f = flood(url, proc.pid, args.flood_connections, args.flood_mb)
                figures["flood"] = f
                sent = ", ".join(f"{c['sent_mb']:.1f}" for c in f["connections"])
                said = ", ".join(str(c["answer"]) for c in f["connections"])
                print(
                    f"\nheader flood, {args.flood_connections} connections of up to "
                    f"{args.flood_mb:g} MB: RSS {f['rss_before_mb']:.0f} MB before, peak "
                    f"{f['rss_peak_mb']:.0f} MB, {f['rss_after_mb']:.0f} MB after "
                    f"({f['seconds']:.1f} s); MB sent per connection: {sent}; answers: {said}; "
                    f"/health after: {f['health_after']}"
                )
            with server(args.model.resolve(), log) as (url, proc):
                latencies(url, digit, 1.0)  # warm-up
                alone = summary(latencies(url, digit, args.duration))
                figures["alone"] = alone
                print(
                    f"\na digit alone: p50 {alone['p50_ms']:.2f} ms, p90 {alone['p90_ms']:.2f} "
                    f"ms ({alone['requests']} requests)"
                )
                print(
                    "| beside 4 clients sending | body | answered | one alone, s | digit p50 "
                    "ms | digit p90 ms | digit requests |"
                )
                print("|---|---:|---|---:|---:|---:|---:|")
                for name, (body, ctype) in bodies.items():
                    path = work / name
                    path.write_bytes(body)
                    status, secs, detail = answers_of(url, body, ctype)
                    load = hostile(url, path, ctype, lua, args.duration + 1)
                    time.sleep(0.5)
                    cell = summary(latencies(url, digit, args.duration))
                    out, _ = load.communicate(timeout=120)
                    done = re.search(r"(\d+) requests in", out)
                    cell.update(
                        body_bytes=len(body),
                        status=status,
                        seconds=secs,
                        detail=detail,
                        crafted_requests=int(done.group(1)) if done else -1,
                    )
                    figures[name] = cell
                    print(
                        f"| {name} | {len(body):,} | {status} | {secs:.3f} | "
                        f"{cell['p50_ms']:.2f} | {cell['p90_ms']:.2f} | {cell['requests']} |"
                    )
        except RuntimeError as e:
            print(f"serve_hostile: {e}", file=sys.stderr)
            return 1
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
