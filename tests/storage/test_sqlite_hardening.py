"""The SQLite store under faults: unreadable rows, a held write lock, a clock stepped by NTP,
a deleted file, a truncated WAL index. Real files, real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratewarden import FakeClock, Limiter, StoreError
from ratewarden.core.algorithms import ALGORITHMS, make_window
from ratewarden.core.rates import parse_rate
from ratewarden.storage import sqlite as sq
from ratewarden.storage.sqlite import SQLiteStore


def _python(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", textwrap.dedent(script), *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)


# -- unreadable rows ------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
GARBAGE = (
    JSON.map(json.dumps)
    | st.sampled_from(["{}", "[]", '{"0":1}', "[[1,", "", "null", "[null]", "[[]]", '"x"', "1e999", "[1,2,3,4,5]"])
    | st.binary(max_size=8)
    | st.floats(allow_nan=False)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
)
EVERY = sorted(ALGORITHMS)


def _rate(algorithm: str) -> str:
    return "5/day" if algorithm == "quota" else "5/minute"  # a quota is per day or per month


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=GARBAGE, algorithm=st.sampled_from(EVERY))
def test_any_garbage_state_is_reset_never_raised(tmp_path: Path, garbage: Any, algorithm: str) -> None:
    path = tmp_path / "garbage.db"
    clock = FakeClock()
    store = SQLiteStore(path, clock=clock)
    try:
        w = make_window(algorithm, parse_rate(_rate(algorithm)))
        store.hit1("k", w, 1)
        db = store._conn()
        db.execute("UPDATE ratewarden_state SET state = ? WHERE key = 'k'", (garbage,))
        outs = [store.hit1("k", w, 0), store.apply("peek", [("k", w, 1)])[0], store.hit1("k", w, 1)]
        outs += store.apply("hit", [("k", w, 1), ("k2", w, 1)])
        for out in outs:
            assert all(type(x) is int for x in out[1:4]), out
        assert store.hit1("k", w, 1)[0] in (True, False)
    finally:
        store.close()
        for p in tmp_path.iterdir():
            p.unlink()


@pytest.mark.parametrize("garbage", ["{}", "[]", '{"0":1}'])
@pytest.mark.parametrize("algorithm", EVERY)
def test_the_reported_garbage_is_reset_with_a_warning(
    tmp_path: Path, garbage: str, algorithm: str, caplog: pytest.LogCaptureFixture
) -> None:
    lim = Limiter(f"sqlite:///{tmp_path}/g.db", clock=FakeClock(), algorithm=algorithm, on_store_error="deny")
    lim.hit("k", _rate(algorithm))
    lim.store._conn().execute("UPDATE ratewarden_state SET state = ?", (garbage,))
    d = lim.hit("k", _rate(algorithm))
    assert d.reason is None and d.allowed
    empty = algorithm in ("concurrency", "sliding-log") and garbage in ("{}", "[]")  # read as no leases/hits
    assert empty or "cannot read for key 'rw:k'" in caplog.text
    lim.close()


# -- another process holds the write lock ---------------------------------------------------------

HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
"""


@pytest.mark.slow
def test_each_decision_waits_at_most_the_timeout(tmp_path: Path) -> None:
    """Four threads, another process holding BEGIN IMMEDIATE: every decision ends (by the
    fallback) within the timeout, not after queueing behind the other threads' waits."""
    path = tmp_path / "busy.db"
    lim = Limiter(f"sqlite:///{path}?timeout=1", on_store_error="deny")
    lim.hit("warm", "10/minute")
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), str(path), "5"], stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        took: list[float] = []
        reasons: list[str | None] = []

        def decide(i: int) -> None:
            for j in range(2):
                t = time.monotonic()
                d = lim.hit(f"k{i}-{j}", "10/minute")
                took.append(time.monotonic() - t)
                reasons.append(d.reason)

        threads = [threading.Thread(target=decide, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert reasons == ["store_unavailable"] * 8
    assert max(took) < 1.9, took  # the 1 s timeout, plus scheduling; before: up to 3 s
    assert lim.hit("after", "10/minute").reason is None
    lim.close()


# -- a wall clock stepped 40 days ahead and back ------------------------------------------------


@pytest.mark.parametrize("named", [False, True], ids=["default-clock", "clock=time.time"])
def test_a_clock_stepping_40_days_ahead_and_back_keeps_a_full_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named: bool
) -> None:
    step = [0]
    real = time.time_ns
    monkeypatch.setattr(sq, "_now_us", lambda: (real() + step[0]) // 1000)
    monkeypatch.setattr(time, "time", lambda: (real() + step[0]) / 1e9)  # the same stepped clock
    store = SQLiteStore(tmp_path / "ntp.db", clock=time.time) if named else SQLiteStore(tmp_path / "ntp.db")
    lim = Limiter(store)
    for _ in range(5):
        assert lim.hit("login:victim", "5/20 minutes").allowed
    assert not lim.hit("login:victim", "5/20 minutes").allowed
    step[0] = 40 * 86_400 * 10**9  # NTP steps the clock 40 days ahead ...
    for i in range(2 * sq.SWEEP_EVERY):
        lim.hit(f"other{i}", "5/20 minutes")  # writes run the incremental sweep
    store.sweep()
    step[0] = 0  # ... and back
    assert not lim.hit("login:victim", "5/20 minutes").allowed
    lim.close()


# -- the file deleted under a running process -----------------------------------------------------

NEWCOMER = """
import sys
from ratewarden import Limiter
lim = Limiter("sqlite:///" + sys.argv[1])
print(sum(lim.hit("login:victim", "10/hour").allowed for _ in range(20)))
"""


def test_a_deleted_file_is_reopened_loudly_and_shared_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sq, "FILE_CHECK_INTERVAL", 0.0)
    path = tmp_path / "gone.db"
    lim = Limiter(f"sqlite:///{path}")
    assert sum(lim.hit("login:victim", "10/hour").allowed for _ in range(5)) == 5
    for p in tmp_path.glob("gone.db*"):  # rm gone.db gone.db-wal gone.db-shm
        p.unlink()
    assert lim.hit("login:victim", "10/hour").allowed  # the 6th: noticed, reopened, copied over
    assert "was deleted while in use" in caplog.text
    out = _python(NEWCOMER, str(path))
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == 4  # a new process shares the file: 10 in all, not 20
    assert not lim.hit("login:victim", "10/hour").allowed
    lim.close()


def test_a_file_that_cannot_be_reopened_fails_per_on_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sq, "FILE_CHECK_INTERVAL", 0.0)
    where = tmp_path / "dir"
    where.mkdir()
    lim = Limiter(f"sqlite:///{where}/x.db", on_store_error="deny")
    assert lim.hit("k", "10/hour").allowed
    for p in where.iterdir():
        p.unlink()
    where.rmdir()
    d = lim.hit("k", "10/hour")
    assert (d.allowed, d.reason) == (False, "store_unavailable")
    assert "cannot be reopened" in caplog.text
    with pytest.raises(StoreError, match="deleted"):
        lim.store.hit1("k", make_window("gcra", parse_rate("10/hour")), 1)
    lim.close()


# -- a truncated WAL index (-shm) -----------------------------------------------------------------

SHM = """
import os, sys
from ratewarden import Limiter
from ratewarden.storage import sqlite as sq
sq.FILE_CHECK_INTERVAL = 0.0
lim = Limiter("sqlite:///" + sys.argv[1], on_store_error="deny")
print(lim.hit("k", "5/minute").remaining, flush=True)
os.truncate(sys.argv[1] + "-shm", 0)
print(lim.hit("k", "5/minute").remaining, flush=True)
print(lim.peek("k", "5/minute").remaining, flush=True)
"""


def test_a_truncated_shm_is_restored_instead_of_sigbus(tmp_path: Path) -> None:
    """In a subprocess: before, the decision after the truncation died of SIGBUS."""
    out = _python(SHM, str(tmp_path / "shm.db"))
    assert out.returncode == 0, (out.returncode, out.stderr)
    assert out.stdout.split() == ["4", "3", "2"]
    assert "truncated" in out.stderr


def test_a_truncated_database_file_is_a_store_error_not_sigbus(tmp_path: Path) -> None:
    script = """
    import os, sys
    from ratewarden import Limiter
    lim = Limiter("sqlite:///" + sys.argv[1], on_store_error="deny")
    lim.hit("k", "5/minute")
    conn = lim.store._conn()
    assert conn.execute("PRAGMA mmap_size").fetchone()[0] == 0
    os.truncate(sys.argv[1], 0)
    lim.hit("k", "5/minute")
    print("alive")
    """
    out = _python(script, str(tmp_path / "t.db"))
    assert out.returncode == 0 and out.stdout.strip() == "alive", out.stderr
    assert os.path.exists(tmp_path / "t.db")
