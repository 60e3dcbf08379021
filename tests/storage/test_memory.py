"""The memory store (storage/memory.py): bounded memory, reclaiming expired state, eviction order.

The store holds at most ``max_keys`` states; expired state is reclaimed without a full scan on
the hot path; a flood of distinct keys cannot exhaust memory. Live keys are never evicted while
the store is under its cap; when it is full, expired states go first, then the states whose loss
admits the least, so a flood of fresh keys never gives an exhausted key its budget back. A wall
clock stepped ahead and back loses no live state, and a store used in a forked child says once
that it counts per process.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratewarden import ConfigError, FakeClock, Limiter
from ratewarden.core.algorithms import GCRA, Outcome, make_window
from ratewarden.core.rates import Rate, parse_rate
from ratewarden.storage.memory import MemoryStore

S = 1_000_000


def held(store: MemoryStore) -> int:
    """The number of window states the store really holds (not its own count)."""
    return sum(len(t.data) for t in store._tables.values())


def wheel_entries(store: MemoryStore) -> int:
    return sum(len(b) for t in store._tables.values() for w in t.wheels.values() for b in w.buckets.values())


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


# -- eviction order: the states whose loss admits the least go first ---------------------------

ALGORITHMS = ["gcra", "fixed-window", "sliding-window", "sliding-log", "token-bucket"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_flood_of_fresh_keys_never_evicts_an_exhausted_one(algorithm: str) -> None:
    """Login by email, 5 per 20 minutes: 1,000 logins for other emails must not give the
    exhausted email its budget back (they are evicted among themselves)."""
    clock = FakeClock()
    limiter = Limiter("memory://", clock=clock, max_keys=1000, algorithm=algorithm)
    for i in range(400):
        limiter.hit(f"login:other{i}@example.com", "5/20 minutes")
        clock.advance(0.01)
    assert all(limiter.hit("login:victim@example.com", "5/20 minutes").allowed for _ in range(5))
    for i in range(400, 1400):
        limiter.hit(f"login:other{i}@example.com", "5/20 minutes")
        clock.advance(0.01)
    assert len(limiter.store) == held(limiter.store) == 1000
    assert not limiter.hit("login:victim@example.com", "5/20 minutes").allowed


def test_eviction_prefers_the_fewest_used_units_over_a_longer_life() -> None:
    """A fresh key of a long window (1 unit used) goes before an exhausted key of a short one."""
    clock = FakeClock()
    limiter = Limiter("memory://", clock=clock, max_keys=3)
    for _ in range(5):
        limiter.hit("login:victim", "5/20 minutes")
    limiter.hit("reset:a", "1/day")
    limiter.hit("reset:b", "1/day")
    limiter.hit("reset:c", "1/day")  # evicts a one-unit state, not the victim's five
    assert not limiter.hit("login:victim", "5/20 minutes").allowed
    assert limiter.status("reset:c", "1/day")[0].remaining == 0


def test_eviction_drops_expired_states_before_any_live_one() -> None:
    clock = FakeClock()
    limiter = Limiter("memory://", clock=clock, max_keys=4)
    limiter.hit("short", "1/second")
    for i in range(3):
        limiter.hit(f"long{i}", "10/hour")
    clock.advance(1.5)  # "short" expired, its wheel bucket is the current one (not yet swept)
    limiter.hit("new", "10/hour")
    assert all(limiter.status(f"long{i}", "10/hour")[0].remaining == 9 for i in range(3))
    assert limiter.status("new", "10/hour")[0].remaining == 9


def test_eviction_refiles_a_state_hit_since_it_was_filed() -> None:
    """A key first seen long ago and exhausted since is judged by its state now, not by when
    it was filed."""
    clock = FakeClock()
    limiter = Limiter("memory://", clock=clock, max_keys=2)
    limiter.hit("victim", "5/20 minutes")
    clock.advance(100)
    limiter.hit("other", "5/20 minutes")
    for _ in range(4):
        limiter.hit("victim", "5/20 minutes")
    limiter.hit("third", "5/20 minutes")  # the store is full: "other" (one unit) goes
    assert not limiter.hit("victim", "5/20 minutes").allowed
    assert limiter.status("other", "5/20 minutes")[0].remaining == 5


# -- a wall clock that steps forward and back (NTP) --------------------------------------------


@pytest.mark.parametrize("named", [False, True], ids=["default-clock", "clock=time.time"])
def test_a_clock_stepping_40_days_ahead_and_back_keeps_a_full_key(monkeypatch: pytest.MonkeyPatch, named: bool) -> None:
    """The sweep runs while the wall clock is 40 days ahead: a live state must survive it, also
    when the real clock is passed by name (``clock=time.time`` is the real clock, not a test's)."""
    import ratewarden.storage.memory as memory

    step = [0]
    real = time.time_ns
    monkeypatch.setattr(memory, "_time_ns", lambda: real() + step[0])
    monkeypatch.setattr(time, "time", lambda: (real() + step[0]) / 1e9)  # the same stepped clock
    limiter = Limiter("memory://", clock=time.time) if named else Limiter("memory://")
    for _ in range(5):
        assert limiter.hit("login:victim", "5/20 minutes").allowed
    assert not limiter.hit("login:victim", "5/20 minutes").allowed
    step[0] = 40 * 86_400 * 10**9  # NTP steps the clock 40 days ahead ...
    for i in range(100):
        limiter.hit(f"other{i}", "5/20 minutes")  # new keys run the sweep
    limiter.store.sweep()
    step[0] = 0  # ... and back
    assert not limiter.hit("login:victim", "5/20 minutes").allowed
    assert len(limiter.store) == held(limiter.store)


# -- forked children ---------------------------------------------------------------------------


def test_a_memory_store_used_in_a_forked_child_logs_one_warning(tmp_path: Any) -> None:
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import logging, os, sys
        from ratewarden import Limiter
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
        limiter = Limiter("memory://")
        limiter.hit("parent", "5/minute")
        pid = os.fork()
        if pid == 0:
            for i in range(3):
                limiter.hit(f"child{i}", "5/minute")
            Limiter("memory://").hit("x", "5/minute")
            os._exit(0)
        os.waitpid(pid, 0)
        limiter.hit("parent2", "5/minute")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    warnings = [line for line in out.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, out.stderr
    assert "per process" in warnings[0]


def _rank(table_window: Any, state: Any, now: int) -> tuple[int, int]:
    """Where eviction ranks a state at ``now``: (class of its used units, its expiry bucket)."""
    out = table_window.decide(state, now, 0)
    if out[2] <= 0:
        return (-1, 0)  # expired: first of all
    used = table_window.capacity - out[1]
    return (used.bit_length() if used > 0 else 0, (now + out[2]) >> 20)


@settings(max_examples=80, deadline=None)
@given(
    algorithm=st.sampled_from(ALGORITHMS),
    keys=st.lists(st.integers(0, 15), min_size=1, max_size=120),
)
def test_an_evicted_state_never_ranks_after_one_kept(algorithm: str, keys: list[int]) -> None:
    """With the clock still (no usage paid back meanwhile), the state evicted to make room ranks
    no later than any state kept: fewer used units (by power of two), or as few and due sooner."""
    clock = FakeClock()
    store = MemoryStore(max_keys=6, clock=clock)
    w = make_window(algorithm, parse_rate("20/hour"))
    now = store.now()
    for i in keys:
        key = f"k{i}"
        before = dict(store._tables[w.id].data) if w.id in store._tables else {}
        store.hit1(key, w, 1)
        after = store._tables[w.id].data
        for gone in set(before) - set(after):
            lost = _rank(w, before[gone], now)
            for kept, state in after.items():
                if kept != key and state is not None:
                    assert lost <= _rank(w, state, now), (gone, kept)
