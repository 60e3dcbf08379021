"""The PostgreSQL store when things go wrong: connections killed mid-load (pg_terminate_backend),
a statement that times out, a server that does not answer, a schema from a newer release, bad
options; and the policy file / middleware taking the URL."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ratewarden import AsyncLimiter, ConfigError, FakeClock, Limiter, StoreError
from ratewarden.cli import main as cli_main
from ratewarden.core.algorithms import make_window
from ratewarden.core.rates import US, Rate

from .backends import PG_SCHEMA, PG_URL, pg_conn

psycopg = pytest.importorskip("psycopg")
from ratewarden.storage.postgres import open_postgres  # noqa: E402

pytestmark = pytest.mark.postgres
conn = pg_conn

START = 1_767_225_600.0 + 17.5


@pytest.fixture
def app() -> str:
    """An application_name of this test's own: how the killer finds the store's sessions."""
    return f"rwtest_{uuid.uuid4().hex[:10]}"


def _url(app: str, **extra: Any) -> str:
    q = "&".join(f"{k}={v}" for k, v in {"schema": PG_SCHEMA, "application_name": app, **extra}.items())
    return f"{PG_URL}?{q}"


def _kill(conn: Any, app: str) -> int:
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (app,)
    ).fetchall()
    return len(rows)


def _count(conn: Any, prefix: str, key: str) -> int:
    row = conn.execute(f'SELECT state FROM "{PG_SCHEMA}".ratewarden_state WHERE key = %s', (prefix + key,)).fetchone()
    return 0 if row is None else int(row[0].split()[1])


def test_connections_killed_mid_load_never_over_admit_and_the_pool_recovers(conn: Any, app: str) -> None:
    """8 threads hit one key (fixed-window 100/hour, on_store_error="deny") while every session
    of the store is terminated five times. No more than 100 are ever admitted; a terminated
    session's statement never commits, so the admitted count and the table agree but for
    replies lost with their connection (at most one per failure); afterwards the store answers
    without errors."""
    clock = FakeClock(START)
    prefix = f"rwtest:{uuid.uuid4().hex[:8]}:"
    lim = Limiter(_url(app, pool_max=4), key_prefix=prefix, clock=clock, _test_now=clock, on_store_error="deny")
    admitted = [0] * 8
    stop = threading.Event()

    def worker(i: int) -> None:
        for _ in range(400):
            if lim.hit("k", "100/hour", algorithm="fixed-window").allowed:
                admitted[i] += 1

    def killer() -> None:
        for _ in range(5):
            time.sleep(0.05)
            _kill(conn, app)
        stop.set()

    lim.hit("warm", "1/hour")
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    k = threading.Thread(target=killer)
    for t in (*threads, k):
        t.start()
    for t in (*threads, k):
        t.join()
    try:
        errors = lim.store_errors
        stored = _count(conn, prefix, "k")
        assert sum(admitted) <= 100
        assert stored <= 100
        assert 0 <= stored - sum(admitted) <= errors
        _kill(conn, app)  # every idle session dies once more: the retry takes a fresh one
        before = lim.store_errors
        time.sleep(0.6)  # past the breaker
        assert [lim.hit(f"after:{i}", "1/hour").allowed for i in range(20)] == [True] * 20
        assert lim.store_errors == before
    finally:
        conn.execute(f'DELETE FROM "{PG_SCHEMA}".ratewarden_state WHERE starts_with(key, %s)', (prefix,))
        lim.close()


async def test_async_pool_recovers_from_terminated_sessions(conn: Any, app: str) -> None:
    clock = FakeClock(START)
    prefix = f"rwtest:{uuid.uuid4().hex[:8]}:"
    lim = AsyncLimiter(_url(app, pool_min=4, pool_max=4), key_prefix=prefix, clock=clock, _test_now=clock)
    try:
        assert all(d.allowed for d in await asyncio.gather(*(lim.hit(f"a:{i}", "1/hour") for i in range(20))))
        assert _kill(conn, app) >= 1
        got = await asyncio.gather(*(lim.hit(f"b:{i}", "1/hour") for i in range(20)))
        assert all(d.allowed for d in got)
        assert lim.store_errors == 0  # a terminated idle session is retried on a fresh one
        assert not (await lim.hit("b:0", "1/hour")).allowed
    finally:
        conn.execute(f'DELETE FROM "{PG_SCHEMA}".ratewarden_state WHERE starts_with(key, %s)', (prefix,))
        await lim.aclose()


def test_a_statement_timeout_is_a_store_error_and_on_store_error_applies(conn: Any, app: str) -> None:
    """Another session holds the key's lock: the call times out after statement_timeout, the
    limiter applies on_store_error, and the next call (lock released) answers at once."""
    clock = FakeClock(START)
    prefix = f"rwtest:{uuid.uuid4().hex[:8]}:"
    store = open_postgres(_url(app, statement_timeout=0.2), key_prefix=prefix, _test_now=clock)
    lim = Limiter(store, on_store_error="deny")
    w = make_window("fixed-window", Rate(5, 60 * US))
    try:
        assert store.hit1("k", w, 1)[0]
        other = psycopg.connect(PG_URL)
        try:
            other.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, %s))", (prefix + "k", store.names.seed))
            t0 = time.monotonic()
            with pytest.raises(StoreError, match="QueryCanceled"):
                store.hit1("k", w, 1)
            assert time.monotonic() - t0 < 2.0
            d = lim.hit("k", "5/minute", algorithm="fixed-window")
            assert not d.allowed and lim.store_errors == 1
        finally:
            other.rollback()
            other.close()
        assert store.hit1("k", w, 1)[1] == 3  # not tripped by a server-side timeout; nothing was charged
    finally:
        conn.execute(f'DELETE FROM "{PG_SCHEMA}".ratewarden_state WHERE starts_with(key, %s)', (prefix,))
        store.close()


def test_an_unreachable_server_fails_within_the_timeout_then_fast() -> None:
    store = open_postgres("postgresql://root@127.0.0.1:1/test?connect_timeout=1&breaker=5")
    w = make_window("gcra", Rate(5, 60 * US))
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="postgresql store"):
        store.hit1("k", w, 1)
    assert time.monotonic() - t0 < 5.0
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="failing fast"):
        store.hit1("k", w, 1)
    assert time.monotonic() - t0 < 0.1
    lim = Limiter(store, on_store_error="allow")
    assert lim.hit("k", "5/minute").allowed and lim.store_errors == 1
    store.close()


def test_migrate_installs_once_and_a_newer_schema_is_refused(conn: Any, capsys: pytest.CaptureFixture[str]) -> None:
    schema = f"rwtest_{uuid.uuid4().hex[:10]}"
    url = f"{PG_URL}?schema={schema}&table_prefix=rl_"
    try:
        assert cli_main(["migrate", url]) == 0
        assert "0 -> 2" in capsys.readouterr().out
        assert cli_main(["migrate", url]) == 0
        assert "up to date" in capsys.readouterr().out
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))}
        assert tables == {"rl_state", "rl_log", "rl_lease", "rl_schema_version"}
        conn.execute(f'INSERT INTO "{schema}".rl_schema_version (version) VALUES (99)')
        lim = Limiter(url, on_store_error="deny")
        assert not lim.hit("k", "5/minute").allowed
        lim.close()
        assert cli_main(["migrate", url]) == 2
        assert "newer than this release" in capsys.readouterr().err
        assert cli_main(["migrate", "redis://127.0.0.1:6379/0"]) == 2
    finally:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.parametrize(
    ("url", "match"),
    [
        (f"{PG_URL}?schema=Bad-Name", "schema must be"),
        (f"{PG_URL}?table_prefix=x;drop", "table_prefix must be"),
        (f"{PG_URL}?statement_timeout=0", "statement_timeout must be positive"),
        (f"{PG_URL}?connect_timeout=abc", "connect_timeout must be a float"),
        (f"{PG_URL}?pool_min=5&pool_max=2", "pool_min must not exceed pool_max"),
        (f"{PG_URL}?synchronous_commit=maybe", "synchronous_commit must be one of"),
        (f"{PG_URL}?sweep_batch=-1", "sweep_batch must be positive"),
    ],
)
def test_bad_options_are_config_errors_naming_the_value(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Limiter(url)


def test_unknown_keyword_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown PostgreSQL store option 'pool_size'"):
        Limiter(PG_URL, pool_size=3)


def test_a_window_too_large_for_bigint_is_refused_when_compiled() -> None:
    lim = Limiter(PG_URL)
    with pytest.raises(ConfigError, match="too large for the PostgreSQL store"):
        lim.hit("k", "1000000000000/day", algorithm="sliding-window")
    lim.close()


def test_the_policy_file_and_the_middleware_take_the_url(conn: Any) -> None:
    import warnings

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    with warnings.catch_warnings():  # Starlette 1.x warns when its TestClient runs on httpx
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
        from starlette.testclient import TestClient

    from ratewarden.asgi import RateLimitMiddleware

    prefix = f"rwtest:{uuid.uuid4().hex[:8]}:"
    policy = (
        f'[ratewarden]\nstorage = "{PG_URL}?schema={PG_SCHEMA}"\nkey_prefix = "{prefix}"\n'
        '[[rule]]\nname = "all"\nlimits = ["2/hour"]\nalgorithm = "fixed-window"\n'
    )

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = RateLimitMiddleware(Starlette(routes=[Route("/", home)]), policy=policy)
    try:
        with TestClient(app) as client:
            assert [client.get("/").status_code for _ in range(3)] == [200, 200, 429]
        n = conn.execute(
            f'SELECT count(*) FROM "{PG_SCHEMA}".ratewarden_state WHERE starts_with(key, %s)', (prefix,)
        ).fetchone()[0]
        assert n == 1
    finally:
        conn.execute(f'DELETE FROM "{PG_SCHEMA}".ratewarden_state WHERE starts_with(key, %s)', (prefix,))


# -- a restarted server: a private cluster on a spare port (never the shared one) ----------------


@pytest.fixture
def private_pg() -> Iterator[str]:
    """A PostgreSQL cluster of this test's own (initdb as the postgres user), on a spare port,
    in a directory the postgres user can reach (pytest's tmp_path is private to root)."""
    import os
    import shutil
    import socket
    import subprocess
    import tempfile
    from pathlib import Path

    if not (shutil.which("initdb") and shutil.which("pg_ctl") and shutil.which("runuser")):
        pytest.skip("needs initdb, pg_ctl and runuser")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp_path = Path(tempfile.mkdtemp(prefix="rwtest-pg-"))
    os.chmod(tmp_path, 0o755)
    data = tmp_path / "pgdata"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    sock = tmp_path / "sock"
    sock.mkdir()
    shutil.chown(sock, "postgres", "postgres")

    def pg(*args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120)

    try:
        pg("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    except (subprocess.CalledProcessError, OSError) as exc:
        shutil.rmtree(tmp_path, ignore_errors=True)
        pytest.skip(f"cannot create a private cluster: {exc}")
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    try:
        pg("pg_ctl", "-D", str(data), "-o", opts, "-l", str(sock / "log"), "-w", "start")
    except (subprocess.CalledProcessError, OSError) as exc:
        shutil.rmtree(tmp_path, ignore_errors=True)
        pytest.skip(f"cannot start a private cluster: {exc}")
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        yield url
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.slow
def test_a_restarted_server_keeps_the_state_and_the_pool_recovers(private_pg: str) -> None:
    import subprocess
    from pathlib import Path

    url = f"{private_pg}?connect_timeout=1&breaker=0.2"
    lim = Limiter(url, on_store_error="deny")
    alim = AsyncLimiter(url, on_store_error="deny")  # opened after the restart
    try:
        assert [lim.hit("k", "3/hour", algorithm="fixed-window").allowed for _ in range(2)] == [True, True]
        data = subprocess.run(
            ["psql", private_pg, "-Atc", "SHOW data_directory"], check=True, capture_output=True, text=True
        ).stdout.strip()
        log = str(Path(data).parent / "sock" / "log")  # without -l the server would hold our pipe open
        subprocess.run(
            ["runuser", "-u", "postgres", "--", "pg_ctl", "-D", data, "-l", log, "-m", "fast", "-w", "restart"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the pool reconnects by itself
            before = lim.store_errors
            d = lim.hit("other", "100/hour", algorithm="fixed-window")
            if lim.store_errors == before and d.allowed:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the store did not recover after the restart")
        assert [lim.hit("k", "3/hour", algorithm="fixed-window").allowed for _ in range(2)] == [True, False]

        async def ahit() -> bool:
            try:
                return (await alim.hit("k", "3/hour", algorithm="fixed-window")).allowed
            finally:
                await alim.aclose()

        assert asyncio.run(ahit()) is False
    finally:
        lim.close()
