"""Differential tests: the PL/pgSQL functions against the pure Python core, on the real PostgreSQL.

Hypothesis generates sequences of (time step, operation, cost) over one to three windows (any
mix of algorithms, one or two keys); every step runs once through the PostgreSQL store (one
function call, with the store's test hook giving the functions the injected time instead of
clock_timestamp()) and once through ``core.evaluate.run`` on a dict of states. The outcomes must
be equal to the microsecond (allowed, remaining, reset, retry_after), and so must the state the
table holds, decoded. The strategies are the Redis scripts' (the same ports, the same encodings).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratewarden import FakeClock, StoreError
from ratewarden.core.algorithms import ALGORITHMS, Quota, Window, make_window
from ratewarden.core.evaluate import run
from ratewarden.core.rates import US, Rate

from .backends import PG_SCHEMA, PG_URL, pg_conn
from .diff_scenarios import DAY, START, scenarios

psycopg = pytest.importorskip("psycopg")
from ratewarden.storage.postgres import PostgresStore, db_key, decode_state, open_postgres  # noqa: E402
from ratewarden.storage.postgres._codec import parse  # noqa: E402

pytestmark = pytest.mark.postgres
conn = pg_conn


def _open(clock: FakeClock) -> PostgresStore:
    prefix = f"rwdiff:{uuid.uuid4().hex[:10]}:"
    return open_postgres(PG_URL, key_prefix=prefix, _test_now=clock, schema=PG_SCHEMA, statement_timeout=10)


def _raw(conn: Any, store: PostgresStore, key: str, w: Window) -> Any:
    k = db_key(store.key_prefix, key)
    row = conn.execute(f"SELECT state FROM {store.names.state} WHERE key = %s AND wid = %s", (k, w.id)).fetchone()
    if row is not None and w.name == "concurrency":  # the leases are rows; those up to the cut are dropped
        leases = conn.execute(
            f"SELECT ex, id, cost FROM {store.names.s}lease WHERE key = %s AND wid = %s AND ex > %s "
            "ORDER BY ex, id, cost",
            (k, w.id, int(row[0].split()[1])),
        ).fetchall()
        return " ".join(f"{ex} {i or '-'} {c}" for ex, i, c in leases) or None
    if row is None or w.name != "sliding-log":
        return None if row is None else row[0]
    entries = conn.execute(
        f"SELECT ts, cost FROM {store.names.s}log WHERE key = %s AND wid = %s ORDER BY ts", (k, w.id)
    ).fetchall()
    return " ".join(f"{ts} {c}" for ts, c in entries)  # the entries, in the encoding decode_state reads


def _set(conn: Any, store: PostgresStore, key: str, w: Window, raw: str) -> None:
    conn.execute(
        f"INSERT INTO {store.names.state} (key, wid, state, expires) VALUES (%s, %s, %s, 4000000000) "
        "ON CONFLICT (key, wid) DO UPDATE SET state = excluded.state",
        (db_key(store.key_prefix, key), w.id, raw),
    )


def _cleanup(conn: Any, store: PostgresStore) -> None:
    for table in (store.names.state, f"{store.names.s}log", f"{store.names.s}lease"):
        conn.execute(f"DELETE FROM {table} WHERE starts_with(key, %s)", (store.key_prefix,))
    store.close()


def check(
    conn: Any, items: list[tuple[str, Window]], steps: list[tuple[Any, ...]], hit1: bool = False, start: int = START
) -> None:
    clock = FakeClock(start / US)
    store = _open(clock)
    states: dict[tuple[str, str], Any] = {}
    now = start
    try:
        for dt, op, cost, lease in steps:
            now += dt
            clock.set(now / US)
            assert int(clock() * US + 0.5) == now
            wins = [w for _, w in items]
            costs = [cost] * len(items)
            arg = lease if op in ("acquire", "release") else ""
            old = [states.get((k, w.id)) for k, w in items]
            try:
                want, new = run(op, wins, old, now, costs, arg)
            except NotImplementedError:  # charging a concurrency lease: the store refuses alike
                with pytest.raises(NotImplementedError):
                    store.apply(op, [(k, w, cost) for k, w in items], arg)
                continue
            if hit1 and op == "hit" and len(items) == 1:
                got = [store.hit1(items[0][0], items[0][1], cost)]
            else:
                got = store.apply(op, [(k, w, cost) for k, w in items], arg)
            assert [o[:4] for o in got] == [o[:4] for o in want], (op, cost, now - start)
            if new is not None:
                for (k, w), s, o in zip(items, new, want, strict=True):
                    if s is None or o[2] <= 0:
                        states.pop((k, w.id), None)
                    else:
                        states[k, w.id] = s
            for k, w in items:
                assert decode_state(w, _raw(conn, store, k, w)) == states.get((k, w.id)), (w, k)
    finally:
        _cleanup(conn, store)


SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@SETTINGS
@given(data=st.data())
def test_each_algorithm_matches_the_core(conn: Any, algorithm: str, data: st.DataObject) -> None:
    items, steps = data.draw(scenarios([algorithm]))
    check(conn, items, steps, hit1=True)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_mixed_windows_and_keys_match_the_core(conn: Any, data: st.DataObject) -> None:
    items, steps = data.draw(scenarios(sorted(ALGORITHMS)))
    check(conn, items, steps)


DST_2026 = 1_774_746_000 * US  # 2026-03-29T01:00:00Z: Europe's clocks go forward (a 23-hour day)


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris"])
@pytest.mark.parametrize("period", [DAY, 30 * DAY])
def test_quota_clock_stepping_back_by_more_than_a_period(conn: Any, tz: str, period: int) -> None:
    """The clock steps back by more than the periods the client sends bounds for: the
    functions decide in the state's own period from the end stored with it, like the core."""
    items = [("a", make_window("quota", Rate(5, period), tz=tz, reset="02:30"))]
    steps = [
        (0, "hit", 1, ""),
        (-period, "hit", 1, ""),
        (-period, "hit", 2, ""),
        (-1, "peek", 1, ""),
        (-period // 2, "charge", 1, ""),
        (-period, "hit", 1, ""),
        (0, "hit", 5, ""),
        (3 * period, "hit", 1, ""),
        (-4 * period, "hit", 0, ""),
    ]
    for start in (START, DST_2026, DST_2026 + DAY // 2):
        check(conn, items, steps, start=start)


def test_quota_states_written_without_their_end_are_still_read(conn: Any) -> None:
    """A state of the two-number form ("start used") counts in its period; beyond the bounds
    the client sent the functions refuse (clock skew) rather than guess, and write nothing."""
    w = make_window("quota", Rate(5, DAY))
    assert isinstance(w, Quota)
    clock = FakeClock(START / US)
    store = _open(clock)
    day0 = w.calendar.bounds(START)[0]
    try:
        _set(conn, store, "a", w, f"{day0} 3")
        now = START + 1_000
        clock.set(now / US)
        want = w.decide((day0, 3), now, 1)
        assert store.hit1("a", w, 1)[:4] == want[:4]
        assert decode_state(w, _raw(conn, store, "a", w)) == want[4] == (day0, 4)
        _set(conn, store, "a", w, f"{day0 + 2 * DAY} 3")  # two periods ahead, no end stored
        with pytest.raises(StoreError, match="clock skew"):
            store.hit1("a", w, 1)
        assert _raw(conn, store, "a", w) == f"{day0 + 2 * DAY} 3"
    finally:
        _cleanup(conn, store)


def test_a_deliberate_difference_is_caught(conn: Any) -> None:
    """The comparison can fail: a core window with a different limit disagrees with the store."""
    w5 = make_window("fixed-window", Rate(5, 60 * US))
    w4 = make_window("fixed-window", Rate(4, 60 * US))
    store = _open(FakeClock(START / US))
    try:
        got = store.apply("hit", [("a", w5, 1)])
        want, _ = run("hit", [w4], [None], START, [1])
        assert got[0][:4] != want[0][:4]
    finally:
        _cleanup(conn, store)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_a_batch_matches_the_core_run_request_by_request(conn: Any, data: st.DataObject) -> None:
    """The asyncio face sends the requests that queued up as one batch call: they run one after
    the other in it, so the outcomes must be those of the core applied request by request (a
    later request sees what an earlier one wrote, denials write nothing). The requests are cut
    into several batches, each at its own time (the scenario's steps, backward ones too)."""
    items, steps = data.draw(scenarios(sorted(ALGORITHMS)))
    batches: list[tuple[int, list[tuple[Any, ...]]]] = []
    for i, (dt, step_op, cost, lease) in enumerate(steps):
        its = [(k, w) for k, w in items if data.draw(st.booleans(), label="in")] or items[:1]
        lease_charged = step_op == "charge" and any(w.name == "concurrency" for _, w in its)
        request = (its, "hit" if lease_charged else step_op, cost, lease)  # no charge of a lease
        if i == 0 or data.draw(st.booleans(), label="new call"):
            batches.append((dt if i else 0, []))
        batches[-1][1].append(request)
    clock = FakeClock(START / US + data.draw(st.integers(0, 10**6)))
    now = int(clock() * US + 0.5)
    store = _open(clock)
    states: dict[tuple[str, str], Any] = {}
    try:
        for dt, requests in batches:
            now += dt
            clock.set(now / US)
            reqs = [
                store._req(op, [(k, w, cost) for k, w in its], lease if op in ("acquire", "release") else "")
                for its, op, cost, lease in requests
            ]
            replies = store._split(reqs, store._call(store.names.batch, store._batch_args(reqs, 0)), 0)
            got = [o for r, q in zip(replies, reqs, strict=True) for o in parse(r, len(q[2]))]
            want = []
            for its, op, cost, lease in requests:
                arg = lease if op in ("acquire", "release") else ""
                outs, new = run(
                    op, [w for _, w in its], [states.get((k, w.id)) for k, w in its], now, [cost] * len(its), arg
                )
                want += outs
                if new is not None:
                    for (k, w), s, o in zip(its, new, outs, strict=True):
                        if s is None or o[2] <= 0:
                            states.pop((k, w.id), None)
                        else:
                            states[k, w.id] = s
            assert [o[:4] for o in got] == [o[:4] for o in want], now - START
            for k, w in items:
                assert decode_state(w, _raw(conn, store, k, w)) == states.get((k, w.id))
    finally:
        _cleanup(conn, store)


async def test_the_async_face_batches_concurrent_calls_exactly(conn: Any) -> None:
    """200 concurrent calls on 3 keys through the asyncio face (most of them batched): exactly
    the limit of each key is admitted, and the table holds exactly that count."""
    from ratewarden import AsyncLimiter

    clock = FakeClock(START / US)
    prefix = f"rwdiff:{uuid.uuid4().hex[:10]}:"
    url = f"{PG_URL}?schema={PG_SCHEMA}"
    lim = AsyncLimiter(url, key_prefix=prefix, clock=clock, _test_now=clock, algorithm="fixed-window")
    try:
        got = await asyncio.gather(*(lim.hit(f"k{i % 3}", "50/minute") for i in range(200)))
        admitted = [sum(d.allowed for d, i in zip(got, range(200), strict=True) if i % 3 == j) for j in range(3)]
        assert admitted == [50, 50, 50]
        assert lim.store_errors == 0
    finally:
        _cleanup(conn, lim.store)
        await lim.aclose()
