"""``Outcome`` (core/algorithms/base.py): a plain 5-tuple read through named index constants,
that every algorithm, the evaluator, every store and every fallback returns
(docs/design.md#algorithms). Plain, never a tuple subclass: the hot path builds one per decision."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ratewarden import FakeClock, Limiter
from ratewarden.core.algorithms import ALGORITHMS, NEVER, Outcome, Window, make_window
from ratewarden.core.algorithms.base import ALLOWED, NEW_STATE, REMAINING, RESET_US, RETRY_US
from ratewarden.core.evaluate import run
from ratewarden.core.rates import parse_rate
from ratewarden.storage import open_store

PG_URL = "postgresql://root@127.0.0.1:5432/test"
NOW = 1_767_225_600_000_000


def window(algorithm: str, limit: int = 3) -> Window:
    return make_window(algorithm, parse_rate(f"{limit}/day" if algorithm == "quota" else f"{limit}/minute"))


def is_outcome(o: object) -> bool:
    """A plain tuple (no subclass) of the five fields, ``allowed`` a bool and the numbers ints."""
    return (
        type(o) is tuple
        and len(o) == 5
        and type(o[ALLOWED]) is bool
        and all(type(o[i]) is int for i in (REMAINING, RESET_US, RETRY_US))
    )


def test_the_fields_are_named() -> None:
    assert (ALLOWED, REMAINING, RESET_US, RETRY_US, NEW_STATE) == (0, 1, 2, 3, 4)
    o: Outcome = (False, 2, 30, 40, "s")
    assert (o[ALLOWED], o[REMAINING], o[RESET_US], o[RETRY_US], o[NEW_STATE]) == (False, 2, 30, 40, "s")
    assert is_outcome(o)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_returns_outcomes_on_every_path(algorithm: str) -> None:
    w = window(algorithm)
    seen: list[Any] = []
    state = None
    for _ in range(4):  # admitted, admitted, admitted, denied
        o = w.decide(state, NOW, 1)
        seen.append(o)
        if o[ALLOWED]:
            state = o[NEW_STATE]
    assert [o[ALLOWED] for o in seen] == [True, True, True, False]
    seen.append(w.decide(state, NOW, 0))  # a check
    never = w.decide(state, NOW, w.capacity + 1)
    assert never[RETRY_US] == NEVER and not never[ALLOWED]
    seen.append(never)
    seen.append(w.decide(state, NOW - 10_000_000, 1))  # the clock stepped back
    assert all(is_outcome(o) for o in [*seen, never]), seen
    for op in ("hit", "peek", "charge", "acquire", "release"):
        if op == "charge" and algorithm == "concurrency":
            continue
        outs, _ = run(op, [w], [state], NOW, [1], "lease-1")  # type: ignore[arg-type]
        assert is_outcome(outs[0]), op


@pytest.fixture
def pg_store() -> Iterator[Any]:
    psycopg = pytest.importorskip("psycopg")
    schema = f"rwtest_{uuid.uuid4().hex[:10]}"
    store = open_store(PG_URL, schema=schema, statement_timeout=10)
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _stores(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    kind = request.param
    if kind == "memory":
        return open_store("memory://", clock=FakeClock())
    if kind == "sqlite":
        return open_store(f"sqlite:///{tmp_path / 'rl.db'}", clock=FakeClock())
    if kind == "redis":
        prefix = request.getfixturevalue("redis_prefix")
        return open_store(request.getfixturevalue("redis_url"), key_prefix=prefix)
    return request.getfixturevalue("pg_store")


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    s = _stores(request, tmp_path)
    yield s
    if request.param != "postgres":  # pg_store closes its own
        s.close()


@pytest.mark.parametrize("algorithm", ["gcra", "sliding-log", "concurrency", "quota"])
def test_every_store_returns_outcomes(store: Any, algorithm: str) -> None:
    w = window(algorithm, 2)
    w2 = make_window(algorithm, parse_rate("5/month" if algorithm == "quota" else "5/hour"))  # another period
    outs: list[Any] = []
    for _ in range(3):  # admitted twice, then denied (the denial may come from a cache in Redis)
        outs.append(store.hit1("k", w, 1))
    assert [o[ALLOWED] for o in outs] == [True, True, False]
    outs += store.apply("hit", [("k2", w, 1), ("k2", w2, 1)])
    outs += store.apply("peek", [("k2", w, 1), ("k2", w2, 1)])
    outs += store.apply("acquire", [("k3", w, 1)], "lease-1")
    outs += store.apply("release", [("k3", w, 0)], "lease-1")
    if algorithm != "concurrency":
        outs += store.apply("charge", [("k4", w, 5)])
    outs.append(store.hit1("k5", w, 3))  # a cost above the limit
    assert outs[-1][RETRY_US] == NEVER
    assert all(is_outcome(o) for o in outs), outs


async def test_async_faces_return_outcomes(store: Any) -> None:
    if not hasattr(store, "aapply"):
        pytest.skip(f"{store.kind} has no async face")
    w = window("gcra", 1)
    outs = [*await store.aapply("hit", [("a", w, 1)]), *await store.aapply("hit", [("a", w, 1)])]
    if hasattr(store, "ahit1"):
        outs.append(await store.ahit1("a", w, 1))
    await store.aclose()
    assert [o[ALLOWED] for o in outs][:2] == [True, False]
    assert all(is_outcome(o) for o in outs), outs


@pytest.mark.parametrize("mode", ["allow", "deny", "local"])
def test_the_limiters_fallbacks_are_outcomes(mode: str) -> None:
    lim = Limiter("redis://127.0.0.1:9/0?socket_timeout=0.2", on_store_error=mode, deny_retry_after=1.5)
    try:
        windows = lim.windows("2/minute", None)
        outs = lim._run("hit", "k", windows, 1)
        assert lim.store_errors == 1
        assert all(is_outcome(o) for o in outs), outs
        d = lim.hit("k", "2/minute")
        assert d.reason == "store_unavailable"
        if mode == "deny":
            assert outs[0][RETRY_US] == 1_500_000 and d.retry_after == 1.5
    finally:
        lim.close()
