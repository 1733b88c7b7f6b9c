"""The sessions of ``imgcls serve``'s worker processes: devices, TensorRT caches, the factory.

With ``--workers N`` uvicorn starts N processes, each calling ``app_from_env`` (by its import
string): the options come from the environment, each worker claims the lowest free slot (a
file lock held for the process's life, so that a worker restarted after a crash takes the slot,
and so the GPU, of the one that died) and runs on GPU ``slot % n_gpus``. TensorRT's engines and
timing cache are kept on disk, so a restart does not rebuild them.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from imgcls.deploy.classifier import OnnxClassifier, cuda_device_count
from imgcls.deploy.serve_gate import Gate
from imgcls.deploy.serve_routes import build_app
from imgcls.deploy.serve_service import Service
from imgcls.deploy.serve_settings import KEY_ENV, OPTIONS_ENV, ServeOptions, model_id

__all__ = ["APP_FACTORY", "app_from_env", "make_service", "provider_options", "trt_cache_dir"]

APP_FACTORY = f"{__name__}:app_from_env"  # what uvicorn imports in each worker process


def trt_cache_dir(model: Path, mid: str) -> Path:
    """Where TensorRT keeps its engines and timing cache: beside the model when that folder
    is writable, else under ~/.cache/imgcls, so that a restart does not rebuild them."""
    beside = model.parent / ".trt-cache"
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    home = Path.home() / ".cache" / "imgcls" / "trt" / mid
    home.mkdir(parents=True, exist_ok=True)
    return home


def provider_options(options: ServeOptions, slot: int) -> dict[str, dict[str, Any]] | None:
    """Worker ``slot`` runs on GPU ``slot % n_gpus``; TensorRT engines cached on disk."""
    if options.device == "cpu":
        return None
    n = cuda_device_count()
    if n == 0:
        return None
    gpu: dict[str, Any] = {"device_id": slot % n}
    trt: dict[str, Any] = dict(gpu)
    if options.device == "tensorrt":
        cache = str(trt_cache_dir(options.model, model_id(options.model)))
        trt.update(
            trt_engine_cache_enable="1",
            trt_engine_cache_path=cache,
            trt_timing_cache_enable="1",
            trt_timing_cache_path=cache,
        )
    return {"CUDAExecutionProvider": gpu, "TensorrtExecutionProvider": trt}


def make_service(options: ServeOptions, slot: int = 0) -> Service:
    """The worker's classifiers (its batch limit is the classifier's own), warmed up."""
    common: dict[str, Any] = {
        "device": options.device,
        "provider_options": provider_options(options, slot),
        # one intra-op thread: the HTTP side and the clients share the cores
        "intra_op_threads": options.intra_op_threads if options.device == "cpu" else None,
        "session_config": {"session.intra_op.allow_spinning": "0"},
    }
    if options.device == "auto":
        common["intra_op_threads"] = options.intra_op_threads
    clf = OnnxClassifier(options.model, **common)
    feats = OnnxClassifier(options.features, **common) if options.features else None
    service = Service(options, clf, feats)
    service.warm_up()
    if options.compare is not None:
        beside = replace(options, model=options.compare, features=None, compare=None)
        service.compare = Service(beside, OnnxClassifier(options.compare, **common), None)
        service.compare.warm_up()
    return service


def _claim_slot(run_dir: Path, workers: int) -> int:
    """The lowest free worker slot (a lock held for the process's life): a restarted worker
    takes the slot, and so the GPU, of the one that died."""
    while True:
        for i in range(workers):
            fh = open(run_dir / f"slot-{i}", "a")  # noqa: SIM115 - held until the process exits
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                continue
            _held.append(fh)
            return i
        time.sleep(0.05)


_held: list[Any] = []


def app_from_env() -> Gate:
    """The app factory of a worker process (``--workers`` > 1): options from the environment."""
    options = ServeOptions.from_json(os.environ[OPTIONS_ENV])
    options.api_key = os.environ.get(KEY_ENV) or None
    slot = _claim_slot(options.run_dir, options.workers) if options.run_dir else 0
    return build_app(make_service(options, slot))
