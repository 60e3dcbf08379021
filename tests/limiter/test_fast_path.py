"""``Limiter.hit``'s fast path (a rate string seen before, plain arguments) decides exactly as the
general path (the same rates as ``Rate`` objects): the same Decisions, step by step, for every
algorithm, one window and two, over generated costs and time steps (docs/design.md#the-store-contract)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratewarden import ALGORITHMS, FakeClock, Limiter, parse_rates

SPECS = ["3/10s", "3/10s;5/minute"]
steps = st.lists(
    st.tuples(st.integers(0, 4), st.sampled_from([0.0, 0.001, 0.4, 1.7, 3.3, 9.0, 30.0])),
    min_size=1,
    max_size=25,
)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("algorithm", sorted(a for a in ALGORITHMS if a not in ("concurrency", "quota")))
@settings(max_examples=40, deadline=None)
@given(history=steps)
def test_the_fast_path_is_the_general_path(algorithm: str, spec: str, history: list[tuple[int, float]]) -> None:
    clock = FakeClock(1_800_000_000.0)
    fast = Limiter("memory://", clock=clock, algorithm=algorithm)
    general = Limiter("memory://", clock=clock, algorithm=algorithm)
    rates = list(parse_rates(spec))
    fast.hit("warm", spec)  # compiles the string: later hits of it take the fast path
    assert spec in fast._fast
    for cost, dt in history:
        clock.advance(dt)
        got = fast.hit("k", spec, cost)
        want = general.hit("k", rates, cost)
        assert got == want, (algorithm, spec, cost, clock())


def test_the_hot_paths_allocate_no_closure_cells() -> None:
    """A comprehension or lambda inside a hot function makes the names it reads closure cells,
    allocated on every call (about 100 instructions per hit, callgrind): the hot paths keep
    them in helpers of their own (``limiter._items``, ``MemoryStore._write_items``)."""
    from ratewarden.core.decision import deciding_index
    from ratewarden.limiter import AsyncLimiter
    from ratewarden.storage.memory import MemoryStore

    hot = [Limiter.hit, AsyncLimiter.hit, MemoryStore.hit1, MemoryStore.apply, deciding_index]
    hot += [cls.decide for cls in ALGORITHMS.values()]
    for fn in hot:
        assert fn.__code__.co_cellvars == (), fn.__qualname__
