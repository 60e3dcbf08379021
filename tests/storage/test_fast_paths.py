"""Each store's one fast path, ``hit1``, is ``apply("hit", [item])[0]`` in another form: the same
outcome and the same later state, for every algorithm, over generated sequences of hits, costs
and time steps (docs/design.md#the-store-contract). Memory, SQLite and a real Redis (the shared
test server, keys under a prefix of this test's own; its clock replaced by the test hook).

Two keys live through the same history, one through ``hit1`` and one through ``apply``; after
every step each outcome is compared, and so is what a ``peek`` (cost 1, nothing consumed) of
each key says, which is decided from the state the step left.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rw_redis
from ratewarden import ALGORITHMS, FakeClock
from ratewarden.core.algorithms import make_window
from ratewarden.core.rates import parse_rates
from ratewarden.storage.base import Store
from ratewarden.storage.memory import MemoryStore
from ratewarden.storage.sqlite import SQLiteStore

RATES = {"quota": "4/day", "concurrency": "3/10s"}
START = 1_800_000_000.0

steps = st.lists(
    st.tuples(st.integers(0, 4), st.sampled_from([0.0, 0.001, 0.4, 1.7, 3.3, 9.0, 30.0])),
    min_size=1,
    max_size=25,
)


def _window(algorithm: str) -> Any:
    rate = parse_rates(RATES.get(algorithm, "3/10s"))[0]
    return make_window(algorithm, rate)


def _agree(store: Store, clock: FakeClock, algorithm: str, history: list[tuple[int, float]]) -> None:
    w = _window(algorithm)
    tag = uuid.uuid4().hex[:10]
    fast, general = f"fast:{tag}", f"general:{tag}"
    for cost, dt in history:
        clock.advance(dt)
        got = store.hit1(fast, w, cost)
        want = store.apply("hit", [(general, w, cost)])[0]
        assert got[:4] == want[:4], (algorithm, cost, clock())
        seen = store.apply("peek", [(fast, w, 1)])[0]
        expected = store.apply("peek", [(general, w, 1)])[0]
        assert seen[:4] == expected[:4], (algorithm, "state after", cost, clock())


@pytest.fixture
def memory_store() -> Iterator[tuple[MemoryStore, FakeClock]]:
    clock = FakeClock(START)
    yield MemoryStore(clock=clock), clock


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[tuple[SQLiteStore, FakeClock]]:
    clock = FakeClock(START)
    store = SQLiteStore(str(tmp_path / "fast.db"), clock=clock)
    yield store, clock
    store.close()


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=steps)
def test_memory_hit1_is_apply(
    memory_store: tuple[MemoryStore, FakeClock], algorithm: str, history: list[tuple[int, float]]
) -> None:
    store, clock = memory_store
    _agree(store, clock, algorithm, history)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=steps)
def test_sqlite_hit1_is_apply(
    sqlite_store: tuple[SQLiteStore, FakeClock], algorithm: str, history: list[tuple[int, float]]
) -> None:
    store, clock = sqlite_store
    _agree(store, clock, algorithm, history)


@pytest.fixture
def redis_store(redis_prefix: str) -> Iterator[tuple[Any, FakeClock]]:
    pytest.importorskip("redis")
    reason = rw_redis.unreachable()
    if reason is not None:
        pytest.skip(reason)
    from ratewarden.storage.redis import open_redis

    clock = FakeClock(START)
    store = open_redis(rw_redis.URL, key_prefix=redis_prefix, _test_now=clock, clock=clock, timeout=2.0)
    yield store, clock
    store.close()


@pytest.mark.redis
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=steps)
def test_redis_hit1_is_apply(
    redis_store: tuple[Any, FakeClock], algorithm: str, history: list[tuple[int, float]]
) -> None:
    store, clock = redis_store
    _agree(store, clock, algorithm, history)


@pytest.mark.redis
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
async def test_redis_ahit1_is_aapply(redis_store: tuple[Any, FakeClock], algorithm: str) -> None:
    """The async face of the same fast path, on one fixed history (the sync one is generated)."""
    store, clock = redis_store
    w = _window(algorithm)
    tag = uuid.uuid4().hex[:10]
    for cost, dt in [(1, 0.0), (2, 0.4), (1, 0.0), (3, 1.7), (0, 0.0), (1, 9.0), (4, 30.0), (1, 0.001)]:
        clock.advance(dt)
        got = await store.ahit1(f"fast:{tag}", w, cost)
        want = (await store.aapply("hit", [(f"general:{tag}", w, cost)]))[0]
        assert got[:4] == want[:4], (algorithm, cost)
    await store.aclose()


FAST_PATHS = [
    ("ratewarden.storage.memory", "MemoryStore"),
    ("ratewarden.storage.sqlite", "SQLiteStore"),
    ("ratewarden.storage.redis._store", "RedisStore"),
    ("ratewarden.storage.postgres._store", "PostgresStore"),
]


@pytest.mark.parametrize(("module", "name"), FAST_PATHS)
def test_each_fast_path_states_its_measured_figure(module: str, name: str) -> None:
    """A fast path stays only with its measured benefit written down (and how it was measured);
    the memory store's second one (``hitn``, two windows) is gone."""
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError as exc:  # the extra is not installed
        pytest.skip(str(exc))
    doc = (cls.hit1.__doc__ or "").lower()
    assert "measured" in doc and "bench/fast_paths.py" in doc, f"{name}.hit1 gives no measured figure"
    assert not hasattr(cls, "hitn")
