"""Prometheus metrics of ``imgcls serve`` (``GET /metrics``, the text format).

- ``imgcls_requests_total{route, status, model_id, provider}``: answered requests;
- ``imgcls_request_seconds{route, model_id, provider}``: latency, from the request's first
  byte handed to the app to the end of its answer;
- ``imgcls_batch_images{model_id, provider}``: images per session call;
- ``imgcls_queue_depth{model_id, provider}``: requests waiting for a batch.

With ``--workers`` > 1 every worker is a process of its own: ``prometheus_client``'s
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, a folder the parent makes before the workers
start and removes on exit) sums them, so a scrape answered by any worker counts all of them.
Routes are a fixed set, the service's route table (``imgcls.deploy.serve_schemas``; anything
else is ``other``), so a scanner cannot grow the label set.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from imgcls.deploy.serve_schemas import ROUTE_LABELS

__all__ = ["CONTENT_TYPE_LATEST", "MULTIPROC_ENV", "ROUTES", "Metrics"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ROUTES = ROUTE_LABELS
LATENCY_BUCKETS = (
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self, model_id: str, provider: str) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # Our own registry: another library's metrics (or a second app in a test) do not mix in.
        self.registry = CollectorRegistry()
        labels = {"model_id": model_id, "provider": provider}
        self.requests = Counter(
            "imgcls_requests",
            "Requests answered, by route and HTTP status",
            ["route", "status", *labels],
            registry=self.registry,
        )
        self.latency = Histogram(
            "imgcls_request_seconds",
            "Time from the request reaching the app to the end of its answer",
            ["route", *labels],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        batch = Histogram(
            "imgcls_batch_images",
            "Images in one session call",
            list(labels),
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        queue = Gauge(
            "imgcls_queue_depth",
            "Requests waiting for a batch",
            list(labels),
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self._labels = labels
        self._batch = batch.labels(**labels)
        self._queue = queue.labels(**labels)
        self._children: dict[tuple[str, int], Any] = {}
        self._latency: dict[str, Any] = {}

    def request(self, path: str, status: int, seconds: float) -> None:
        route = path if path in ROUTES else ("/static" if path.startswith("/static/") else "other")
        key = (route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(
                route=route, status=str(status), **self._labels
            )
        child.inc()
        hist = self._latency.get(route)
        if hist is None:
            hist = self._latency[route] = self.latency.labels(route=route, **self._labels)
        hist.observe(seconds)

    def batch(self, images: int, depth: int) -> None:
        self._batch.observe(images)
        self._queue.set(depth)

    def render(self) -> bytes:
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))
