"""The SQLite store on real files: URLs, opening errors, run-time failures, encoding, expiry.

The behaviour every backend shares is in test_conformance.py; here are SQLite's own promises,
plus a differential property test: any sequence of operations gives the same decisions on
SQLite as on the in-process reference store.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratewarden import AsyncLimiter, ConfigError, FakeClock, Limiter, StoreError
from ratewarden.core.algorithms import make_window
from ratewarden.core.algorithms.base import Outcome, Window
from ratewarden.core.rates import parse_rate
from ratewarden.storage import sqlite as sq
from ratewarden.storage.sqlite import SCHEMA, SQLiteStore, decode_state, encode_state

from .backends import sqlite_url

US = 1_000_000


def rows(path: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT key, window, state, expires FROM ratewarden_state ORDER BY key, window").fetchall()
    finally:
        db.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "rw.db"


@pytest.fixture
def store(db_path: Path, clock: FakeClock) -> Any:
    s = SQLiteStore(db_path, clock=clock)
    yield s
    s.close()


# -- URLs -----------------------------------------------------------------------------------------


def test_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with Limiter("sqlite:///sub/rel.db") as lim:
        assert lim.store.path == str(tmp_path / "sub" / "rel.db")
        assert lim.hit("k", "1/minute").allowed
    assert (tmp_path / "sub" / "rel.db").is_file()
    with Limiter(f"sqlite:///{tmp_path}/abs.db") as lim:  # sqlite:////tmp/.../abs.db
        assert lim.store.path == str(tmp_path / "abs.db")
    with Limiter("sqlite:///sub/rel.db") as lim:
        assert not lim.hit("k", "1/minute").allowed  # the same file again


def test_a_relative_path_is_fixed_at_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads opened after a chdir still use the file the URL named when the limiter was made."""
    monkeypatch.chdir(tmp_path)
    lim = Limiter("sqlite:///rel.db")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(lim.hit("k", "1/minute").allowed))
    t.start()
    t.join()
    assert got == [True] and lim.store_errors == 0
    assert not lim.hit("k", "1/minute").allowed
    assert not (tmp_path / "elsewhere" / "rel.db").exists()
    lim.close()


def test_query_options(tmp_path: Path) -> None:
    with Limiter(f"{sqlite_url(tmp_path)}?timeout=0.25") as lim:
        assert lim.store.timeout == 0.25
    with Limiter(sqlite_url(tmp_path), timeout=3) as lim:
        assert lim.store.timeout == 3.0
    with Limiter(sqlite_url(tmp_path)) as lim:
        assert lim.store.timeout == sq.DEFAULT_TIMEOUT
        assert lim.store.key_prefix == "rw:"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite://", "names no file"),
        ("sqlite:///", "names no file"),
        ("sqlite:///{tmp}/", "names no file"),
        ("sqlite:///file:x.db?mode=memory", "in-memory"),
        ("sqlite://db.example.com/x.db", "not a host"),
        ("sqlite://localhost/x.db", "not a host"),
        ("sqlite:///{tmp}/x.db?timeout=soon", "timeout"),
        ("sqlite:///{tmp}/x.db?timeout=-1", "timeout"),
        ("sqlite:///{tmp}/x.db?timeout=inf", "timeout"),
        ("sqlite:///{tmp}/x.db?journal=delete", "unknown option 'journal'"),
    ],
)
def test_bad_urls_are_refused(tmp_path: Path, url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Limiter(url.replace("{tmp}", str(tmp_path)))


def test_unknown_keyword_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown SQLite store option 'pool_size'"):
        Limiter(sqlite_url(tmp_path), pool_size=3)
    with pytest.raises(ConfigError, match="timeout"):
        SQLiteStore(tmp_path / "x.db", timeout=True)  # type: ignore[arg-type]
    for bad in (":memory:", "", 3, None, b"rw.db"):
        with pytest.raises(ConfigError, match="file path"):
            SQLiteStore(bad)  # type: ignore[arg-type]


# -- opening a file that cannot be used -------------------------------------------------------------


def test_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "rw.db"
    with pytest.raises(ConfigError, match="does not exist") as info:
        Limiter(f"sqlite:///{path}")
    assert str(path.parent) in str(info.value)


def test_a_directory_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        SQLiteStore(tmp_path)


def test_a_path_under_a_regular_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ConfigError, match="plain"):
        SQLiteStore(tmp_path / "plain" / "rw.db")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_directory_is_a_config_error(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=str(locked)):
            SQLiteStore(locked / "rw.db")
    finally:
        locked.chmod(0o700)


def test_a_file_that_is_not_a_database(db_path: Path) -> None:
    db_path.write_bytes(b"name,limit\nlogin,5\n" * 300)
    with pytest.raises(ConfigError, match="not a database") as info:
        SQLiteStore(db_path)
    assert str(db_path) in str(info.value)
    assert db_path.read_bytes().startswith(b"name,limit")  # left as it was


def test_a_corrupt_database(db_path: Path) -> None:
    SQLiteStore(db_path).close()
    data = bytearray(db_path.read_bytes())
    data[100:4096] = b"\xa5" * (4096 - 100)  # scribble over the schema page
    db_path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"malformed|not a database") as info:
        SQLiteStore(db_path)
    assert str(db_path) in str(info.value)


def test_another_applications_database_is_left_alone(db_path: Path) -> None:
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="something else \\(users\\)") as info:
        SQLiteStore(db_path)
    assert str(db_path) in str(info.value)
    db = sqlite3.connect(db_path)
    try:  # not converted to WAL, no table added
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["users"]
    finally:
        db.close()


def test_another_schema_version_is_refused(db_path: Path) -> None:
    SQLiteStore(db_path).close()
    db = sqlite3.connect(db_path)
    db.execute("UPDATE ratewarden_meta SET value = 'ratewarden-sqlite-99' WHERE name = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="ratewarden-sqlite-99"):
        SQLiteStore(db_path)


def test_a_state_table_of_another_shape_is_refused(db_path: Path) -> None:
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE ratewarden_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO ratewarden_meta VALUES ('schema', ?)", (SCHEMA,))
    db.execute("CREATE TABLE ratewarden_state (key TEXT, hits INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="unexpected columns"):
        SQLiteStore(db_path)


def test_an_empty_file_is_set_up(db_path: Path) -> None:
    db_path.touch()
    with Limiter(f"sqlite:///{db_path}") as lim:
        assert lim.hit("k", "1/minute").allowed
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


# -- failures during decisions ----------------------------------------------------------------------


def test_locked_beyond_the_timeout_is_a_store_error(db_path: Path, clock: FakeClock) -> None:
    lim = Limiter(f"sqlite:///{db_path}?timeout=0.05", clock=clock, on_store_error="deny")
    assert lim.hit("k", "2/minute").allowed
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(StoreError, match="locked") as info:
            lim.store.hit1("k", make_window("gcra", parse_rate("2/minute")), 1)
        assert str(db_path) in str(info.value)
        t = time.perf_counter()
        d = lim.hit("k", "2/minute")
        assert time.perf_counter() - t < 2
        assert (d.allowed, d.reason) == (False, "store_unavailable")
        assert lim.peek("k", "2/minute").allowed  # a reader is not blocked by a writer (WAL)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert lim.store_errors == 1
    assert lim.hit("k", "2/minute").allowed  # back, and the failed attempts consumed nothing
    assert not lim.hit("k", "2/minute").allowed
    lim.close()


def test_an_unreadable_state_is_reset_with_a_warning(
    db_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    lim = Limiter(f"sqlite:///{db_path}", clock=clock, algorithm="fixed-window")
    lim.hit("k", "5/minute")
    db = sqlite3.connect(db_path)
    db.execute("UPDATE ratewarden_state SET state = '[[1,' WHERE key = 'rw:k'")
    db.commit()
    db.close()
    assert lim.peek("k", "5/minute").remaining == lim.peek("fresh", "5/minute").remaining  # no state
    d = lim.hit("k", "5/minute")
    assert (d.allowed, d.reason, d.remaining) == (True, None, 4)
    assert "cannot read for key 'rw:k'" in caplog.text
    assert lim.hit("k", "5/minute").remaining == 3  # the row was overwritten with a good one
    lim.close()


def test_a_full_disk_is_a_store_error(db_path: Path, clock: FakeClock) -> None:
    lim = Limiter(f"sqlite:///{db_path}", clock=clock, on_store_error="deny")
    store = lim.store
    lim.hit("warm", "5/minute")
    conn = store._conn()  # the connection this thread decides with
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own SQLITE_FULL, as on a full disk
    reasons = set()
    for i in range(2000):
        d = lim.hit(f"user-{i:05d}-" + "x" * 200, "5/minute")
        reasons.add(d.reason)
        if d.reason:
            break
    assert reasons == {None, "store_unavailable"}
    with pytest.raises(StoreError, match="full"):
        store.hit1("another-" + "y" * 300, make_window("gcra", parse_rate("5/minute")), 1)
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert lim.hit("after", "5/minute").reason is None  # recovers on its own
    lim.close()


def test_a_closed_store_raises_store_error(db_path: Path) -> None:
    s = SQLiteStore(db_path)
    s.close()
    w = make_window("gcra", parse_rate("1/minute"))
    with pytest.raises(StoreError, match="closed"):
        s.hit1("k", w, 1)
    with pytest.raises(StoreError, match="closed"):
        s.reset("k")


# -- rows, expiry, reset ----------------------------------------------------------------------------


def test_one_row_per_key_and_window_with_its_expiry(store: SQLiteStore, db_path: Path, clock: FakeClock) -> None:
    now = round(clock() * US)
    lim = Limiter(store, algorithm="fixed-window")
    lim.hit("k", "5/10 minutes;20/hour", 2)
    lim.hit("k", "5/10 minutes;20/hour", 1)
    assert rows(db_path) == [
        ("k", "fixed-window:3600000000", f"[{now},3]", now + 3600 * US),
        ("k", "fixed-window:600000000", f"[{now},3]", now + 600 * US),
    ]
    Limiter(store, algorithm="gcra").hit("g", "10/second")
    assert ("g", "gcra:10:1000000", now + 100_000, now + 100_000) in rows(db_path)  # an int stays an int


def test_denials_and_peeks_write_nothing(store: SQLiteStore, db_path: Path) -> None:
    lim = Limiter(store, algorithm="sliding-log")
    lim.hit("k", "2/minute", 2)
    before = rows(db_path)
    for _ in range(5):
        lim.hit("k", "2/minute")
        lim.peek("k", "2/minute")
        lim.status("k", "2/minute")
        lim.hit("k", "2/minute", 0)
    assert rows(db_path) == before


def test_an_empty_state_is_deleted_not_written(store: SQLiteStore, db_path: Path) -> None:
    lim = Limiter(store)
    d = lim.acquire("k", "2/minute")
    assert len(rows(db_path)) == 1
    assert d.lease is not None
    lim.release("k", "2/minute", d.lease)
    assert rows(db_path) == []


def test_reset_deletes_every_row_of_the_key(store: SQLiteStore, db_path: Path) -> None:
    lim = Limiter(store)
    for algorithm in ("gcra", "fixed-window", "sliding-log"):
        lim.hit("k", "5/10 minutes;20/hour", algorithm=algorithm)
        lim.hit("k2", "5/10 minutes", algorithm=algorithm)
    assert len(rows(db_path)) == 9 + 3  # a sliding log has a row per entry beside its header
    lim.reset("k")
    assert {r[0] for r in rows(db_path)} == {"k2"}
    lim.reset("k2", "5/10 minutes", algorithm="gcra")
    assert len(rows(db_path)) == 2 + 1
    lim.reset("k2", "5/10 minutes", algorithm="sliding-log")
    assert len(rows(db_path)) == 1


def test_key_prefix_is_part_of_the_row_key(tmp_path: Path, clock: FakeClock) -> None:
    with Limiter(sqlite_url(tmp_path), clock=clock, key_prefix="app:") as lim:
        lim.hit("alice", "1/minute")
    assert [r[0] for r in rows(tmp_path / "rw.db")] == ["app:alice"]


def test_expired_rows_are_swept_a_few_at_a_time(store: SQLiteStore, db_path: Path, clock: FakeClock) -> None:
    lim = Limiter(store, algorithm="fixed-window")
    n = sq.SWEEP_LIMIT + 100
    for i in range(n):
        lim.hit(f"old-{i}", "1/second")
    assert len(store) == n
    clock.advance(5)  # every old row has expired; nothing reads them again
    old, writes = n, 0
    while old:
        lim.hit(f"new-{writes}", "1/hour")
        writes += 1
        keys = [r[0] for r in rows(db_path)]
        left = sum(1 for k in keys if k.startswith("old-"))
        assert old - left in (0, min(old, sq.SWEEP_LIMIT))  # a bounded sweep, never a full scan
        assert len(keys) - left == writes  # live rows are never swept
        old = left
        assert writes <= 3 * sq.SWEEP_EVERY, "expired rows are not reclaimed"


def test_the_sweep_uses_the_expiry_index(store: SQLiteStore) -> None:
    plan = " ".join(str(r[-1]) for r in store._conn().execute("EXPLAIN QUERY PLAN " + sq._SWEEP, (0, 10)))
    assert "ratewarden_state_expires" in plan
    assert "SCAN ratewarden_state " not in plan + " "


def test_sweep_all(store: SQLiteStore, clock: FakeClock) -> None:
    lim = Limiter(store, algorithm="fixed-window")
    for i in range(10):
        lim.hit(f"k{i}", "1/second" if i % 2 else "1/hour")
    clock.advance(2)
    assert store.sweep() == 5
    assert len(store) == 5


def test_state_survives_reopening(db_path: Path, clock: FakeClock) -> None:
    with Limiter(f"sqlite:///{db_path}", clock=clock) as lim:
        for _ in range(3):
            lim.hit("k", "3/minute", algorithm="sliding-log")
    with Limiter(f"sqlite:///{db_path}", clock=clock) as lim:
        d = lim.hit("k", "3/minute", algorithm="sliding-log")
        assert (d.allowed, d.retry_after) == (False, 60.0)


def test_the_default_clock_is_the_wall_clock(db_path: Path) -> None:
    before = time.time_ns() // 1000
    with Limiter(f"sqlite:///{db_path}", algorithm="gcra") as lim:
        lim.hit("k", "1/minute")
    after = time.time_ns() // 1000
    ((_, _, tat, expires),) = rows(db_path)
    assert before + 60 * US <= tat == expires <= after + 60 * US


async def test_async_limiter_uses_worker_threads(db_path: Path, clock: FakeClock) -> None:
    async with AsyncLimiter(f"sqlite:///{db_path}", clock=clock) as lim:
        got = [(await lim.hit("k", "2/minute")).allowed for _ in range(3)]
        assert got == [True, True, False]
        assert len(lim.store._conns) >= 2  # this thread's (open) and a worker's


# -- encoding ---------------------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (``==`` alone has 1 == True == 1.0)."""
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


STATES = st.recursive(
    st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=6).map(tuple),
    max_leaves=40,
)


@given(STATES)
def test_encoding_round_trips_exactly(state: Any) -> None:
    value = encode_state(state)
    assert isinstance(value, int | str)
    assert same(decode_state(value), state)


def test_encoding_examples() -> None:
    assert encode_state(1767225600000000) == 1767225600000000
    assert encode_state(2**63) == "9223372036854775808"  # beyond SQLite's integers: text
    assert encode_state((1, (2, "a"), ())) == '[1,[2,"a"],[]]'
    assert same(decode_state('[[5,"lease",1]]'), ((5, "lease", 1),))
    with pytest.raises(ValueError):
        decode_state(b"\x00")


class Echo(Window):
    """A window that stores what it is told to and remembers what it read."""

    name: ClassVar[str] = "echo"
    __slots__ = ("next", "seen")

    def decide(self, state: Any, now: int, cost: int) -> Outcome:
        self.seen = state
        return (True, 0, US, 0, self.next)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=STATES)
def test_states_round_trip_through_the_file(store: SQLiteStore, state: Any) -> None:
    w = Echo(parse_rate("1/second"))
    w.next = state
    key = uuid.uuid4().hex
    store.hit1(key, w, 1)
    store.apply("peek", [(key, w, 0)])
    assert same(w.seen, state)


# -- differential: SQLite decides exactly as the in-process reference -------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("hit"), st.sampled_from("ab"), st.integers(0, 4)),
        st.tuples(st.just("peek"), st.sampled_from("ab"), st.integers(0, 4)),
        st.tuples(st.just("status"), st.sampled_from("ab"), st.just(0)),
        st.tuples(st.just("charge"), st.sampled_from("ab"), st.integers(0, 4)),
        st.tuples(st.just("reset"), st.sampled_from("ab"), st.just(0)),
        st.tuples(st.just("wait"), st.just(""), st.integers(0, 20_000_000)),
    ),
    max_size=30,
)
RATES = ["3/10s;5/minute", "4/second", "2/10s", "6/day"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, algorithm=st.sampled_from(["fixed-window", "sliding-window", "sliding-log", "gcra", "token-bucket"]))
def test_sqlite_decides_like_memory(tmp_path: Path, ops: list[tuple[str, str, int]], algorithm: str) -> None:
    clock = FakeClock()
    prefix = uuid.uuid4().hex + ":"  # a fresh namespace per example, on one file
    with (
        Limiter("memory://", clock=clock, algorithm=algorithm) as ref,
        Limiter(sqlite_url(tmp_path), clock=clock, algorithm=algorithm, key_prefix=prefix) as lim,
    ):
        for i, (op, key, n) in enumerate(ops):
            rate = RATES[i % len(RATES)]
            if op == "wait":
                clock.advance(n / US)
            elif op == "reset":
                ref.reset(key)
                lim.reset(key)
            elif op == "status":
                assert lim.status(key, rate) == ref.status(key, rate)
            else:
                assert getattr(lim, op)(key, rate, n) == getattr(ref, op)(key, rate, n), (op, key, n, rate)
        assert lim.store_errors == 0


def test_many_openers_of_a_new_file_race_safely(db_path: Path) -> None:
    """Stores opened at once on a file that does not exist yet: one sets it up, all work."""
    n = 8
    barrier = threading.Barrier(n)
    results: list[Any] = []

    def open_and_hit() -> None:
        barrier.wait()
        try:
            s = SQLiteStore(db_path, clock=FakeClock())
            try:
                results.append(s.hit1("k", make_window("fixed-window", parse_rate("100/minute")), 1)[0])
            finally:
                s.close()
        except Exception as exc:  # pragma: no cover - reported below
            results.append(exc)

    threads = [threading.Thread(target=open_and_hit) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * n
    assert rows(db_path)[0][2] == f"[{round(FakeClock()() * US)},{n}]"


ITEM_WINDOWS = [
    make_window("fixed-window", parse_rate("3/10s")),
    make_window("sliding-log", parse_rate("4/minute")),
    make_window("gcra", parse_rate("5/10s")),
    make_window("token-bucket", parse_rate("2/second")),
    make_window("concurrency", parse_rate("2/10s")),
    make_window("quota", parse_rate("6/day")),
]
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["hit", "peek", "charge", "acquire", "release", "wait"]),
        st.lists(
            st.tuples(st.sampled_from("xy"), st.sampled_from([0, 1, 2, 3, 4, 4, 4, 5]), st.integers(0, 3)),
            min_size=1,
            max_size=4,
        ),
        st.integers(0, 15_000_000),
    ),
    max_size=25,
)


def _observable(outs: list[Any]) -> list[Any]:
    """Outcomes with the state of an empty window (reset 0) read as ``None``."""
    return [(*o[:4], o[4] if o[2] > 0 else None) for o in outs]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_apply_over_several_keys_and_windows_matches_memory(tmp_path: Path, steps: list[Any]) -> None:
    """The store primitive itself: multi-key, multi-window items, every op, the same outcomes
    (new states included, wherever a window holds usage) as the in-process store, step after step.

    A state whose window is empty (reset 0) means nothing: a store may hand back the stale value
    it still holds or ``None`` (SQLite deletes such rows on write; memory drops them when due)."""
    from ratewarden.storage.memory import MemoryStore

    clock = FakeClock()
    prefix = uuid.uuid4().hex + ":"
    ref = MemoryStore(clock=clock)
    sql = SQLiteStore(tmp_path / "apply.db", clock=clock, key_prefix=prefix)
    try:
        for n, (op, picks, wait) in enumerate(steps):
            if op == "wait":
                clock.advance(wait / US)
                continue
            seen = set()
            items = []
            for key, w, cost in picks:
                if op == "charge" and w == 4:
                    continue  # concurrency takes no charge
                if (key, w) not in seen:  # one state per (key, window) in a call
                    seen.add((key, w))
                    items.append((key, ITEM_WINDOWS[w], cost))
            lease = "lease"  # one name: a release drops every lease taken, so states empty often
            assert _observable(sql.apply(op, items, lease)) == _observable(ref.apply(op, items, lease)), (n, op, items)
        for key in "xy":
            check = [(key, w, 0) for w in ITEM_WINDOWS]
            assert _observable(sql.apply("peek", check)) == _observable(ref.apply("peek", check))
    finally:
        sql.close()
