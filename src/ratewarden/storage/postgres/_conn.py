"""Connection health for :class:`~ratewarden.storage.postgres.PostgresStore`: which errors
open the circuit breaker, the breaker itself, and the check that finds a pooled session the
server closed while it sat idle (so it is replaced instead of failing a request)."""

from __future__ import annotations

import select
import time
from typing import Any

import psycopg
import psycopg_pool

from ratewarden.errors import StoreError

__all__ = ["Breaker", "dead", "unreachable"]


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means no connection could be had (the breaker opens), rather than one
    statement or one connection failing (the pool replaces that connection)."""
    if isinstance(exc, psycopg_pool.PoolTimeout | OSError):
        return True
    return isinstance(exc, psycopg.OperationalError) and "connect" in str(exc).split(":")[0]


def dead(conn: Any) -> bool:
    """Whether an idle pooled connection was closed by the server (terminated, restarted): its
    socket is readable (the server's FATAL message, or EOF) although no statement is running.
    One non-blocking ``select`` (a microsecond); such a connection is closed and never used."""
    try:
        fd = conn.pgconn.socket
        return bool(select.select([fd], [], [], 0)[0])
    except (ValueError, OSError, psycopg.Error):  # fd beyond select()'s range, or already closed
        return bool(conn.closed)


class Breaker:
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
