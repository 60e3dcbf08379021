"""``Decision.retry_after_header`` (docs/design.md#denials-are-free): ``ceil(retry_after)`` whole seconds,
never 0 on a denial; 0 when allowed."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ratewarden import FakeClock, Limiter
from ratewarden.core.algorithms import NEVER, FixedWindow
from ratewarden.core.decision import deciding_index, to_decision
from ratewarden.core.rates import Rate

S = 1_000_000
W = FixedWindow(Rate(5, 60 * S))


@settings(max_examples=300, deadline=None)
@given(retry_us=st.one_of(st.integers(1, 10 * S), st.integers(1, 10**13), st.sampled_from([1, S - 1, S, S + 1])))
def test_header_is_ceil_and_never_zero_on_a_denial(retry_us: int) -> None:
    d = to_decision(W, (False, 0, retry_us, retry_us, None), "k")
    assert not d.allowed
    assert d.retry_after_header == max(1, -(-retry_us // S))  # integer ceiling, exact
    assert d.retry_after_header >= 1
    assert d.retry_after_header >= d.retry_after


def test_header_is_zero_when_allowed() -> None:
    assert to_decision(W, (True, 4, 12 * S, 0, (0, 1)), "k").retry_after_header == 0


@settings(max_examples=100, deadline=None)
@given(step_us=st.integers(0, 70 * S), n=st.integers(1, 12))
def test_limiter_headers(step_us: int, n: int) -> None:
    clock = FakeClock()
    limiter = Limiter("memory://", clock=clock, algorithm="fixed-window")
    clock.advance(step_us / S)
    for _ in range(n):
        d = limiter.hit("k", "5/minute")
        if d.allowed:
            assert d.retry_after_header == 0
        else:
            assert d.retry_after_header == math.ceil(d.retry_after) >= 1


def test_header_of_a_cost_that_can_never_pass() -> None:
    d = to_decision(W, (False, 5, 0, NEVER, None), "k")
    assert d.reason == "cost_exceeds_limit" and math.isinf(d.retry_after)
    assert d.retry_after_header != 0


def test_deciding_window_is_the_longest_wait() -> None:
    outs = [(False, 0, 5, 5, None), (True, 3, 9, 0, None), (False, 0, 7, 7, None)]
    assert deciding_index(outs) == 2
    outs.append((False, 1, 1, NEVER, None))
    assert deciding_index(outs) == 3
    allowed = [(True, 3, 9, 0, None), (True, 1, 2, 0, None), (True, 1, 4, 0, None)]
    assert deciding_index(allowed) == 2
