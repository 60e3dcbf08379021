"""Concurrency on the PostgreSQL store at scale: leases as rows, bounded work per call, exact.

* 20,000 live leases (mixed costs, anonymous ones, many equal expiries) and a random sequence of
  acquires, checks, peeks and releases with the clock going forward (thousands of leases
  expiring between two calls) and back: every outcome and the held leases equal the core's, a
  call deletes at most TRIM expired leases, and the state row stays a few numbers;
* the work of one call counted in the lease table (``pg_stat_xact_user_tables``: rows fetched
  and deleted) at 20,000 live leases, and after 20,000 expired at once;
* a database of schema version 1 (leases in a text state) migrated to rows decides as before.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest

from ratewarden import FakeClock
from ratewarden.core.algorithms import Window, make_window
from ratewarden.core.evaluate import run
from ratewarden.core.rates import US, Rate

from .backends import PG_SCHEMA, PG_URL, pg_conn

psycopg = pytest.importorskip("psycopg")
from ratewarden.storage.postgres import PostgresStore, db_key, open_postgres  # noqa: E402
from ratewarden.storage.postgres._codec import parse  # noqa: E402
from ratewarden.storage.postgres._leases import TRIM  # noqa: E402
from ratewarden.storage.postgres._schema import migrate  # noqa: E402

pytestmark = pytest.mark.postgres
conn = pg_conn

START = 1_767_225_600 * US
TTL = 10 * US
N = 20_000
Lease = tuple[int, str, int]


def _open(clock: FakeClock, schema: str = PG_SCHEMA, prefix: str = "") -> PostgresStore:
    prefix = prefix or f"rwlease:{uuid.uuid4().hex[:10]}:"
    return open_postgres(PG_URL, key_prefix=prefix, _test_now=clock, schema=schema, statement_timeout=30)


def _leases(rnd: random.Random, n: int) -> tuple[Lease, ...]:
    """n leases expiring within TTL of START, about two per expiry, ids repeated, costs mixed."""
    ids = ["", "", "", "a", "b", "c", "é", "B"]
    return tuple(
        sorted(
            (
                START + rnd.randrange(1, TTL // 1_000) * 1_000,
                rnd.choice([*ids, f"l{i}"]),
                rnd.choice([1, 1, 1, 2, 3, 7]),
            )
            for i in range(n)
        )
    )


def _fill(conn: Any, store: PostgresStore, key: str, w: Window, leases: tuple[Lease, ...]) -> None:
    """Write leases as the store keeps them (rows, and "used cut dsum seq ch cs")."""
    k = db_key(store.key_prefix, key)
    store.hit1("warm", make_window("fixed-window", Rate(1, US)), 1)  # the schema is installed
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {store.names.s}lease (key, wid, ex, seq, id, cost) VALUES (%s, %s, %s, %s, %s, %s)",
            [(k, w.id, ex, i, lid, c) for i, (ex, lid, c) in enumerate(leases, 1)],
        )
    used = sum(c for _, _, c in leases)
    conn.execute(
        f"INSERT INTO {store.names.state} (key, wid, state, expires) VALUES (%s, %s, %s, 4000000000)",
        (k, w.id, f"{used} 0 0 {len(leases)} 0 0"),
    )


def _held(conn: Any, store: PostgresStore, key: str, w: Window) -> tuple[Any, tuple[Lease, ...], int]:
    """The state row's text, the leases the core would hold (the rows after the cut), all rows."""
    k = db_key(store.key_prefix, key)
    row = conn.execute(f"SELECT state FROM {store.names.state} WHERE key = %s AND wid = %s", (k, w.id)).fetchone()
    rows = conn.execute(
        f"SELECT ex, id, cost FROM {store.names.s}lease WHERE key = %s AND wid = %s", (k, w.id)
    ).fetchall()
    if row is None:
        return None, (), len(rows)
    cut = int(row[0].split()[1])
    return row[0], tuple(sorted((ex, i, c) for ex, i, c in rows if ex > cut)), len(rows)


def _count(conn: Any, store: PostgresStore, key: str, w: Window) -> int:
    k = db_key(store.key_prefix, key)
    q = f"SELECT count(*) FROM {store.names.s}lease WHERE key = %s AND wid = %s"
    return int(conn.execute(q, (k, w.id)).fetchone()[0])


def _step(store: PostgresStore, w: Window, state: Any, now: int, op: str, cost: int, lease: str, where: Any) -> Any:
    """One call on the store and on the core, outcomes equal: the core's next state, outcomes and
    state change (``run``'s)."""
    want, new = run(op, [w], [state], now, [cost], lease)
    got = store.apply(op, [("k", w, cost)], lease)  # type: ignore[arg-type]
    assert [o[:4] for o in got] == [o[:4] for o in want], where
    if new is not None:
        state = new[0] if new[0] and want[0][2] > 0 else None
    return state, want, new


@pytest.mark.parametrize("seed", [1, 2])
def test_20000_live_leases_decide_as_the_core(conn: Any, seed: int) -> None:
    rnd = random.Random(seed)
    leases = _leases(rnd, N)
    used = sum(c for _, _, c in leases)
    w = make_window("concurrency", Rate(used + 40, TTL))
    clock = FakeClock(START / US)
    store = _open(clock)
    state: Any = leases
    now = START
    try:
        _fill(conn, store, "k", w, leases)
        for i in range(200):
            dt = rnd.choice([0, 1, 1_000, 1_000, 20_000, 20_000, 150_000, 700_000, -1, -5_000, -2 * US])
            now += dt
            clock.set(now / US)
            op = rnd.choice(["acquire"] * 4 + ["hit", "hit", "peek", "release", "release"])
            cost = rnd.choice([0, 1, 1, 2, 5, 30, 200, 10**9])
            lease = rnd.choice(["", "a", "b", "é", "x", "y", "l7"]) if op in ("acquire", "release") else ""
            before = _count(conn, store, "k", w)
            text = _held(conn, store, "k", w)[0]
            behind = text is not None and now + TTL <= int(text.split()[1])  # a TTL behind the cut
            named = sum(1 for x in state or () if x[1] == lease and x[0] > now) if op == "release" and lease else 0
            state, want, new = _step(store, w, state, now, op, cost, lease, (i, op, cost, lease, now - START))
            after = _count(conn, store, "k", w)
            added = 1 if new is not None and op in ("acquire", "hit") and cost and want[0][0] else 0
            # at most TRIM expired leases go per call (and a release's own), except in a write a
            # whole TTL behind the cut, which deletes the dropped leases after its now first
            if not (behind and added):
                assert before - after + added <= TRIM + named, (i, op, dt, cost, lease)
            if i % 40 == 0 or i == 199:
                text, held, _ = _held(conn, store, "k", w)
                assert held == (state or ()), i
                assert text is None or len(text) < 120  # a few numbers, never the leases
    finally:
        store.close()


@pytest.mark.parametrize("seed", range(20))
def test_expired_backlogs_and_clock_steps_decide_as_the_core(conn: Any, seed: int) -> None:
    """Hundreds of leases expiring between two calls (more than TRIM: the cut, the dropped sum and
    the cache of a read are in play), the clock stepping back below them, named releases of
    leases around the cut: outcomes and held leases equal the core's after every call."""
    rnd = random.Random(1000 + seed)
    leases = _leases(rnd, 400)
    w = make_window("concurrency", Rate(sum(c for _, _, c in leases) + rnd.choice([-30, 0, 20]), TTL))
    clock = FakeClock(START / US)
    store = _open(clock)
    state: Any = leases
    now = START
    try:
        _fill(conn, store, "k", w, leases)
        for i in range(80):
            now += rnd.choice([0, 1, 3_000, 300_000, 1_500_000, 2_500_000, -1, -200_000, -1_500_000, -TTL - 1])
            clock.set(now / US)
            op = rnd.choice(["acquire", "acquire", "hit", "peek", "peek", "release", "release"])
            cost = rnd.choice([0, 1, 1, 3, 40, 500])
            lease = rnd.choice(["", "a", "b", "é", "l3", "x"]) if op in ("acquire", "release") else ""
            state, _, _ = _step(store, w, state, now, op, cost, lease, (i, op, cost, lease, now - START))
            assert _held(conn, store, "k", w)[1] == (state or ()), i
    finally:
        store.close()


def _work(
    conn: Any, store: PostgresStore, op: str, items: list[tuple[str, Window, int]], lease: str
) -> tuple[Any, dict[str, int]]:
    """One call on our own connection, in a transaction, and what it did to the lease table."""
    sql, args = store._one(store._req(op, items, lease), 0)  # type: ignore[arg-type]
    q = (
        "SELECT coalesce(idx_tup_fetch, 0), coalesce(seq_tup_read, 0), n_tup_del, n_tup_ins "
        "FROM pg_stat_xact_user_tables WHERE schemaname = %s AND relname = %s"
    )
    table = (store.names.schema, f"{store.names.prefix}lease")
    with conn.transaction():  # (the counts not yet flushed of earlier transactions show too)
        before = conn.execute(q, table).fetchone()
        reply = conn.execute(sql, args).fetchone()[0]
        after = conn.execute(q, table).fetchone()
    work = [b - a for a, b in zip(before, after, strict=True)]
    return parse(reply, len(items))[0], dict(zip(("fetched", "scanned", "deleted", "inserted"), work, strict=True))


def test_one_call_reads_and_deletes_a_bounded_number_of_leases(conn: Any) -> None:
    """Counted by PostgreSQL, at 20,000 live leases: an acquire, a denial, a release each fetch a
    handful of lease rows; after 20,000 leases expired at once, the first call sums them (once:
    each lease is summed by one call), the ones after read a handful and delete at most TRIM."""
    rnd = random.Random(7)
    leases = tuple(sorted((START + TTL // 2 + rnd.randrange(0, 1000), f"l{i}", 1) for i in range(N)))
    w = make_window("concurrency", Rate(N + 2, TTL))
    clock = FakeClock(START / US)
    store = _open(clock)
    state: Any = leases
    try:
        _fill(conn, store, "k", w, leases)
        now = START
        for step, (op, cost, lease) in enumerate(
            [("acquire", 1, "me"), ("acquire", 1, "you"), ("acquire", 1, "no"), ("acquire", 3, "no"),
             ("peek", 1, ""), ("release", 0, "me"), ("release", 0, "l5"), ("hit", 1, "")]
        ):  # fmt: skip
            now += 1
            clock.set(now / US)
            want, new = run(op, [w], [state], now, [cost], lease)
            got, work = _work(conn, store, op, [("k", w, cost)], lease)
            assert got[:4] == want[0][:4], step
            state = new[0] if new is not None else state
            assert work["scanned"] == 0 and work["fetched"] <= 8 and work["deleted"] <= 1, (step, work)
        now = START + TTL // 2 + 2_000  # every filled lease has expired
        for step in range(12):
            now += 1
            clock.set(now / US)
            op = "peek" if step in (1, 2) else "acquire"
            want, new = run(op, [w], [state], now, [1], f"n{step}")
            got, work = _work(conn, store, op, [("k", w, 1)], f"n{step}")
            assert got[:4] == want[0][:4], step
            state = new[0] if new is not None else state
            assert work["scanned"] == 0 and work["deleted"] <= TRIM, (step, work)
            if step > 0:
                assert work["fetched"] <= TRIM + 8, (step, work)
        assert _count(conn, store, "k", w) == N + 1 + 10 - 10 * TRIM  # 10 writes, TRIM deleted by each
        text, held, _ = _held(conn, store, "k", w)
        assert held == state and len(text) < 120
    finally:
        store.close()


def test_a_version_1_database_is_migrated_and_decides_as_before(conn: Any) -> None:
    """Leases kept as the text "expires lease cost ..." by schema version 1 become rows when the
    store migrates to version 2; every window then decides as the core on the old state."""
    schema = f"rwmig_{uuid.uuid4().hex[:10]}"
    clock = FakeClock(START / US)
    store = _open(clock, schema)
    w = make_window("concurrency", Rate(12, TTL))
    fw = make_window("fixed-window", Rate(5, TTL))
    olds: dict[str, tuple[Lease, ...]] = {
        "a": ((START - 1, "x", 2), (START + 5, "", 1), (START + 5, "", 1), (START + 9, "x", 3), (START + 9, "é", 4)),
        "b": ((START + TTL, "y", 12),),
        "c": tuple((START + i * 1_000, f"l{i % 3}", 1 + i % 2) for i in range(1, 9)),
    }
    try:
        store.hit1("warm", fw, 1)  # installs version 2, then make it look like version 1
        s = store.names.s
        conn.execute(f"DROP TABLE {s}lease")
        conn.execute(f"DELETE FROM {s}schema_version WHERE version = 2")
        for key, ls in olds.items():
            text = " ".join(f"{ex} {lid or '-'} {c}" for ex, lid, c in ls)
            conn.execute(
                f"INSERT INTO {store.names.state} VALUES (%s, %s, %s, 4000000000)",
                (db_key(store.key_prefix, key), w.id, text),
            )
        conn.execute(
            f"INSERT INTO {store.names.state} VALUES (%s, %s, %s, 4000000000)",
            (db_key(store.key_prefix, "a"), fw.id, f"{START // TTL * TTL} 3"),
        )
        with psycopg.connect(PG_URL, autocommit=True) as c2:
            assert migrate(c2, store.names) == 1
        fw_state = conn.execute(
            f"SELECT state FROM {store.names.state} WHERE key = %s AND wid = %s", (db_key(store.key_prefix, "a"), fw.id)
        ).fetchone()[0]
        assert fw_state == f"{START // TTL * TTL} 3"  # other windows' states are left alone
        store.close()
        store = _open(clock, schema, store.key_prefix)  # a fresh pool: no plan cached against the dropped table
        steps = [(0, "acquire", 1, "z"), (4, "hit", 2, ""), (1, "release", 0, "x"), (5, "acquire", 5, "q"),
                 (-3, "peek", 4, ""), (TTL, "release", 0, "y"), (1_000, "acquire", 12, "w")]  # fmt: skip
        for key, old in olds.items():
            state: Any = old
            now = START
            for dt, op, cost, lease in steps:
                now += dt
                clock.set(now / US)
                want, new = run(op, [w], [state], now, [cost], lease)
                got = store.apply(op, [(key, w, cost)], lease)
                assert [o[:4] for o in got] == [o[:4] for o in want], (key, op, now - START)
                if new is not None:
                    state = new[0] if new[0] and want[0][2] > 0 else None
    finally:
        store.close()
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_reset_and_the_sweep_delete_a_windows_leases(conn: Any) -> None:
    """The lease rows go with their state row: by reset, and by the sweep once they expired."""
    w = make_window("concurrency", Rate(5, TTL))
    clock = FakeClock(START / US)
    store = _open(clock)
    try:
        for key in ("r", "s"):
            assert store.apply("acquire", [(key, w, 2)], "a")[0][0]
            assert store.apply("hit", [(key, w, 1)])[0][0]
            assert _count(conn, store, key, w) == 2
        store.reset("r")
        assert _count(conn, store, "r", w) == 0 and _held(conn, store, "r", w)[0] is None
        assert store.apply("acquire", [("r", w, 5)], "b")[0][0]  # a fresh window: all 5 units free
        clock.set((START + TTL) / US + 3_600 + 2)  # past the expiry and the test hook's slack
        assert store.sweep() >= 2
        assert _count(conn, store, "s", w) == 0 and _count(conn, store, "r", w) == 0
    finally:
        store.close()
