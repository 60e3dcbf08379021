"""The memory store (storage/memory.py): bounded memory, reclaiming expired state, eviction order.

Bounded memory (docs/design.md#bounded-memory): a maximum key count; expired state reclaimed without a full scan on the
hot path; a flood of distinct keys cannot exhaust memory. Live keys are never evicted while the
store is under its cap, and when it is full, expired states go first.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from ratewarden import ConfigError, FakeClock, Limiter
from ratewarden.core.algorithms import GCRA, Outcome
from ratewarden.core.rates import Rate
from ratewarden.storage.memory import MemoryStore

S = 1_000_000


def held(store: MemoryStore) -> int:
    """The number of window states the store really holds (not its own count)."""
    return sum(len(t.data) for t in store._tables.values())


def wheel_entries(store: MemoryStore) -> int:
    return sum(len(b) for t in store._tables.values() for b in t.buckets.values())


@pytest.mark.slow
def test_a_million_distinct_keys_never_hold_more_than_max_keys() -> None:
    clock = FakeClock()
    limiter = Limiter("memory://", clock=clock, max_keys=100_000)
    store = limiter.store
    hit = limiter.hit
    started = time.perf_counter()
    for i in range(1_000_000):
        hit(f"attacker-{i}", "10/minute")
        if i % 20_000 == 0:
            assert len(store) <= 100_000
            clock.advance(0.001)
    elapsed = time.perf_counter() - started
    assert len(store) == held(store) == 100_000
    # the newest keys are the ones kept, with their usage
    assert limiter.status("attacker-999999", "10/minute")[0].remaining == 9
    assert elapsed < 30, f"1M distinct keys took {elapsed:.1f} s"


def test_max_keys_from_the_url_and_bad_values() -> None:
    limiter = Limiter("memory://?max_keys=3", clock=FakeClock())
    for i in range(10):
        limiter.hit(f"k{i}", "5/minute")
    assert len(limiter.store) == held(limiter.store) == 3
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ConfigError):
            MemoryStore(max_keys=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Limiter("memory://?max_keys=lots")


def test_sweep_reclaims_expired_states() -> None:
    clock = FakeClock()
    limiter = Limiter("memory://", clock=clock)
    for i in range(1000):
        limiter.hit(f"k{i}", "1/second")
    for i in range(10):
        limiter.hit(f"long{i}", "1/hour")
    assert len(limiter.store) == 1010
    clock.advance(1.5)  # the second's windows are empty now, but not yet reclaimed
    assert len(limiter.store) == 1010
    clock.advance(1.5)
    assert limiter.store.sweep() == 1000
    assert len(limiter.store) == held(limiter.store) == 10
    assert limiter.status("long3", "1/hour")[0].remaining == 0  # live state kept


def test_a_new_key_reclaims_expired_states_on_the_way() -> None:
    clock = FakeClock()
    limiter = Limiter("memory://", clock=clock)
    for i in range(1000):
        limiter.hit(f"k{i}", "1/second")
    clock.advance(3)
    limiter.hit("newcomer", "1/second")
    assert len(limiter.store) == held(limiter.store) == 1


class CountingGCRA(GCRA):
    __slots__ = ("calls",)

    def __init__(self, rate: Rate) -> None:
        super().__init__(rate)
        self.calls = 0

    def decide(self, state: Any, now: int, cost: int) -> Outcome:
        self.calls += 1
        return super().decide(state, now, cost)


def test_no_full_scan_on_the_hot_path() -> None:
    """Reclaiming looks only at the states due to expire, never at the live ones."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    hour = CountingGCRA(Rate(1, 3600 * S))
    second = CountingGCRA(Rate(1, S))
    for i in range(10_000):
        store.hit1(f"long{i}", hour, 1)
    for i in range(10):
        store.hit1(f"short{i}", second, 1)
    hour.calls = second.calls = 0
    clock.advance(5)
    for i in range(100):  # hits on known keys and a new one, after the short states expired
        store.hit1(f"long{i}", hour, 1)
    store.hit1("fresh", second, 1)
    assert hour.calls == 100  # only the hits themselves: the 10,000 live states were not visited
    assert second.calls == 10 + 1  # each expired state checked once, plus the hit
    assert len(store) == 10_001


def test_live_keys_are_not_evicted_under_the_cap() -> None:
    clock = FakeClock()
    limiter = Limiter("memory://", clock=clock, max_keys=1000)
    for i in range(999):
        limiter.hit(f"k{i}", "1/hour")
        clock.advance(0.5)
    limiter.hit("last", "1/hour")
    assert len(limiter.store) == 1000
    assert all(limiter.status(f"k{i}", "1/hour")[0].remaining == 0 for i in range(999))


def test_full_store_evicts_expired_states_first() -> None:
    clock = FakeClock()
    limiter = Limiter("memory://", clock=clock, max_keys=10)
    for i in range(5):
        limiter.hit(f"short{i}", "1/second")
        limiter.hit(f"long{i}", "1/hour")
    assert len(limiter.store) == 10
    clock.advance(3)  # the short states have expired
    for i in range(5):
        limiter.hit(f"new{i}", "1/hour")
    assert len(limiter.store) == held(limiter.store) == 10
    assert all(limiter.status(f"long{i}", "1/hour")[0].remaining == 0 for i in range(5))
    assert all(limiter.status(f"new{i}", "1/hour")[0].remaining == 0 for i in range(5))


def test_full_store_of_live_states_evicts_the_soonest_to_expire() -> None:
    clock = FakeClock()
    limiter = Limiter("memory://", clock=clock, max_keys=10)
    for i in range(5):
        limiter.hit(f"minute{i}", "1/minute")
        limiter.hit(f"hour{i}", "1/hour")
    limiter.hit("newcomer", "1/hour")
    assert len(limiter.store) == held(limiter.store) == 10
    assert all(limiter.status(f"hour{i}", "1/hour")[0].remaining == 0 for i in range(5))
    assert sum(limiter.status(f"minute{i}", "1/minute")[0].remaining for i in range(5)) == 1


def test_reset_forgets_every_window_of_a_key() -> None:
    limiter = Limiter("memory://", clock=FakeClock())
    limiter.hit("k", "5/minute;10/hour")
    limiter.hit("other", "5/minute")
    limiter.reset("k")
    assert len(limiter.store) == held(limiter.store) == 1
    assert [d.remaining for d in limiter.status("k", "5/minute;10/hour")] == [5, 10]


def test_multi_window_hit_on_a_full_store_keeps_the_count_true() -> None:
    limiter = Limiter("memory://", clock=FakeClock(), max_keys=1)
    limiter.hit("k", "2/second")
    limiter.hit("k", "10/hour;2/second")  # the hour's state is new: room is made for it
    assert held(limiter.store) == len(limiter.store) <= 1


def test_wheel_entries_stay_bounded_by_max_keys() -> None:
    clock = FakeClock()
    limiter = Limiter("memory://", clock=clock, max_keys=10)
    for _ in range(3000):  # one client, 100 leases a second, each held 9 ms
        d = limiter.acquire("k", "5/minute")
        clock.advance(0.009)
        limiter.release("k", "5/minute", d.lease or "")
        clock.advance(0.001)
    assert wheel_entries(limiter.store) <= 2 * limiter.store.max_keys
