"""Invariants at the engine level: exact admission and all-or-nothing across rules (a model-based
hypothesis test), and no over-admission under threads."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st
from rw_engine_helpers import req

from ratewarden import FakeClock
from ratewarden.engine import Engine
from ratewarden.policy import loads_policy

POLICY = loads_policy(
    """
[[rule]]
name = "all"
limits = ["5/minute"]
algorithm = "fixed-window"

[[rule]]
name = "x"
match = { path = "/x*" }
limits = ["2/minute"]
algorithm = "fixed-window"

[[rule]]
name = "user"
match = { path = "/x/u" }
key = "user"
fallback = "skip"
limits = ["1/minute"]
algorithm = "fixed-window"
"""
)

steps = st.lists(
    st.tuples(st.sampled_from(["/", "/x", "/x/u", "/y"]), st.sampled_from([None, "ann", "ben"]), st.integers(0, 40)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps)
def test_engine_matches_an_all_or_nothing_model(steps: list[tuple[str, str | None, int]]) -> None:
    clock = FakeClock()
    e = Engine(POLICY, clock=clock)
    counts: dict[tuple[str, str, int], int] = {}
    try:
        for path, user, advance in steps:
            clock.advance(advance)
            minute = int(clock() // 60)
            keys = [("all", "ip", minute)]
            limits = [5]
            if path.startswith("/x"):
                keys.append(("x", "ip", minute))
                limits.append(2)
            if path == "/x/u" and user is not None:
                keys.append(("user", user, minute))
                limits.append(1)
            expect = all(counts.get(k, 0) < n for k, n in zip(keys, limits, strict=True))
            if expect:
                for k in keys:
                    counts[k] = counts.get(k, 0) + 1
            v = e.check(req(path, user=user))
            assert v.allowed == expect, (path, user, clock())
            assert v.status == (200 if expect else 429)
    finally:
        e.close()


def test_no_over_admission_under_threads() -> None:
    e = Engine(POLICY, clock=FakeClock())
    admitted: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        n = sum(e.check(req("/x")).allowed for _ in range(50))
        with lock:
            admitted.append(n)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    e.close()
    assert sum(admitted) == 2
