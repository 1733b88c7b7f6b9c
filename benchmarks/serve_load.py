"""Serving under load: ``imgcls serve`` against the plain FastAPI + onnxruntime endpoint.

``wrk`` (Debian's C load generator: ``apt-get install wrk``; ``nox -s bench`` installs it)
POSTs one 28x28 MNIST test image as a PNG (a Lua script sets the body) for ``--duration``
seconds per cell, at 1, 8 and 64 connections, to two servers this script starts on 127.0.0.1:

  (a) the floor: the 20-line app ``FLOOR_APP`` below -- FastAPI, Pillow decodes the PNG on the
      event loop, the same model.onnx in an onnxruntime session in the process (one intra-op
      thread), one uvicorn process: what a user writes in an afternoon;
  (b) ``imgcls serve`` with its defaults (one worker process, dynamic batching).

Both are up for the whole run and measured alternately (a then b at each cell), ``--rounds``
times. Prints requests/s, p50 and p99 latency and errors (non-2xx answers and socket errors,
as wrk counts them) per cell, the ratios against the targets (b/a requests/s >= 1.2 at 8 and
64 connections, b/a p50 <= 1.3 at 1 connection, b/a p99 <= 2 at 64 connections), then:

- the ResNet row: the floor, ``imgcls serve`` and ``imgcls serve --max_batch_size 1`` at 64
  connections (what batching gains for a model that costs more than the HTTP around it);
- the ``--workers 2`` row: ``imgcls serve --workers 2`` at 8 and 64 connections;
- ``--soak N``: N requests at 64 connections to (b), counting failures;

and one JSON line with every figure.

    python benchmarks/serve_load.py --lenet5 export/lenet5/model.onnx --resnet ... --soak 100000
    python benchmarks/serve_load.py --quick     # smoke run: 1 s cells, 1 and 8 connections

Without ``--lenet5`` / ``--resnet`` the model is trained here for one short epoch and exported:
throughput does not depend on accuracy. wrk shares the machine's cores with the server (one wrk
thread), as clients do on a one-box deployment.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
READY_TIMEOUT_S = 180.0
# The service must stay well ahead of a plain FastAPI + onnxruntime endpoint under load.
TARGETS = {"rps_8": 1.2, "rps_64": 1.2, "p50_1": 1.3, "p99_64": 2.0}

POST_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/png"
local f = assert(io.open(os.getenv("IMGCLS_BENCH_PNG"), "rb"))
wrk.body = f:read("*a")
f:close()
local limit = tonumber(os.getenv("IMGCLS_BENCH_LIMIT") or "0")
local done = 0
if limit > 0 then
  function response(status, headers, body)
    done = done + 1
    if done >= limit then wrk.thread:stop() end
  end
end
"""


# ----------------------------------------------------------------------------- (a) the floor
# The plain endpoint: decode, run and answer, all on the event loop of one process.
# Run as `python floor_app.py MODEL PORT`.
FLOOR_APP = """
import io, sys
import numpy as np, onnxruntime as ort, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

so = ort.SessionOptions()
so.intra_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
app = FastAPI()

@app.post("/predict")
async def predict(request: Request):
    image = Image.open(io.BytesIO(await request.body())).convert("L").resize((28, 28))
    x = np.asarray(image, np.float32)[None, None] / np.float32(255)
    probs = session.run(["probabilities"], {"pixels": x})[0][0]
    return JSONResponse({"label": int(probs.argmax()), "probabilities": probs.tolist()})

@app.get("/health")
async def health():
    return {"status": "ok"}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


# ----------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def command(setup: str, model: Path, port: int) -> list[str]:
    if setup == "floor":
        app = Path(tempfile.gettempdir()) / "imgcls_floor_app.py"
        app.write_text(FLOOR_APP)
        return [sys.executable, str(app), str(model), str(port)]
    extra = {"serve": [], "serve-b1": ["--max_batch_size", "1"], "serve-w2": ["--workers", "2"]}
    base = [sys.executable, "-m", "imgcls", "serve", "--model", str(model), "--port", str(port)]
    return [*base, "--device", "cpu", *extra[setup]]


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextlib.contextmanager
def running(setup: str, model: Path, log: Path) -> Iterator[str]:
    port = free_port()
    cmd = command(setup, model, port)
    with log.open("ab") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
    url = f"http://{HOST}:{port}"
    try:
        wait_healthy(url, proc, shlex.join(cmd), log)
        yield url
    finally:
        stop(proc)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    """Until ``GET url/health`` answers 200; the log's tail if the server exits or is not up
    within ``READY_TIMEOUT_S``."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)


# ----------------------------------------------------------------------------- wrk
@dataclass
class Cell:
    connections: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers + socket errors (connect, read, write, timeout)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if m is None:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str, connections: int) -> Cell:
    done = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    if done is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    seconds = _ms(done.group(2) + done.group(3)) / 1e3
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # wrk pads a latency in seconds with a trailing space ("99%    1.26s ")
    pct = dict(re.findall(r"^\s+(50|99)\.000%\s+(\S+)\s*$", out, re.M))
    if not pct:
        pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    sock = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return Cell(
        connections, int(done.group(1)), seconds, rps, _ms(pct["50"]), _ms(pct["99"]), errors
    )


def wrk(url: str, connections: int, seconds: float, png: Path, lua: Path) -> Cell:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    cmd += ["-s", str(lua), url + "/predict"]
    env = {**os.environ, "IMGCLS_BENCH_PNG": str(png)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return parse_wrk(proc.stdout, connections)


def answered(url: str) -> float:
    """Requests imgcls serve has answered so far, from its /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("imgcls_requests_total{") and 'route="/predict"' in line
    )


def soak(url: str, connections: int, total: int, png: Path, lua: Path) -> Cell:
    """``total`` requests at ``connections``: wrk's Lua script stops its thread at ``total``
    answers, but wrk itself then waits out its duration, so it is interrupted (SIGINT: it
    prints its figures) once the server has answered them all."""
    cmd = ["wrk", "-t1", f"-c{connections}", "-d3600s", "--latency", "-s", str(lua)]
    env = {**os.environ, "IMGCLS_BENCH_PNG": str(png), "IMGCLS_BENCH_LIMIT": str(total)}
    start = answered(url)
    proc = subprocess.Popen(
        [*cmd, url + "/predict"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    while proc.poll() is None and answered(url) - start < total:
        time.sleep(1)
    time.sleep(1)  # the last answers reach wrk
    proc.send_signal(signal.SIGINT)
    printed, _ = proc.communicate(timeout=60)
    return parse_wrk(printed, connections)


# ----------------------------------------------------------------------------- models
def mnist_png() -> bytes:
    """The first MNIST test image as a PNG (the issue's 254-byte body)."""
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from imgcls.data.provision import default_root
    from imgcls.deploy.idx import read_idx

    image = read_idx(default_root() / "MNIST" / "raw" / "t10k-images-idx3-ubyte")[0]
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def make_model(name: str, work: Path, log: Path) -> Path:
    """Train ``name`` briefly (one epoch on 2,000 images) and export it; returns model.onnx."""
    sys.path.insert(0, str(ROOT))
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
def row(label: str, c: Cell) -> str:
    return (
        f"| {label} | {c.connections} | {c.rps:,.0f} | {c.p50_ms:.2f} | {c.p99_ms:.2f} | "
        f"{c.requests:,} | {c.errors} |"
    )


HEADER = [
    "| server | connections | requests/s | p50 ms | p99 ms | requests | errors |",
    "|---|---:|---:|---:|---:|---:|---:|",
]


def ratios(rounds: list[dict[str, dict[int, Cell]]], conns: list[int]) -> dict[str, float]:
    """Targets on the medians over rounds of each server's figure."""

    def med(setup: str, n: int, attr: str) -> float:
        vals = sorted(getattr(r[setup][n], attr) for r in rounds)
        return vals[len(vals) // 2] if len(vals) % 2 else sum(vals[len(vals) // 2 - 1 :][:2]) / 2

    out: dict[str, float] = {}
    for n in conns:
        out[f"rps_{n}"] = med("serve", n, "rps") / med("floor", n, "rps")
        out[f"p50_{n}"] = med("serve", n, "p50_ms") / med("floor", n, "p50_ms")
        out[f"p99_{n}"] = med("serve", n, "p99_ms") / med("floor", n, "p99_ms")
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lenet5", type=Path, help="LeNet-5 model.onnx (default: train one briefly)")
    p.add_argument("--resnet", type=Path, help="ResNet model.onnx (default: train one briefly)")
    p.add_argument("--duration", type=float, default=6.0, help="seconds per cell (default 6)")
    p.add_argument("--connections", default="1,8,64", help="connections (default 1,8,64)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of a/b cells (default 2)")
    p.add_argument("--soak", type=int, default=0, help="requests of the soak (0: none)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 s cells, 1 and 8, 1 round")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.connections, args.rounds = 1.0, "1,8", 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: run `apt-get install wrk` as root (`nox -s bench` does it)")
        return 2
    conns = [int(c) for c in args.connections.split(",")]
    top = max(conns)
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        work = Path(tmp)
        log = work / "servers.log"
        png, lua = work / "digit.png", work / "post.lua"
        png.write_bytes(mnist_png())
        lua.write_text(POST_LUA)
        lenet = args.lenet5 or make_model("lenet5", work, log)
        resnet = args.resnet or make_model("resnet", work, log)
        print(f"LeNet-5 {lenet}; ResNet {resnet}; body {png.stat().st_size} bytes (PNG)")
        print(f"wrk -t1 -c N -d {max(1, round(args.duration))}s --latency, {args.rounds} round(s)")
        figures: dict[str, Any] = {"rounds": [], "resnet": {}, "workers2": {}}
        rounds: list[dict[str, dict[int, Cell]]] = []
        try:
            with running("floor", lenet, log) as floor, running("serve", lenet, log) as serve:
                urls = {"floor": floor, "serve": serve}
                for k in range(args.rounds):
                    cells: dict[str, dict[int, Cell]] = {"floor": {}, "serve": {}}
                    for n in conns:
                        for setup in ("floor", "serve"):
                            wrk(urls[setup], n, 1, png, lua)  # warm-up: connections, batches
                            cells[setup][n] = wrk(urls[setup], n, args.duration, png, lua)
                    rounds.append(cells)
                    print(f"\n### LeNet-5, round {k + 1}\n", *HEADER, sep="\n")
                    for n in conns:
                        print(row("(a) plain FastAPI + onnxruntime", cells["floor"][n]))
                        print(row("(b) imgcls serve", cells["serve"][n]))
                    figures["rounds"].append(
                        {s: {str(n): asdict(c) for n, c in v.items()} for s, v in cells.items()}
                    )
                if args.soak:
                    t0 = time.monotonic()
                    soaked = soak(serve, top, args.soak, png, lua)
                    figures["soak"] = asdict(soaked)
                    print(
                        f"\nsoak: {soaked.requests:,} requests at {top} connections in "
                        f"{time.monotonic() - t0:.0f} s ({soaked.rps:,.0f}/s, p99 "
                        f"{soaked.p99_ms:.2f} ms): {soaked.errors} failed"
                    )
            r = ratios(rounds, conns)
            figures["ratios"] = r
            print("\nratios (b)/(a), medians over the rounds, against the targets:")
            for key, target in TARGETS.items():
                if key in r:
                    sense = ">=" if key.startswith("rps") else "<="
                    ok = r[key] >= target if sense == ">=" else r[key] <= target
                    verdict = "ok" if ok else "MISSED"
                    print(f"  {key}: {r[key]:.2f} (target {sense} {target}) {verdict}")
            n = top
            print(f"\n### ResNet, {n} connections\n", *HEADER, sep="\n")
            for setup, label in (
                ("floor", "(a) plain FastAPI + onnxruntime"),
                ("serve", "(b) imgcls serve"),
                ("serve-b1", "(b) imgcls serve --max_batch_size 1"),
            ):
                with running(setup, resnet, log) as url:
                    wrk(url, n, 1, png, lua)
                    cell = wrk(url, n, args.duration, png, lua)
                figures["resnet"][setup] = asdict(cell)
                print(row(label, cell))
            gain = figures["resnet"]["serve"]["rps"] / figures["resnet"]["serve-b1"]["rps"]
            figures["resnet_batching_gain"] = gain
            print(f"batching gain (serve / --max_batch_size 1): {gain:.2f}x")
            print("\n### LeNet-5, imgcls serve --workers 2\n", *HEADER, sep="\n")
            with running("serve-w2", lenet, log) as url:
                for n in [c for c in conns if c > 1] or conns:
                    wrk(url, n, 1, png, lua)
                    cell = wrk(url, n, args.duration, png, lua)
                    figures["workers2"][str(n)] = asdict(cell)
                    print(row("(b) imgcls serve --workers 2", cell))
        except RuntimeError as e:
            print(f"serve_load: {e}", file=sys.stderr)
            return 1
    line = json.dumps(figures)
    if args.json:
        args.json.write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
