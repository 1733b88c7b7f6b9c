"""Dynamic batching for ``imgcls serve``: one session thread, one thread hop per batch.

The event loop puts a ``Job`` on a ``queue.SimpleQueue`` and awaits the job's future. The
session thread blocks on that queue; when it wakes it takes whatever else is waiting (up to
``max_batch_size`` images), ``prepare``s each job on its own (for a small image body: the
decode; a job that fails there resolves only its own future, with its own error, and a job
that ``prepare`` hands elsewhere -- a big image sent to the decode pool -- comes back later
with ``put``), runs ONE session call for the jobs that are ready, and hands all the answers
back to the loop in one ``loop.call_soon_threadsafe``. There is no fixed wait: a lone request
runs at once; requests that arrive while a batch runs form the next batch.

Why a dedicated thread and not ``run_in_executor``: the round trip loop -> thread -> loop is
what a lone request to a 35 microsecond model mostly pays for (``docs/benchmarks.md``, "Serving
under load"); a ``SimpleQueue`` and one ``call_soon_threadsafe`` per batch is the cheapest hop
asyncio offers, and with requests waiting it is paid once per batch, not once per request.

A failed session call fails only the jobs of that batch (``BatchError``, answered 503 by the
service); the thread goes on with the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BatchError", "Batcher", "Job"]

log = logging.getLogger("imgcls.serve")


class BatchError(RuntimeError):
    """The session call of a batch failed; every request of that batch gets this."""


@dataclass(eq=False)
class Job:
    """One request: checked ``pixels`` (N, C, H, W) float32, or an image body (``data``) that
    ``prepare`` decodes in the session thread; whether it wants feature maps."""

    pixels: np.ndarray | None = None
    features: bool = False
    data: bytes | None = None
    name: str = ""
    future: asyncio.Future[Any] | None = field(default=None, repr=False)
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    @property
    def images(self) -> int:
        return 1 if self.pixels is None else len(self.pixels)


# run(jobs) -> one answer per job, in the session thread (every job has its pixels)
RunFn = Callable[[list[Job]], list[Any]]
# prepare(job) in the session thread: True when job.pixels is ready; False when the job was
# handed elsewhere (it comes back with Batcher.put); raises: the job's own error
PrepareFn = Callable[[Job], bool]
# observe(batch size in images, queue depth after taking it)
ObserveFn = Callable[[int, int], None]

_STOP = object()


def _ready(job: Job) -> bool:
    return True


def _future(job: Job) -> asyncio.Future[Any]:
    assert job.future is not None, "a job reaches the session thread through submit"
    return job.future


def _settle(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """On the loop: resolve a batch's futures (a client that went away is skipped)."""
    for fut, ok, value in results:
        if not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)


class Batcher:
    def __init__(
        self,
        run: RunFn,
        max_batch_size: int,
        observe: ObserveFn | None = None,
        prepare: PrepareFn | None = None,
    ) -> None:
        self.run = run
        self.prepare = prepare or _ready
        self.max_batch_size = max_batch_size
        self.observe = observe or (lambda size, depth: None)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._held: deque[Job] = deque()  # taken but over the batch size: the next batch's
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    @property
    def depth(self) -> int:
        """Jobs waiting for a batch."""
        return self._queue.qsize() + len(self._held)

    # -------------------------------------------------------------- the loop's side
    async def submit(self, job: Job) -> Any:
        """Queue ``job`` and wait for its answer (raises ``BatchError`` if its batch failed,
        or the job's own error from ``prepare``)."""
        job.loop = asyncio.get_running_loop()
        job.future = job.loop.create_future()
        if self._thread is None:
            self._ensure_thread()
        self._queue.put(job)
        return await job.future

    # -------------------------------------------------------------- any thread
    def put(self, job: Job) -> None:
        """A job handed elsewhere by ``prepare`` (its pixels now ready) joins a batch."""
        self._queue.put(job)

    def fail(self, job: Job, error: BaseException) -> None:
        """A job handed elsewhere failed there: its own future gets ``error``."""
        assert job.loop is not None and job.future is not None
        job.loop.call_soon_threadsafe(_settle, [(job.future, False, error)])

    def _ensure_thread(self) -> None:
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="imgcls-session", daemon=True
                )
                self._thread.start()

    # -------------------------------------------------------------- the session thread
    def _take(self) -> list[Job] | None:
        """The next batch: blocks for the first job, then takes what waits. None: stop."""
        first = self._held.popleft() if self._held else self._queue.get()
        if first is _STOP:
            return None
        batch = [first]
        images = first.images
        while images < self.max_batch_size:
            if self._held:
                job = self._held.popleft()
            else:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
            if job is _STOP or images + job.images > self.max_batch_size:
                self._held.appendleft(job)
                break
            batch.append(job)
            images += job.images
        return batch

    def _serve(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self._one(batch)
            except Exception:  # never lose the thread; every future is settled in _one
                log.exception("imgcls serve: the session thread failed on a batch")

    def _one(self, batch: list[Job]) -> None:
        results: list[tuple[asyncio.Future[Any], bool, Any]] = []
        ready: list[Job] = []
        for job in batch:
            if _future(job).done():  # the client went away (a read across threads: a hint)
                continue
            try:
                if self.prepare(job):
                    ready.append(job)
            except Exception as e:  # this job's own error (a 4xx): the batch goes on
                results.append((_future(job), False, e))
        if ready:
            self.observe(sum(j.images for j in ready), self.depth)
            try:
                answers = self.run(ready)
            except Exception as e:
                log.exception("imgcls serve: the session failed on a batch of %d", len(ready))
                error = BatchError(f"{type(e).__name__}: {str(e)[:300]}")
                results += [(_future(j), False, error) for j in ready]
            else:
                results += [(_future(j), True, a) for j, a in zip(ready, answers, strict=True)]
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for item in results:
            by_loop.setdefault(item[0].get_loop(), []).append(item)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a loop already closed: nobody waits
                loop.call_soon_threadsafe(_settle, items)

    async def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
