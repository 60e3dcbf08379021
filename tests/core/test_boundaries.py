"""Scenario S3 (docs/scenarios.md): two windows on one key, "5 per 10 minutes;20/hour", exact at the boundaries.

The 5th request in a window passes and the 6th is denied; a request exactly at a window edge is
counted as each algorithm's docstring says (fixed-window: in the new window; sliding-log: an
entry stamped t stops counting at t + P exactly; gcra/token-bucket: one unit per P/limit);
a denial in one window leaves the other untouched; concurrent requests never over-admit.
"""

from __future__ import annotations

import threading

import pytest

from ratewarden import FakeClock, Limiter

S = 1_000_000
MIN = 60 * S
RATES = "5 per 10 minutes;20/hour"
START = 1_767_225_600 * S  # 2026-01-01T00:00:00Z: aligned to 10 minutes and to the hour


def at(clock: FakeClock, us: int) -> None:
    clock.set(us / S)


def us(seconds: float) -> int:
    return round(seconds * S)


@pytest.mark.parametrize("algorithm", ["fixed-window", "sliding-log", "sliding-window", "gcra", "token-bucket"])
def test_fifth_passes_sixth_denied(algorithm: str) -> None:
    clock = FakeClock(START / S)
    limiter = Limiter("memory://", clock=clock, algorithm=algorithm)
    got = [limiter.hit("session", RATES) for _ in range(6)]
    assert [d.allowed for d in got] == [True] * 5 + [False]
    assert [d.remaining for d in got[:5]] == [4, 3, 2, 1, 0]
    denied = got[5]
    assert denied.limit == 5 and str(denied.rate) == "5/10 minutes"
    assert denied.retry_after > 0 and denied.retry_after_header >= 1
    # the hour window counted the 5 admitted requests and not the denied one
    hour = limiter.status("session", RATES)[1]
    assert (hour.limit, hour.remaining) == (20, 15)


def test_fixed_window_edge_belongs_to_the_new_window() -> None:
    clock = FakeClock(START / S)
    limiter = Limiter("memory://", clock=clock, algorithm="fixed-window")
    at(clock, START + 9 * MIN)
    assert all(limiter.hit("s", RATES).allowed for _ in range(5))
    d = limiter.hit("s", RATES)
    assert not d.allowed and us(d.retry_after) == MIN  # until the edge at 10:00
    at(clock, START + 10 * MIN - 1)
    assert not limiter.hit("s", RATES).allowed
    at(clock, START + 10 * MIN)  # exactly on the edge: the new window
    assert all(limiter.hit("s", RATES).allowed for _ in range(5))
    assert not limiter.hit("s", RATES).allowed


def test_sliding_log_entry_stops_counting_at_t_plus_p() -> None:
    clock = FakeClock(START / S)
    limiter = Limiter("memory://", clock=clock, algorithm="sliding-log")
    t0 = START + us(123.456789)
    at(clock, t0)
    assert all(limiter.hit("s", RATES).allowed for _ in range(5))
    d = limiter.hit("s", RATES)
    assert not d.allowed and us(d.retry_after) == 10 * MIN
    at(clock, t0 + 10 * MIN - 1)
    assert not limiter.hit("s", RATES).allowed
    at(clock, t0 + 10 * MIN)  # the entries stamped t0 no longer count
    assert all(limiter.hit("s", RATES).allowed for _ in range(5))
    assert not limiter.hit("s", RATES).allowed


@pytest.mark.parametrize("algorithm", ["gcra", "token-bucket"])
def test_token_family_refills_one_unit_per_interval(algorithm: str) -> None:
    clock = FakeClock(START / S)
    limiter = Limiter("memory://", clock=clock, algorithm=algorithm)
    assert all(limiter.hit("s", RATES).allowed for _ in range(5))
    d = limiter.hit("s", RATES)
    assert not d.allowed and us(d.retry_after) == 2 * MIN  # 10 minutes / 5
    at(clock, START + 2 * MIN - 1)
    assert not limiter.hit("s", RATES).allowed
    at(clock, START + 2 * MIN)
    assert limiter.hit("s", RATES).allowed
    assert not limiter.hit("s", RATES).allowed


def test_sliding_window_edge_weights_the_previous_window() -> None:
    clock = FakeClock(START / S)
    limiter = Limiter("memory://", clock=clock, algorithm="sliding-window")
    assert all(limiter.hit("s", RATES).allowed for _ in range(5))
    d = limiter.hit("s", RATES)
    # 5 in this window: wait for the next one, until 5 * (P - e) / P + 1 <= 5, i.e. e = P / 5
    assert not d.allowed and us(d.retry_after) == 12 * MIN
    at(clock, START + 10 * MIN)  # on the edge: the previous 5 still weigh 5
    d = limiter.hit("s", RATES)
    assert not d.allowed and us(d.retry_after) == 2 * MIN
    at(clock, START + 12 * MIN - 1)
    assert not limiter.hit("s", RATES).allowed
    at(clock, START + 12 * MIN)
    assert limiter.hit("s", RATES).allowed
    assert not limiter.hit("s", RATES).allowed


@pytest.mark.parametrize("algorithm", ["fixed-window", "sliding-log"])
def test_hour_window_denies_without_touching_the_ten_minute_window(algorithm: str) -> None:
    """20/hour is reached after four 10-minute windows of 5; the 21st request is denied by the
    hour and the 10-minute window, which would admit it, is left untouched."""
    clock = FakeClock(START / S)
    limiter = Limiter("memory://", clock=clock, algorithm=algorithm)
    for i in range(4):
        at(clock, START + i * 12 * MIN)
        assert all(limiter.hit("s", RATES).allowed for _ in range(5)), i
    at(clock, START + 50 * MIN)
    before = limiter.status("s", RATES)
    assert before[0].allowed and before[0].remaining == 5
    assert before[1].remaining == 0
    d = limiter.hit("s", RATES)
    assert not d.allowed and d.limit == 20 and str(d.rate) == "20/hour"
    assert limiter.status("s", RATES) == before


@pytest.mark.parametrize("algorithm", ["fixed-window", "sliding-log", "sliding-window", "gcra", "token-bucket"])
def test_exhausted_hour_denies_without_touching_the_ten_minute_window(algorithm: str) -> None:
    """The state of a window is (key, window): charging "20/hour" alone is seen by the pair."""
    clock = FakeClock(START / S)
    limiter = Limiter("memory://", clock=clock, algorithm=algorithm)
    at(clock, START + us(61))
    limiter.charge("s", "20/hour", 20)
    before = limiter.status("s", RATES)
    assert before[0].remaining == 5 and before[1].remaining == 0 and not before[1].allowed
    for _ in range(3):
        d = limiter.hit("s", RATES)
        assert not d.allowed and str(d.rate) == "20/hour"
    assert limiter.status("s", RATES) == before


@pytest.mark.parametrize(
    "algorithm", ["fixed-window", "sliding-log", "sliding-window", "gcra", "token-bucket", "concurrency"]
)
def test_concurrent_requests_from_one_session_never_over_admit(algorithm: str) -> None:
    limiter = Limiter("memory://", clock=FakeClock(START / S), algorithm=algorithm)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(25):
            results.append(limiter.hit("s", RATES).allowed)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 5


@pytest.mark.parametrize("rate", ["3/second", "7/minute", "6/7 seconds", "10/3ms", "5/10 minutes"])
@pytest.mark.parametrize("algorithm", ["gcra", "token-bucket"])
def test_token_family_admits_a_full_burst_whatever_the_rounding(algorithm: str, rate: str) -> None:
    """P not a multiple of the limit: the burst is still exactly the limit (gcra denied the
    3rd of "3/second" before its emission interval was rounded consistently)."""
    limiter = Limiter("memory://", clock=FakeClock(), algorithm=algorithm)
    limit = int(rate.split("/", maxsplit=1)[0])
    got = [limiter.hit("k", rate).allowed for _ in range(limit + 1)]
    assert got == [True] * limit + [False]
    assert limiter.peek("k", rate, cost=0).remaining == 0
    fresh = limiter.peek("other", rate, cost=limit)
    assert fresh.allowed and fresh.remaining == 0
