"""How a decision of the SQLite store waits for the file's write lock, and how it fails.

Every decision that may write is ``BEGIN IMMEDIATE`` ... ``COMMIT``. Its wait is bounded by the
store's ``timeout``, counted once from the start of the decision: first for the store's other
threads (they take turns on a lock of their own, so they never poll the file lock because of
each other), then for another process holding the file's write lock, retried with short,
growing sleeps. When the timeout has passed, or on any other ``sqlite3`` error, the decision
raises :class:`~ratewarden.errors.StoreError` and the limiter's ``on_store_error`` applies.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ratewarden.errors import StoreError
from ratewarden.storage._sqlite_file import explain, in_transaction
from ratewarden.storage._sqlite_rows import read_state

__all__ = ["Transactions"]

#: while another process holds the write lock, retry after this many seconds, doubling up to
#: ``_MAX_WAIT`` (SQLite's own busy handler sleeps up to 100 ms at a time, and a process that
#: sleeps that long loses the lock to busier ones: decisions of a second or more under load)
_FIRST_WAIT = 0.0001
_MAX_WAIT = 0.002
_SQLITE_BUSY = 5
_T = TypeVar("_T")


class Transactions:
    """The waiting and failing half of :class:`ratewarden.storage.sqlite.SQLiteStore`."""

    path: str
    timeout: float
    _closed: bool
    _write_lock: threading.Lock
    #: a row's column value -> its state
    _decode: Callable[[sqlite3.Connection, tuple[str, str], Any], Any]

    def check_window(self, window: Any) -> None:
        """The Store contract: every window the core accepts is exact in SQLite (Python ints)."""

    def _discard(self) -> None:  # pragma: no cover - provided by the store
        raise NotImplementedError

    def _write(self, db: sqlite3.Connection, body: Callable[[], _T]) -> _T:
        """``BEGIN IMMEDIATE``, ``body()``, ``COMMIT``: one atomic decision. While another process
        holds the write lock, roll back and retry (short, growing sleeps) for up to ``timeout``."""
        deadline = time.monotonic() + self.timeout  # one budget for the whole decision
        if not self._write_lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            raise StoreError(
                f"the SQLite store {self.path} failed: its other threads held it for more than the "
                f"{self.timeout} s timeout (another process holds the write lock)"
            )
        try:
            delay = _FIRST_WAIT
            while True:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    result = body()
                    db.execute("COMMIT")
                    return result
                except sqlite3.OperationalError as exc:
                    if in_transaction(db):
                        self._rollback(db)
                    deadline, delay = self._wait(db, exc, deadline, delay)
                except (sqlite3.Error, ValueError, TypeError) as exc:
                    raise self._failure(db, exc) from exc
        finally:
            if in_transaction(db):
                self._rollback(db)
            self._write_lock.release()

    def _snapshot(self, db: sqlite3.Connection, keys: list[tuple[str, str]]) -> list[Any]:
        """The states of ``keys``, read from one snapshot without the write lock (WAL readers
        never wait for writers; SQLITE_BUSY only while a crashed writer's log is recovered)."""
        deadline = time.monotonic() + self.timeout
        delay = _FIRST_WAIT
        while True:
            try:
                if len(keys) == 1:
                    return [read_state(db, keys[0], self._decode)]
                db.execute("BEGIN")
                try:
                    return [read_state(db, kw, self._decode) for kw in keys]
                finally:
                    db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if in_transaction(db):
                    self._rollback(db)
                deadline, delay = self._wait(db, exc, deadline, delay)
            except (sqlite3.Error, ValueError, TypeError) as exc:
                if in_transaction(db):
                    self._rollback(db)
                raise self._failure(db, exc) from exc

    def _wait(
        self, db: sqlite3.Connection, exc: sqlite3.OperationalError, deadline: float, delay: float
    ) -> tuple[float, float]:
        """After SQLITE_BUSY: sleep a little and return the next (deadline, delay); any other
        error, or the timeout passed, raises StoreError."""
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF != _SQLITE_BUSY:
            raise self._failure(db, exc) from exc
        now = time.monotonic()
        if now >= deadline:
            raise self._failure(db, exc) from exc
        time.sleep(min(delay, deadline - now))
        return deadline, min(2 * delay, _MAX_WAIT)

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):  # the failed statement may have rolled back already
            db.execute("ROLLBACK")

    def _failure(self, db: sqlite3.Connection, exc: Exception) -> StoreError:
        if in_transaction(db):
            self._rollback(db)
        if isinstance(exc, sqlite3.Error):
            if self._closed:
                return StoreError(f"the SQLite store {self.path} is closed")
            if in_transaction(db):  # pragma: no cover - a connection we cannot reuse
                self._discard()
            text = explain(exc)
            if "locked" in str(exc) or "busy" in str(exc):
                text += f" for more than the {self.timeout} s timeout"
            return StoreError(f"the SQLite store {self.path} failed: {text}")
        return StoreError(f"the SQLite store {self.path} holds a state it cannot read ({type(exc).__name__}: {exc})")
