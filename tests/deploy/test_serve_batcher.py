"""The batcher of ``imgcls serve`` on its own (a fake session, no model): jobs that wait form one
batch in the session thread, a job whose ``prepare`` fails gets its own error while the rest of
its batch is answered, a job handed elsewhere by ``prepare`` comes back and is answered, a batch
never holds more than ``max_batch_size`` images (a bigger JSON batch runs alone), and a failed
session call fails its own batch only.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

from imgcls.deploy.batcher import Batcher, BatchError, Job


class Session:
    """Answers each job with its first pixel and records each call's first pixels and thread.
    The first call waits (2 s at most) until the test sets ``release``, so that the jobs the
    test submits meanwhile wait in the queue."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.fail_on = fail_on
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[list[float]] = []
        self.threads: set[str] = set()

    def __call__(self, jobs: list[Job]) -> list[Any]:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(2)
        firsts = [float(j.pixels[0, 0, 0, 0]) for j in jobs]  # type: ignore[index]
        self.calls.append(firsts)
        self.threads.add(threading.current_thread().name)
        if self.fail_on is not None and self.fail_on in firsts:
            raise RuntimeError("injected failure")
        return firsts


def pixels(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 1, 2, 2), value, np.float32)


async def behind_a_held_call(
    batcher: Batcher, session: Session, jobs: list[Job], cancel: int = 0
) -> list[Any]:
    """Job 0 runs alone and holds the session while the others queue (the first ``cancel`` of
    them are cancelled, as when their client goes away); then all are answered."""
    loop = asyncio.get_running_loop()
    first = asyncio.ensure_future(batcher.submit(jobs[0]))
    await loop.run_in_executor(None, session.entered.wait, 2)
    rest = [asyncio.ensure_future(batcher.submit(j)) for j in jobs[1:]]
    await asyncio.sleep(0.01)  # each submit has queued its job
    for fut in rest[:cancel]:
        fut.cancel()
    await asyncio.sleep(0)
    session.release.set()
    answers = await asyncio.gather(first, *rest[cancel:], return_exceptions=True)
    return answers


def test_waiting_jobs_form_one_batch_in_the_session_thread() -> None:
    session = Session()
    batcher = Batcher(session, max_batch_size=64)

    async def go() -> list[Any]:
        answers = await behind_a_held_call(batcher, session, [Job(pixels(i)) for i in range(10)])
        await batcher.close()
        return answers

    assert asyncio.run(go()) == [float(i) for i in range(10)]
    # the first job ran alone while the other nine waited; they formed ONE batch
    assert session.calls == [[0.0], [float(i) for i in range(1, 10)]]
    assert session.threads == {"imgcls-session"}


def test_a_failed_prepare_answers_its_own_job_only() -> None:
    """A body that does not decode fails its own request; the rest of its batch runs."""

    def prepare(job: Job) -> bool:
        if job.data == b"bad":
            raise ValueError("not an image")
        job.pixels = pixels(float(job.data or b"0"))
        return True

    session = Session()
    batcher = Batcher(session, max_batch_size=64, prepare=prepare)

    async def go() -> list[Any]:
        bodies = [b"1", b"2", b"bad", b"4", b"5", b"6"]
        answers = await behind_a_held_call(batcher, session, [Job(data=b) for b in bodies])
        await batcher.close()
        return answers

    answers = asyncio.run(go())
    assert answers[:2] == [1.0, 2.0] and answers[3:] == [4.0, 5.0, 6.0]
    assert isinstance(answers[2], ValueError) and str(answers[2]) == "not an image"
    assert session.calls == [[1.0], [2.0, 4.0, 5.0, 6.0]]  # the bad one ran in no batch


def test_a_job_handed_elsewhere_comes_back_and_is_answered() -> None:
    """``prepare`` returning False (a big image sent to the decode pool) leaves the batch to the
    others; the job returns with ``put`` once decoded, or fails with ``fail``."""
    pool: list[threading.Thread] = []
    batcher: Batcher

    def slow_decode(job: Job) -> None:
        time.sleep(0.3)
        if job.data == b"big-bad":
            batcher.fail(job, ValueError("too damaged"))
            return
        job.pixels = pixels(99.0)
        batcher.put(job)

    def prepare(job: Job) -> bool:
        if job.pixels is not None:  # back from the pool, decoded
            return True
        if job.data and job.data.startswith(b"big"):
            t = threading.Thread(target=slow_decode, args=(job,))
            pool.append(t)
            t.start()
            return False
        job.pixels = pixels(float(job.data or b"0"))
        return True

    session = Session()
    session.release.set()
    batcher = Batcher(session, max_batch_size=64, prepare=prepare)

    async def go() -> tuple[list[Any], float]:
        t0 = time.monotonic()
        big = asyncio.ensure_future(batcher.submit(Job(data=b"big")))
        bad = asyncio.ensure_future(batcher.submit(Job(data=b"big-bad")))
        small = await asyncio.gather(*[batcher.submit(Job(data=b"7")) for _ in range(3)])
        small_s = time.monotonic() - t0
        answers = [*small, await big, *(await asyncio.gather(bad, return_exceptions=True))]
        await batcher.close()
        return answers, small_s

    answers, small_s = asyncio.run(go())
    for t in pool:
        t.join()
    assert answers[:4] == [7.0, 7.0, 7.0, 99.0]
    assert isinstance(answers[4], ValueError) and str(answers[4]) == "too damaged"
    assert small_s < 0.2, "the small jobs waited for the big decode"
    assert [99.0] in session.calls


def test_a_batch_holds_at_most_max_batch_size_images() -> None:
    session = Session()
    batcher = Batcher(session, max_batch_size=8)

    async def go() -> list[Any]:
        sizes = [1, 3, 4, 2, 20]  # a JSON batch over the size runs alone
        answers = await behind_a_held_call(
            batcher, session, [Job(pixels(float(n), n)) for n in sizes]
        )
        await batcher.close()
        return answers

    assert asyncio.run(go()) == [1.0, 3.0, 4.0, 2.0, 20.0]
    assert session.calls == [[1.0], [3.0, 4.0], [2.0], [20.0]]


def test_a_failed_session_call_fails_its_batch_only() -> None:
    session = Session(fail_on=3.0)
    batcher = Batcher(session, max_batch_size=2)

    async def go() -> list[Any]:
        answers = await behind_a_held_call(batcher, session, [Job(pixels(i)) for i in range(6)])
        answers.append(await batcher.submit(Job(pixels(7.0))))  # the thread goes on
        await batcher.close()
        return answers

    answers = asyncio.run(go())
    # batches [0], [1, 2], [3, 4] (fails), [5]; then [7]
    assert session.calls == [[0.0], [1.0, 2.0], [3.0, 4.0], [5.0], [7.0]]
    assert answers[:3] == [0.0, 1.0, 2.0] and answers[5:] == [5.0, 7.0]
    for a in answers[3:5]:
        assert isinstance(a, BatchError) and "injected failure" in str(a)


@pytest.mark.parametrize("n", [1, 5])
def test_a_client_gone_is_not_run(n: int) -> None:
    """Requests cancelled (their client went away) before their batch runs are skipped."""
    session = Session()
    batcher = Batcher(session, max_batch_size=64)

    async def go() -> list[Any]:
        jobs = [Job(pixels(0.0)), *[Job(pixels(1.0)) for _ in range(n)], Job(pixels(2.0))]
        answers = await behind_a_held_call(batcher, session, jobs, cancel=n)
        await batcher.close()
        return answers

    assert asyncio.run(go()) == [0.0, 2.0]
    assert session.calls == [[0.0], [2.0]]
