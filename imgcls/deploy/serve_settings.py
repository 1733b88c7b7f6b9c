"""The settings of ``imgcls serve``: its options and the limits every part of the service shares.

``ServeOptions`` is what the command line gives; with ``--workers`` > 1 it travels to the
worker processes as JSON in the environment (the API key apart: it travels in its own
variable, never inside the options). The limits are module constants so that the request
readers, the session thread and the tests agree on them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from imgcls.deploy.classifier import MAX_BATCH
from imgcls.deploy.images import MAX_PIXELS
from imgcls.utils import sha256_file

__all__ = [
    "DIRECT_PIXELS",
    "FEATURES_FILE",
    "IMAGE_TYPES",
    "KEY_ENV",
    "LOOPBACK_HOSTS",
    "MAX_JSON_IMAGES",
    "OPTIONS_ENV",
    "RAW_JOB_BYTES",
    "ServeOptions",
    "model_id",
]

FEATURES_FILE = "model.features.onnx"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff")
# Images in one JSON request: one session call's worth; a bigger batch belongs in several.
MAX_JSON_IMAGES = MAX_BATCH
# An image body up to this size is decoded in the session thread, as part of its batch; a bigger
# one (or JSON) in the decode pool. A 28x28 digit is a few hundred bytes, a phone photo megabytes.
RAW_JOB_BYTES = 64 * 1024
# An image body decoded in the session thread that declares more pixels than this (a small GIF
# or PNG can declare millions) goes to the decode pool instead: a batch never waits for it.
# Decoding and framing cost grows with pixels, not bytes: a 4 KB 1000x1000 PNG takes ~40 ms on
# one core, a 320x320 one (a drawing pad's canvas fits) ~4 ms, the most a batch may wait.
DIRECT_PIXELS = 320 * 320
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
OPTIONS_ENV = "IMGCLS_SERVE_OPTIONS"  # the options, as JSON, for the worker processes
KEY_ENV = "IMGCLS_API_KEY"


@dataclass
class ServeOptions:
    model: Path
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_batch_size: int = 64
    max_body_mb: float = 10.0
    max_pixels: int = MAX_PIXELS
    preprocess: str = "auto"
    body_timeout_s: float = 30.0  # a body that takes longer to arrive is answered 408
    decode_threads: int = 2  # image decodes (and JSON parses) at once, per worker
    api_key: str | None = None
    allowed_hosts: list[str] | None = None  # None: the loopback names on loopback, else any
    log_level: str = "warning"
    access_log: bool = False
    intra_op_threads: int | None = 1  # None: onnxruntime's default, one thread per core
    features: Path | None = field(default=None)  # model.features.onnx beside the model, if any
    compare: Path | None = None  # a model served beside it, at /compare/predict (the page's)
    run_dir: Path | None = None  # the workers' shared folder (device slots), made by serve()

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def hosts(self) -> frozenset[str] | None:
        """The Host names answered; None answers any."""
        if self.allowed_hosts:
            return frozenset(h.lower() for h in self.allowed_hosts)
        if self.host in ("127.0.0.1", "::1"):
            return frozenset(LOOPBACK_HOSTS)
        return None

    def to_json(self) -> str:
        d = asdict(self)
        d["api_key"] = None  # the workers read the key from the environment, not the options
        return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in d.items()})

    @classmethod
    def from_json(cls, text: str) -> ServeOptions:
        d = json.loads(text)
        for k in ("model", "features", "run_dir", "compare"):
            if d.get(k) is not None:
                d[k] = Path(d[k])
        return cls(**d)


def model_id(path: Path) -> str:
    """The model's id in every answer: the first 12 hex digits of its file's sha256."""
    return sha256_file(path)[:12]
