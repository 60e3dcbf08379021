"""The two rules core/decision.py writes once for everyone (docs/design.md#algorithms and
#denials-are-free): which window decides (``deciding_index``), and the ``Retry-After`` rounding
(``retry_after_seconds``)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratewarden.core.algorithms import NEVER, FixedWindow, Outcome
from ratewarden.core.decision import deciding_index, retry_after_seconds, to_decision
from ratewarden.core.rates import parse_rate
from ratewarden.http import headers, responses
from ratewarden.service import decide as service_decide

S = 1_000_000
W1, W2 = FixedWindow(parse_rate("5/minute")), FixedWindow(parse_rate("50/hour"))


def out(allowed: bool, remaining: int, reset_us: int, retry_us: int) -> Outcome:
    return (allowed, remaining, reset_us, retry_us, None)


# -- Retry-After ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "header"),
    [(1e-6, 1), (0.5, 1), (1.0, 1), (1.000001, 2), (59.5, 60), (240.0, 240), (math.inf, None), (math.nan, None)],
)
def test_retry_after_is_ceil_never_zero_none_when_never(seconds: float, header: int | None) -> None:
    assert retry_after_seconds(seconds) == header


def test_one_retry_after_rounding_serves_every_caller() -> None:
    assert headers.retry_after_seconds is retry_after_seconds
    assert responses.retry_after_seconds is retry_after_seconds
    never = to_decision(W1, out(False, 0, 0, NEVER), "k")
    assert never.retry_after_header is None
    assert to_decision(W1, out(False, 0, S, S + 1), "k").retry_after_header == 2
    assert to_decision(W1, out(True, 4, S, 0), "k").retry_after_header == 0


# -- which window decides ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outs", "index"),
    [
        ([out(True, 3, 5, 0), out(True, 1, 5, 0)], 1),  # fewest left
        ([out(True, 1, 5, 0), out(True, 1, 9, 0)], 1),  # then the latest reset
        ([out(True, 1, 9, 0), out(True, 1, 5, 0)], 0),
        ([out(True, 0, 9, 0), out(False, 4, 5, 5)], 1),  # a denial beats any admission
        ([out(False, 0, 5, 5), out(False, 0, 7, 7)], 1),  # the longest wait
        ([out(False, 0, 7, 7), out(False, 0, 7, 7)], 0),  # ties keep the first
        ([out(False, 0, 5, NEVER), out(False, 0, 7, 7)], 0),  # a cost that never fits beats any wait
        ([out(False, 0, 7, 7), out(False, 0, 5, NEVER)], 1),
    ],
)
def test_deciding_index(outs: list[Outcome], index: int) -> None:
    assert deciding_index(outs) == index
    assert deciding_index([out(True, 9, 0, 0), *outs]) == index + 1  # the loop agrees with the unrolled pair
    assert deciding_index([*outs, out(True, 9, 0, 0)]) == index


def test_the_decision_service_decides_by_the_same_rule() -> None:
    """The service's per-rule fold used to keep its own copy, in which a later finite wait
    replaced a window that can never pass (``retry_after`` became finite: a client would retry)."""
    g = service_decide._fold([W1, W2], [out(False, 5, 0, NEVER), out(False, 0, 9 * S, 9 * S)])
    assert g.limit == 5 and math.isinf(g.retry_after)
    g = service_decide._fold([W1, W2], [out(True, 2, 10 * S, 0), out(True, 2, 20 * S, 0)])
    assert g.limit == 50 and g.reset_after == 20.0  # equal units left: the later reset (as Decision)


# -- the same rule over header states ---------------------------------------------------------

_state = st.builds(
    headers.PolicyState,
    name=st.just("r"),
    limit=st.just(10),
    window=st.just(60.0),
    remaining=st.integers(0, 10),
    reset_after=st.integers(0, 120).map(float),
    allowed=st.booleans(),
    retry_after=st.one_of(st.integers(0, 120).map(float), st.just(math.inf)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_state, min_size=1, max_size=5))
def test_headers_and_the_service_pick_the_window_the_core_rule_picks(states: list[headers.PolicyState]) -> None:
    """Legacy headers and the service's top-level numbers show the window ``deciding_index``
    picks: on a denial the longest wait (never beats any finite wait), else the fewest units
    left, then the latest reset; the first of equals."""
    outs = [
        out(
            s.allowed,
            s.remaining,
            round(s.reset_after * S),
            NEVER if math.isinf(s.retry_after) else round(s.retry_after * S),
        )
        for s in states
    ]
    assert headers.most_restrictive(states) is states[deciding_index(outs)]


def test_no_other_copy_of_the_deciding_rule() -> None:
    """The rule is written once: no module but core/decision.py sorts windows by wait or by
    units left (the copies that were in http/headers.py and service/decide.py are gone)."""
    import re
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src" / "ratewarden"
    copy = re.compile(r"key=lambda \w+: \(?\w+\.(remaining|retry_after)")
    found = [str(p.relative_to(src)) for p in src.rglob("*.py") if copy.search(p.read_text())]
    assert not found, f"a copy of the deciding rule in {found}"
