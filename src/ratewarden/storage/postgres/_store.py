"""``PostgresStore``: one store object for sync and async callers, over psycopg 3 pools.

Invariants kept here:

* **One round trip per decision.** Every operation is one ``SELECT {S}apply(...)`` (or
  ``{S}hit1(...)`` for one window) on an autocommit connection: the function takes the keys'
  advisory locks, reads, decides, writes and commits in one statement, one transaction.
* **Database time.** The functions read ``clock_timestamp()``; the client clock is used only to
  send the quota's calendar bounds. ``_test_now`` (tests only) sends an injected clock instead.
* **Defined failure.** Every psycopg / pool error becomes :class:`StoreError`. Connect and
  statement timeouts are set on every connection. After a connection failure a circuit
  breaker fails fast for ``breaker`` seconds, so a dead server costs one timeout per interval,
  not per request. A connection the server terminated (``pg_terminate_backend``, a restart)
  raises ``AdminShutdown`` before its statement ran: that call is retried once on a fresh
  connection; the pool drops broken connections and opens new ones.
* **Bounded table.** Every ``sweep_interval`` seconds one call also deletes up to
  ``sweep_batch`` expired rows (index on ``expires``, ``SKIP LOCKED``); when a sweep finds a
  full batch the next call sweeps again, so deletion keeps up with any flood of new keys.
"""

from __future__ import annotations

import asyncio
import select
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors

from ratewarden.core.algorithms import Concurrency, Quota
from ratewarden.core.algorithms.base import Outcome, Window
from ratewarden.core.evaluate import Op
from ratewarden.errors import ConfigError, StoreError
from ratewarden.storage.base import Item
from ratewarden.storage.postgres._codec import Specs, db_key, parse
from ratewarden.storage.postgres._schema import Names, migrate, migrate_async

__all__ = ["PostgresStore"]

_OPS = frozenset({"hit", "peek", "charge", "acquire", "release"})
_ERRORS = (psycopg.Error, psycopg_pool.PoolTimeout, OSError, asyncio.TimeoutError)
#: server-side errors of a statement: the server is fine, the breaker stays closed
_TEST_SLACK = 3_600  # seconds rows outlive their window when a test injects the clock


def _dead(conn: Any) -> bool:
    """Whether an idle pooled connection was closed by the server (terminated, restarted): its
    socket is readable (the server's FATAL message, or EOF) although no statement is running.
    One non-blocking ``select`` (a microsecond); such a connection is closed and never used."""
    try:
        fd = conn.pgconn.socket
        return bool(select.select([fd], [], [], 0)[0])
    except (ValueError, OSError, psycopg.Error):  # fd beyond select()'s range, or already closed
        return bool(conn.closed)


class _Breaker:
    """After a connection failure, fail fast for ``backoff`` seconds; then try again."""

    __slots__ = ("backoff", "last", "until")

    def __init__(self, backoff: float) -> None:
        self.backoff = backoff
        self.until = 0.0
        self.last = ""

    def check(self) -> None:
        if self.until:
            if time.monotonic() < self.until:
                raise StoreError(f"postgresql unavailable ({self.last}); failing fast until the next retry")
            self.until = 0.0

    def fail(self, exc: BaseException) -> None:
        self.last = f"{type(exc).__name__}: {exc}".strip()
        if self.backoff > 0:
            self.until = time.monotonic() + self.backoff


class PostgresStore:
    """The ``postgresql://`` store. Use :func:`ratewarden.storage.postgres.open_postgres`.

    Pools are opened lazily: the sync pool on the first sync call, one asyncio pool per event
    loop on the first async call; the first call of each also installs the schema if needed.
    """

    kind = "postgres"

    def __init__(
        self,
        conninfo: str,
        *,
        names: Names,
        key_prefix: str = "rw:",
        connect_timeout: float = 2.0,
        statement_timeout: float = 1.0,
        pool_min: int = 1,
        pool_max: int = 10,
        breaker: float = 0.5,
        sweep_interval: float = 1.0,
        sweep_batch: int = 1000,
        synchronous_commit: str = "off",
        clock: Callable[[], float] | None = None,
        _test_now: Callable[[], float] | None = None,
        url: str = "postgresql://",
    ) -> None:
        if not isinstance(key_prefix, str):
            raise ConfigError(f"key_prefix must be a string, not {key_prefix!r}")
        self.names = names
        self.key_prefix = key_prefix
        self.url = url
        self.connect_timeout = connect_timeout
        self._conninfo = conninfo
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "prepare_threshold": 0,
            "connect_timeout": max(1, round(connect_timeout)),
            "options": f"-c statement_timeout={int(statement_timeout * 1000)} "
            f"-c synchronous_commit={synchronous_commit}",
        }
        self._clock = clock or time.time
        self._test_now = _test_now
        self._slack = 0 if _test_now is None else _TEST_SLACK
        self._specs = Specs()
        self._breaker = _Breaker(breaker)
        self._sweep_interval = sweep_interval
        self._sweep_batch = sweep_batch
        self._next_sweep = 0.0
        self._lock = threading.Lock()
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._apool: psycopg_pool.AsyncConnectionPool[Any] | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._aready = False

    def check_window(self, window: Window) -> None:
        """Raise :class:`ConfigError` now if the functions cannot decide ``window`` in bigint."""
        if not isinstance(window, Quota):
            self._specs.get(window, 0)

    # -- arguments (shared by both faces) -----------------------------------------------------

    def _now(self) -> tuple[int | None, int]:
        """(the time sent to the database: None = its own clock, the client's now in µs)."""
        if self._test_now is not None:
            now = int(self._test_now() * 1_000_000 + 0.5)
            return now, now
        return None, int(self._clock() * 1_000_000)

    def _sweep(self) -> int:
        if self._sweep_interval <= 0:
            return 0
        t = time.monotonic()
        if t < self._next_sweep:
            return 0
        self._next_sweep = t + self._sweep_interval
        return self._sweep_batch

    def _swept(self, reply: list[int], n: int, sweep: int) -> None:
        if sweep and len(reply) > 4 * n and reply[4 * n] >= sweep:
            self._next_sweep = 0.0  # a full batch: more may be due, sweep again on the next call

    def _args1(self, key: str, w: Window, cost: int) -> tuple[Any, ...]:
        now, client_now = self._now()
        return (now, self._slack, db_key(self.key_prefix, key), w.id, self._specs.get(w, client_now), cost)

    def _args(self, op: Op, items: Sequence[Item], arg: str) -> tuple[Any, ...]:
        if op not in _OPS:
            raise ValueError(f"unknown operation {op!r}")
        now, client_now = self._now()
        keys, wids, specs, costs = [], [], [], []
        for key, w, cost in items:
            if op == "charge" and isinstance(w, Concurrency):
                w.charge(None, client_now, cost)  # raises what the core raises (no charge of a lease)
            keys.append(db_key(self.key_prefix, key))
            wids.append(w.id)
            specs.append(self._specs.get(w, client_now))
            costs.append(cost)
        return (now, self._slack, op, arg, keys, wids, specs, costs)

    def _error(self, exc: BaseException) -> StoreError:
        if isinstance(exc, psycopg_pool.PoolTimeout | OSError) or (
            isinstance(exc, psycopg.OperationalError) and "connect" in str(exc).split(":")[0]
        ):
            self._breaker.fail(exc)  # no connection to be had: fail fast for a while
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return StoreError(f"postgresql store {self.url}: {type(exc).__name__}: {msg}")

    # -- sync face ----------------------------------------------------------------------------

    def _sync_pool(self) -> psycopg_pool.ConnectionPool[Any]:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    p: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
                        self._conninfo,
                        min_size=self._pool_min,
                        max_size=self._pool_max,
                        kwargs=self._kwargs,
                        timeout=self.connect_timeout,
                        open=False,
                        name="ratewarden",
                    )
                    try:
                        p.open(wait=False)
                        with p.connection() as conn:
                            migrate(conn, self.names)
                    except BaseException:
                        p.close(timeout=1.0)
                        raise
                    self._pool = p
                pool = self._pool
        return pool

    def _call(self, sql: str, args: tuple[Any, ...]) -> list[int]:
        self._breaker.check()
        try:
            pool = self._pool or self._sync_pool()
            for attempt in range(self._pool_max + 2):
                try:
                    with pool.connection() as conn:
                        if _dead(conn):
                            conn.close()  # the pool replaces it
                            continue
                        row = conn.execute(sql, args).fetchone()
                    break
                except pg_errors.AdminShutdown:  # terminated before its statement ran, or during it
                    if attempt > self._pool_max:
                        raise
            else:
                raise StoreError("no live connection in the pool")
            if row is None:  # pragma: no cover - a SELECT of a function returns one row
                raise StoreError("no reply from the ratewarden functions")
            reply: list[int] = row[0]
            return reply
        except _ERRORS as exc:
            raise self._error(exc) from exc

    def hit1(self, key: str, window: Window, cost: int) -> Outcome:
        sweep = self._sweep()
        r = self._call(self.names.hit1, (*self._args1(key, window, cost), sweep))
        self._swept(r, 1, sweep)
        try:
            return (r[0] == 1, r[1], r[2], r[3], None)
        except (TypeError, IndexError):
            return parse(r, 1)[0]  # raises with the reply in the message

    def apply(self, op: Op, items: Sequence[Item], arg: str = "") -> list[Outcome]:
        """All-or-nothing over every item (any keys, any windows) in one function call."""
        if not items:
            if op not in _OPS:
                raise ValueError(f"unknown operation {op!r}")
            return []
        sweep = self._sweep()
        r = self._call(self.names.apply, (*self._args(op, items, arg), sweep))
        self._swept(r, len(items), sweep)
        return parse(r, len(items))

    def _reset_sql(self, windows: Sequence[Window] | None) -> str:
        where = "key = %s" if windows is None else "key = %s AND wid = ANY(%s)"
        return f"DELETE FROM {self.names.state} WHERE {where}"

    def _reset_args(self, key: str, windows: Sequence[Window] | None) -> tuple[Any, ...]:
        k = db_key(self.key_prefix, key)
        return (k,) if windows is None else (k, [w.id for w in windows])

    def reset(self, key: str, windows: Sequence[Window] | None = None) -> None:
        """Delete the key's windows (all of them: ``None``), under the key's lock."""
        self._breaker.check()
        args = self._reset_args(key, windows)
        try:
            with self._sync_pool().connection() as conn, conn.transaction():
                conn.execute(f"SELECT pg_advisory_xact_lock(hashtextextended(%s, {self.names.seed}))", (args[0],))
                conn.execute(self._reset_sql(windows), args)
        except _ERRORS as exc:
            raise self._error(exc) from exc

    def sweep(self, batch: int = 10_000) -> int:
        """Delete up to ``batch`` expired rows now; returns how many (an admin operation)."""
        now, _ = self._now()
        sql = (
            f"DELETE FROM {self.names.state} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {self.names.state} "
            "WHERE expires < coalesce(%s, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint) / 1000000 "
            "ORDER BY expires LIMIT %s FOR UPDATE SKIP LOCKED))"
        )
        try:
            with self._sync_pool().connection() as conn:
                return conn.execute(sql, (now, batch)).rowcount
        except _ERRORS as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=1.0)

    # -- async face ---------------------------------------------------------------------------

    async def _async_pool(self) -> psycopg_pool.AsyncConnectionPool[Any]:
        loop = asyncio.get_running_loop()
        pool = self._apool
        if pool is None or self._aloop is not loop:
            pool = psycopg_pool.AsyncConnectionPool(
                self._conninfo,
                min_size=self._pool_min,
                max_size=self._pool_max,
                kwargs=self._kwargs,
                timeout=self.connect_timeout,
                open=False,
                name="ratewarden-async",
            )
            self._apool, self._aloop, self._aready = pool, loop, False
            await pool.open(wait=False)
        if not self._aready:
            async with pool.connection() as conn:
                await migrate_async(conn, self.names)
            self._aready = True
        return pool

    async def _acall(self, sql: str, args: tuple[Any, ...]) -> list[int]:
        self._breaker.check()
        try:
            pool = self._apool if self._aready and self._aloop is asyncio.get_running_loop() else None
            if pool is None:
                pool = await self._async_pool()
            for attempt in range(self._pool_max + 2):
                try:
                    async with pool.connection() as conn:
                        if _dead(conn):
                            await conn.close()  # the pool replaces it
                            continue
                        row = await (await conn.execute(sql, args)).fetchone()
                    break
                except pg_errors.AdminShutdown:  # terminated before its statement ran, or during it
                    if attempt > self._pool_max:
                        raise
            else:
                raise StoreError("no live connection in the pool")
            if row is None:  # pragma: no cover
                raise StoreError("no reply from the ratewarden functions")
            reply: list[int] = row[0]
            return reply
        except _ERRORS as exc:
            raise self._error(exc) from exc

    async def ahit1(self, key: str, window: Window, cost: int) -> Outcome:
        sweep = self._sweep()
        r = await self._acall(self.names.hit1, (*self._args1(key, window, cost), sweep))
        self._swept(r, 1, sweep)
        return parse(r, 1)[0]

    async def aapply(self, op: Op, items: Sequence[Item], arg: str = "") -> list[Outcome]:
        if not items:
            if op not in _OPS:
                raise ValueError(f"unknown operation {op!r}")
            return []
        sweep = self._sweep()
        r = await self._acall(self.names.apply, (*self._args(op, items, arg), sweep))
        self._swept(r, len(items), sweep)
        return parse(r, len(items))

    async def areset(self, key: str, windows: Sequence[Window] | None = None) -> None:
        self._breaker.check()
        args = self._reset_args(key, windows)
        try:
            pool = await self._async_pool()
            async with pool.connection() as conn, conn.transaction():
                await conn.execute(
                    f"SELECT pg_advisory_xact_lock(hashtextextended(%s, {self.names.seed}))", (args[0],)
                )
                await conn.execute(self._reset_sql(windows), args)
        except _ERRORS as exc:
            raise self._error(exc) from exc

    async def aclose(self) -> None:
        pool, self._apool, self._aloop = self._apool, None, None
        if pool is not None:
            await pool.close(timeout=1.0)
        self.close()

    def __repr__(self) -> str:
        return f"<PostgresStore {self.url} {self.names.s}*>"
