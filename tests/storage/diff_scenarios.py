"""The generated scenarios of the differential tests (a store's scripts or functions against the
pure core, step by step): one to three windows of any algorithms over one or two keys, and
sequences of (time step, operation, cost, lease), the clock stepping back included. One copy,
used by the Redis and the PostgreSQL differential tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from ratewarden.core.algorithms import Window, make_window
from ratewarden.core.rates import US, Rate

DAY = 86_400 * US
PERIODS = [US, 7 * US + 3, 60 * US, 3_600 * US]
START = 1_767_225_600 * US  # 2026-01-01T00:00:00Z
TZS = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]


@st.composite
def windows(draw: st.DrawFn, algorithms: list[str]) -> Window:
    algo = draw(st.sampled_from(algorithms))
    limit = draw(st.integers(1, 12))
    if algo == "quota":
        period = draw(st.sampled_from([DAY, 30 * DAY]))
        tz = draw(st.sampled_from(TZS))
        reset = draw(st.sampled_from(["00:00", "02:30", "23:59"]))
        return make_window(algo, Rate(limit, period), tz=tz, reset=reset)
    period = draw(st.sampled_from(PERIODS))
    if algo in ("gcra", "token-bucket") and draw(st.booleans()):
        return make_window(algo, Rate(limit, period), burst=draw(st.integers(1, 15)))
    return make_window(algo, Rate(limit, period))


def back_steps(items: list[tuple[str, Window]]) -> st.SearchStrategy[int]:
    """The clock stepping back (an NTP step, a fail-over to a server whose clock is behind):
    by a microsecond, up to a millisecond, a few milliseconds, a whole window (and a bit), and
    a whole day (or two) when a quota is in play."""
    periods = sorted({w.period for _, w in items})
    backs = [
        st.just(-1),
        st.integers(-1_000, -1),
        st.integers(-20_000, -1_000),
        st.sampled_from([-p for p in periods] + [-p - 1 for p in periods] + [-p + 1 for p in periods]),
    ]
    if any(w.name == "quota" for _, w in items):
        backs.append(st.sampled_from([-DAY, -DAY - 1, -2 * DAY, -DAY // 2]))
    return st.one_of(*backs)


@st.composite
def scenarios(draw: st.DrawFn, algorithms: list[str]) -> tuple[list[tuple[str, Window]], list[tuple[Any, ...]]]:
    n = draw(st.integers(1, 3))
    items: list[tuple[str, Window]] = []
    ids: set[tuple[str, str]] = set()
    for _ in range(n):
        w = draw(windows(algorithms))
        key = draw(st.sampled_from(["a", "b"]))
        if (key, w.id) not in ids:
            ids.add((key, w.id))
            items.append((key, w))
    biggest = max(w.period for _, w in items)
    longest = min(biggest, 2 * DAY)
    step = st.one_of(
        st.just(0),
        st.integers(1, 1_000),
        st.integers(0, max(1, longest // 8)),
        st.integers(0, longest + longest // 2),
        st.sampled_from([w.period for _, w in items]),
        back_steps(items),
    )
    op = st.sampled_from(["hit", "hit", "hit", "peek", "charge", "acquire", "release"])
    steps = draw(
        st.lists(
            st.tuples(step, op, st.integers(0, 14), st.sampled_from(["l1", "l2", "l3", ""])), min_size=1, max_size=25
        )
    )
    return items, steps
