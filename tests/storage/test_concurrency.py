"""Exact admission under concurrency (docs/design.md#exact-admission): threads, asyncio tasks, processes.

Every race hammers one fresh key with 1,000 attempts at a limit of 100 and counts the admitted:
exactly 100, never 101. The fake clock is frozen during a race, so the refilling algorithms
(gcra, token-bucket) have nothing to refill and any extra admission is a lost update. On a
backend whose time cannot be injected, a "100/day" limit makes the refill negligible instead.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ratewarden import AsyncLimiter, FakeClock, Limiter

from . import backends
from .backends import Backend, sqlite_url

backend = backends.backend
make_limiter = backends.make_limiter
make_alimiter = backends.make_alimiter

#: the strict algorithms, each with its rate of 100 units
STRICT = {
    "fixed-window": "100/minute",
    "sliding-log": "100/minute",
    "gcra": "100/minute",
    "token-bucket": "100/minute",
    "concurrency": "100/minute",
    "quota": "100/day",
}
ATTEMPTS = 1000
START = 1_767_225_600.0 + 17.5  # 2026-01-01T00:00:17.5Z: inside every window


def rate_for(algorithm: str, backend: Backend) -> str:
    return STRICT[algorithm] if backend.injectable_clock else "100/day"


@contextmanager
def tiny_switch_interval() -> Iterator[None]:
    """Make the interpreter switch threads as often as it can, so interleavings happen."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def race_threads(limiters: list[Limiter], key: str, rate: str, algorithm: str, threads: int = 8) -> int:
    """``threads`` threads (spread over ``limiters``) share ATTEMPTS hits; the number admitted."""
    admitted = [0] * threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def worker(i: int) -> None:
        lim = limiters[i % len(limiters)]
        try:
            barrier.wait()
            n = 0
            for _ in range(ATTEMPTS // threads):
                if lim.hit(key, rate, algorithm=algorithm).allowed:
                    n += 1
            admitted[i] = n
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with tiny_switch_interval():
        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    assert not errors, errors
    assert all(lim.store_errors == 0 for lim in limiters)
    return sum(admitted)


@pytest.mark.parametrize("algorithm", sorted(STRICT))
def test_threads_admit_exactly_the_limit(
    backend: Backend, make_limiter: Callable[..., Limiter], clock: FakeClock, algorithm: str
) -> None:
    clock.set(START)
    lim = make_limiter(algorithm=algorithm)
    rate = rate_for(algorithm, backend)
    assert race_threads([lim], "race", rate, algorithm) == 100
    assert not lim.hit("race", rate, algorithm=algorithm).allowed


@pytest.mark.parametrize("algorithm", sorted(STRICT))
def test_threads_over_several_limiters_on_one_store_admit_exactly_the_limit(
    backend: Backend, make_limiter: Callable[..., Limiter], clock: FakeClock, algorithm: str
) -> None:
    """Two limiters on one file: their connections contend in SQLite itself, not in one lock."""
    if not backend.shared:
        pytest.skip(f"two {backend.name} limiters do not share state")
    clock.set(START)
    limiters = [make_limiter(algorithm=algorithm) for _ in range(2)]
    assert race_threads(limiters, "race", rate_for(algorithm, backend), algorithm) == 100


@pytest.mark.parametrize("algorithm", sorted(STRICT))
async def test_asyncio_tasks_admit_exactly_the_limit(
    backend: Backend, make_alimiter: Callable[..., AsyncLimiter], clock: FakeClock, algorithm: str
) -> None:
    clock.set(START)
    lim = make_alimiter(algorithm=algorithm)
    rate = rate_for(algorithm, backend)
    tasks = 50

    async def task() -> int:
        n = 0
        for _ in range(ATTEMPTS // tasks):
            if (await lim.hit("race", rate, algorithm=algorithm)).allowed:
                n += 1
            await asyncio.sleep(0)
        return n

    assert sum(await asyncio.gather(*(task() for _ in range(tasks)))) == 100
    assert lim.store_errors == 0


async def test_asyncio_leases_never_exceed_the_limit(
    backend: Backend, make_alimiter: Callable[..., AsyncLimiter], clock: FakeClock
) -> None:
    """acquire/release from 50 tasks: never more than 10 leases held at once, all given back."""
    clock.set(START)
    lim = make_alimiter()
    held = peak = 0

    async def task() -> None:
        nonlocal held, peak
        for _ in range(10):
            async with lim.lease("pool", "10/minute") as d:
                if d.allowed:
                    held += 1
                    peak = max(peak, held)
                    await asyncio.sleep(0)
                    held -= 1

    await asyncio.gather(*(task() for _ in range(50)))
    assert 1 <= peak <= 10
    (status,) = await lim.status("pool", "10/minute", algorithm="concurrency")
    assert status.remaining == 10


# -- processes on one SQLite file ------------------------------------------------------------------


def _process_worker(url: str, share: int, barrier: Any, results: Any) -> None:
    """In a spawned process: for each strict algorithm, wait for the others, then race."""
    lim = Limiter(url, clock=FakeClock(START))
    try:
        for algorithm, rate in sorted(STRICT.items()):
            barrier.wait(timeout=60)
            n = sum(lim.hit(f"race:{algorithm}", rate, algorithm=algorithm).allowed for _ in range(share))
            results.put((algorithm, n, lim.store_errors))
    finally:
        lim.close()


def test_processes_on_one_sqlite_file_admit_exactly_the_limit(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    Limiter(url).close()  # create the file once, before the race
    ctx = mp.get_context("spawn")
    procs = 4
    barrier = ctx.Barrier(procs)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_process_worker, args=(url, ATTEMPTS // procs, barrier, results)) for _ in range(procs)
    ]
    for p in workers:
        p.start()
    got: dict[str, list[int]] = {}
    try:
        for _ in range(procs * len(STRICT)):
            algorithm, n, errors = results.get(timeout=120)
            assert errors == 0
            got.setdefault(algorithm, []).append(n)
    finally:
        for p in workers:
            p.join(timeout=30)
            if p.is_alive():  # pragma: no cover - only when the test already failed
                p.kill()
    assert all(p.exitcode == 0 for p in workers)
    assert {a: sum(ns) for a, ns in got.items()} == dict.fromkeys(STRICT, 100)
    assert all(len(ns) == procs for ns in got.values())
    assert sum(1 for ns in got.values() for n in ns if n) > len(STRICT)  # the processes really shared the work
    check = Limiter(url, clock=FakeClock(START))
    try:
        for algorithm, rate in STRICT.items():
            assert not check.hit(f"race:{algorithm}", rate, algorithm=algorithm).allowed
    finally:
        check.close()


# -- persistence ----------------------------------------------------------------------------------


def _hit_in_child(url: str, key: str, rate: str, times: int, results: Any) -> None:
    lim = Limiter(url, clock=FakeClock(START))
    results.put([lim.hit(key, rate).allowed for _ in range(times)])
    lim.close()


def _run_child(url: str, key: str, rate: str, times: int) -> list[bool]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    p = ctx.Process(target=_hit_in_child, args=(url, key, rate, times, results))
    p.start()
    try:
        got: list[bool] = results.get(timeout=60)
    finally:
        p.join(timeout=30)
    assert p.exitcode == 0
    return got


def test_a_limited_key_stays_limited_after_a_restart(tmp_path: Path) -> None:
    """Scenario S0 (docs/scenarios.md): counters survive a backend restart (each process is a fresh backend)."""
    url = sqlite_url(tmp_path)
    assert _run_child(url, "session:abc", "2/10 seconds", 3) == [True, True, False]
    assert _run_child(url, "session:abc", "2/10 seconds", 1) == [False]
    lim = Limiter(url, clock=FakeClock(START))
    try:
        d = lim.hit("session:abc", "2/10 seconds")
        assert not d.allowed and d.retry_after == 5.0
        assert lim.hit("session:other", "2/10 seconds").allowed
    finally:
        lim.close()
