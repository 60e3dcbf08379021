"""on_store_error="local": when the store dies, every thread and task shares ONE in-process
fallback, so the limit holds exactly from the first failure of an outage."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest

from ratewarden import AsyncLimiter, Limiter
from ratewarden import engine as engine_module
from ratewarden import limiter as limiter_module
from ratewarden.engine import Engine, RequestFacts
from ratewarden.storage.memory import MemoryStore

THREADS = 40
LIMIT = 10


@pytest.fixture
def dead_redis() -> str:
    """A Redis URL on a port where nothing listens: every call fails (connection refused)."""
    pytest.importorskip("redis")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


class _SlowToBuild(MemoryStore):
    """A real memory store that takes 20 ms to build (as a big preallocated one would): the
    threads that fail while the first fallback is being built must still share it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.02)
        super().__init__(*args, **kwargs)


@pytest.fixture(autouse=True)
def _slow_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limiter_module, "MemoryStore", _SlowToBuild)
    monkeypatch.setattr(engine_module, "MemoryStore", _SlowToBuild)


def _burst(fn: object, n: int = THREADS) -> list[bool]:
    barrier = threading.Barrier(n)
    got: list[bool] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        ok = fn()  # type: ignore[operator]
        with lock:
            got.append(ok)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def test_limiter_threads_hitting_a_dead_store_share_one_fallback(dead_redis: str) -> None:
    with Limiter(dead_redis, on_store_error="local", algorithm="fixed-window") as limiter:
        got = _burst(lambda: limiter.hit("login:alice", f"{LIMIT}/hour").allowed)
        assert sum(got) == LIMIT
        assert limiter.store_errors == THREADS


def test_engine_threads_hitting_a_dead_store_share_one_fallback(dead_redis: str) -> None:
    policy = f'[ratewarden]\nstorage = "{dead_redis}"\non_store_error = "local"\n'
    policy += f'[[rule]]\nname = "all"\nlimits = ["{LIMIT}/hour"]\nalgorithm = "fixed-window"\n'
    engine = Engine(policy, env={})
    try:
        got = _burst(lambda: engine.check(RequestFacts("GET", "/", "198.51.100.7")).allowed)
        assert sum(got) == LIMIT
        got = [engine.check_key("all", "ip=198.51.100.8").allowed for _ in range(LIMIT + 3)]
        assert sum(got) == LIMIT
    finally:
        engine.close()


async def test_async_tasks_hitting_a_dead_store_share_one_fallback(dead_redis: str) -> None:
    limiter = AsyncLimiter(dead_redis, on_store_error="local", algorithm="sliding-log")
    try:
        got = await asyncio.gather(*(limiter.hit("k", f"{LIMIT}/hour") for _ in range(THREADS)))
        assert sum(d.allowed for d in got) == LIMIT
        assert all(d.reason == "store_unavailable" for d in got)
    finally:
        await limiter.aclose()
    policy = f'[ratewarden]\nstorage = "{dead_redis}"\non_store_error = "allow"\n'
    policy += f'[[rule]]\nname = "r"\nlimits = ["{LIMIT}/hour"]\non_store_error = "local"\n'
    engine = Engine(policy, env={})
    try:
        facts = RequestFacts("GET", "/", "198.51.100.7")
        verdicts = await asyncio.gather(*(engine.acheck(facts) for _ in range(THREADS)))
        assert sum(v.allowed for v in verdicts) == LIMIT
    finally:
        await engine.aclose()
