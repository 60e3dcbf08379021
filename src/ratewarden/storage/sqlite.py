"""``sqlite:///path.db``: state in one SQLite file, shared by the threads and processes of a host.

Invariants kept here:

* **Exact across threads and processes.** Every decision that may write is one transaction:
  ``BEGIN IMMEDIATE`` (the file's write lock) ... read the states ... run the pure core
  (:func:`ratewarden.core.evaluate.run`) ... write ... ``COMMIT``. "Now" is read only once the
  lock is held, so a writer never stamps a state earlier than one already written. Peeks read
  one consistent snapshot and take no write lock (WAL readers never block writers).
* **Durable, shared, not blocking.** WAL journal, ``synchronous=NORMAL`` (a commit survives a
  process crash; a power cut may lose the last commits, never corrupt the file), a busy
  timeout (``?timeout=5``, seconds: the longest a decision waits, for this store's other threads
  and for another process holding the write lock, retrying with sleeps of 0.1 to 2 ms; then
  :class:`~ratewarden.errors.StoreError`), one connection per thread (``sqlite3`` connections must
  not cross threads; :class:`ratewarden.AsyncLimiter` calls in from worker threads). The
  threads of one store take turns on a lock of their own before the file lock, so they never
  poll the file lock because of each other.
* **One row per (key, window).** ``state`` holds the core's immutable value: an int as an
  SQLite integer, anything else (tuples, nested tuples, strings) as compact JSON decoded back to
  exactly the same value (lists become tuples again). No row means ``None``. ``expires`` is
  ``now + reset_us``; a state whose ``reset_us`` is 0 is deleted instead of written.
* **Bounded, no full scan.** Expired rows are reclaimed incrementally: every
  ``SWEEP_EVERY`` writes, the writing transaction deletes at most ``SWEEP_LIMIT`` rows found
  through the ``expires`` index. A stale row is harmless meanwhile: the core treats an expired
  state as empty. "Expired" is judged by the wall clock never ahead of the monotonic clock (the
  smallest wall-minus-monotonic offset this process has seen), so a clock stepped ahead by NTP
  and back deletes no live row; with an injected clock, by that clock.
* **The file it opened.** At most once a second (on a decision), the path is checked: a file
  deleted or replaced is logged as an error and reopened (created if need be), and the old
  file's live rows that the new one lacks are copied into it; if it cannot be reopened,
  decisions fail with StoreError. Usage counted only in the old file after another process
  started on the new one is lost: delete ``path``, ``-wal`` and ``-shm`` with every process
  stopped. What remains of SIGBUS (the mapped ``-shm``) is in :mod:`._sqlite_file`.
* **A row it cannot read is reset**, with a warning naming the key (:mod:`._sqlite_rows`).
* **Defined failure.** A path that cannot be opened, a file that is not a SQLite database, or
  one whose tables belong to something else raises :class:`~ratewarden.errors.ConfigError` at
  open time with the path and the reason; every ``sqlite3`` error during a decision (locked
  beyond the timeout, I/O error, disk full, corruption of the file) raises
  :class:`~ratewarden.errors.StoreError`, so the limiter's ``on_store_error`` applies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from ratewarden.clock import micros
from ratewarden.core.algorithms.base import ALLOWED, NEW_STATE, RESET_US, Outcome, Window
from ratewarden.core.algorithms.sliding_log import Log, SlidingLog
from ratewarden.core.evaluate import Op
from ratewarden.errors import ConfigError, StoreError
from ratewarden.storage._expiry import ExpiryClock
from ratewarden.storage._sqlite_file import (
    SCHEMA,
    ShmWatch,
    connect,
    explain,
    file_ident,
    open_file,
    path_of,
)
from ratewarden.storage._sqlite_log import RowLog, delete_log, is_header, write_log
from ratewarden.storage._sqlite_rows import read_state, run_checked, sane, unreadable
from ratewarden.storage._sqlite_tx import Transactions
from ratewarden.storage.base import Item

__all__ = ["DEFAULT_TIMEOUT", "SCHEMA", "SQLiteStore", "decode_state", "encode_state"]

#: the most seconds a decision waits (for this store's other threads, then for another process's
#: write lock) before it fails with StoreError
DEFAULT_TIMEOUT = 5.0
#: the file at the path is checked (deleted, replaced, -shm truncated) at most this often, seconds
FILE_CHECK_INTERVAL = 1.0
#: a sweep of expired rows runs every this many writes of a store ...
SWEEP_EVERY = 64
#: ... and deletes at most this many rows
SWEEP_LIMIT = 256

_SELECT = "SELECT state FROM ratewarden_state WHERE key = ? AND window = ?"
_UPSERT = "INSERT OR REPLACE INTO ratewarden_state (key, window, state, expires) VALUES (?, ?, ?, ?)"
_DELETE = "DELETE FROM ratewarden_state WHERE key = ? AND window = ?"
_DELETE_KEY = "DELETE FROM ratewarden_state WHERE key = ?"
_LIVE = "SELECT key, window, state, expires FROM ratewarden_state WHERE expires > ?"
_COPY = "INSERT OR IGNORE INTO ratewarden_state (key, window, state, expires) VALUES (?, ?, ?, ?)"
_SWEEP = (
    "DELETE FROM ratewarden_state WHERE (key, window) IN "
    "(SELECT key, window FROM ratewarden_state WHERE expires <= ? LIMIT ?)"
)
_INT64 = (-(2**63), 2**63 - 1)
_json = json.JSONEncoder(separators=(",", ":")).encode
#: connections inherited through fork(): never used nor closed by the child (SQLite forbids both)
_ABANDONED: list[Any] = []
log = logging.getLogger("ratewarden")


# -- states <-> column values -----------------------------------------------------------------


def encode_state(state: Any) -> int | str:
    """The column value of a state (never ``None``: no state is no row)."""
    if type(state) is int and _INT64[0] <= state <= _INT64[1]:
        return state
    if type(state) is Log:  # a sliding log: its (time, cost) pairs
        return _json(state.entries())
    return _json(state)


def _text(key: str) -> str:
    """A key SQLite can store: itself, or, if it holds lone surrogates (not UTF-8), a NUL-led
    hex form no valid key collides with by chance. Never an error: an error would fail open."""
    try:
        key.encode()
    except UnicodeEncodeError:
        return "\x00" + key.encode("utf-8", "surrogatepass").hex()
    return key


def _tuples(value: Any) -> Any:
    if type(value) is list:
        return tuple([_tuples(v) if type(v) is list else v for v in value])
    return value


def decode_state(value: Any) -> Any:
    """The state a column value holds: exactly the value :func:`encode_state` was given."""
    if type(value) is int:
        return value
    if type(value) is not str:
        raise ValueError(f"a state column holds {type(value).__name__}, not an integer or JSON text")
    return _tuples(json.loads(value))


def _state(db: sqlite3.Connection, k: str, wid: str, value: Any) -> Any:
    """A decoded column value as the core's state (a sliding log's header: its rows, on demand)."""
    return RowLog.read(db, k, wid, value) if is_header(value) else value


def _decode_row(db: sqlite3.Connection, kw: tuple[str, str], raw: Any) -> Any:
    """One row's column value as the core's state."""
    return _state(db, kw[0], kw[1], decode_state(raw))


# -- opening ----------------------------------------------------------------------------------


def _timeout(value: Any, where: str) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"timeout must be a number of seconds in {where}, not {value!r}") from None
    if isinstance(value, bool) or not t >= 0 or t == float("inf"):
        raise ConfigError(f"timeout must be a finite number of seconds >= 0 in {where}, not {value!r}")
    return t


def _now_us() -> int:
    return time.time_ns() // 1000


def _after_fork(ref: weakref.ref[SQLiteStore]) -> Callable[[], None]:
    def forget() -> None:
        store = ref()
        if store is not None:
            store._forget_parent()

    return forget


class _Conn:
    """A thread's connection; closed when the thread ends (its thread-local slot is dropped)."""

    __slots__ = ("__weakref__", "db", "gen")

    def __init__(self, db: sqlite3.Connection, gen: int) -> None:
        self.db = db
        self.gen = gen  # the store's generation: a connection of an older one is to a replaced file

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.db.close()


class SQLiteStore(Transactions):
    """A store in one SQLite file; thread-safe and multi-process safe.

    ``SQLiteStore("rl.db")`` or, through a limiter, ``Limiter("sqlite:///rl.db?timeout=2")``.
    ``clock`` returns seconds (float) and is for tests; the default is the wall clock, since
    windows are aligned to the epoch and shared by every process on the machine.
    """

    kind = "sqlite"
    blocking = shared = may_fail = True  # the Store contract: I/O on a file other processes share
    _decode = staticmethod(_decode_row)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        key_prefix: str = "",
        clock: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str) or not path or path == ":memory:":
            raise ConfigError(f"a SQLite store needs a file path, not {path!r}")
        if not isinstance(key_prefix, str) or _text(key_prefix) != key_prefix:
            raise ConfigError(f"key_prefix must be a (UTF-8 encodable) string, not {key_prefix!r}")
        self.path = os.path.abspath(path)  # later threads must not depend on the working directory
        self.timeout = _timeout(timeout, "SQLiteStore(timeout=...)")
        self.key_prefix = key_prefix
        if clock is time.time:
            clock = None  # the real clock, named: guarded against NTP steps like the default
        if clock is None:
            self.now: Callable[[], int] = _now_us
        else:
            self.now = micros(clock)
        self._expiry = ExpiryClock() if clock is None else None
        self._local = threading.local()
        self._conns: weakref.WeakSet[_Conn] = weakref.WeakSet()
        self._conns_lock = threading.Lock()
        self._write_lock = threading.Lock()  # threads of this store queue here (within ``timeout``)
        self._reopen_lock = threading.Lock()
        self._gen = 0
        self._ident: tuple[int, int] | None = None  # (device, inode) of the file opened
        self._shm = ShmWatch(self.path)
        self._check_at = 0.0
        self._reopen_failed: str | None = None
        self._writes = 0
        self._closed = False
        self._uri = f"file:{quote(self.path)}?mode=rw"
        self._setup()
        os.register_at_fork(after_in_child=_after_fork(weakref.ref(self)))

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        clock: Callable[[], float] | None = None,
        key_prefix: str = "",
        timeout: float | None = None,
        **options: Any,
    ) -> SQLiteStore:
        """``sqlite:///relative.db``, ``sqlite:////absolute.db``; option ``?timeout=SECONDS``."""
        if options:
            raise ConfigError(f"unknown SQLite store option {sorted(options)[0]!r} (it takes timeout)")
        path = path_of(url)
        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        extra = set(query) - {"timeout"}
        if extra:
            raise ConfigError(f"unknown option {sorted(extra)[0]!r} in {url!r} (sqlite:// takes timeout)")
        if "timeout" in query:
            timeout = _timeout(query["timeout"], repr(url))
        return cls(path, timeout=DEFAULT_TIMEOUT if timeout is None else timeout, key_prefix=key_prefix, clock=clock)

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r}>"

    # -- connections ----------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"the SQLite store {self.path} is closed")
        if time.monotonic() >= self._check_at:
            self._check_file()
        c: _Conn | None = getattr(self._local, "conn", None)
        if c is not None:
            if c.gen == self._gen:
                return c.db
            self._discard()  # a connection to a file that has been replaced
        try:
            db = connect(self._uri)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store {self.path}: {explain(exc)}") from exc
        c = _Conn(db, self._gen)
        with self._conns_lock:
            self._conns.add(c)
        self._local.conn = c
        return db

    def _discard(self) -> None:
        """Drop this thread's connection (after an error left it unusable)."""
        c: _Conn | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if c is not None:
            with self._conns_lock:
                self._conns.discard(c)
            with contextlib.suppress(sqlite3.Error):
                c.db.close()

    def _forget_parent(self) -> None:
        """In a forked child: never touch the parent's connections (SQLite forbids it)."""
        _ABANDONED.append((self._local, list(self._conns)))
        self._local = threading.local()
        self._conns = weakref.WeakSet()
        self._conns_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._reopen_lock = threading.Lock()

    def _check_file(self) -> None:
        """The slow path of :meth:`_conn`: is the file at the path still the one opened, and
        its -shm whole? Reopens a deleted or replaced file; restores a truncated -shm."""
        with self._reopen_lock:
            now = time.monotonic()
            if now < self._check_at:
                return
            self._check_at = now + FILE_CHECK_INTERVAL
            self._expiry_now()  # observe the clocks' offset now and then
            ident = file_ident(self.path)
            if ident != self._ident:
                self._reopen(ident)
            self._shm.check()

    def _reopen(self, ident: tuple[int, int] | None) -> None:
        """The file at the path is not the one opened: open it (creating it if need be), copy
        the old file's live rows that it lacks, and switch every thread over to it."""
        what = "deleted" if ident is None else "replaced by another file"
        c: _Conn | None = getattr(self._local, "conn", None)
        old = c.db if c is not None and c.gen == self._gen else None
        try:
            self._setup(self._gen + 1)
        except ConfigError as exc:
            if self._reopen_failed != str(exc):  # loud once, not once a second
                self._reopen_failed = str(exc)
                log.error("the SQLite store %s was %s while in use and cannot be reopened: %s", self.path, what, exc)
            raise StoreError(f"the SQLite store {self.path} was {what} and cannot be reopened: {exc}") from exc
        self._reopen_failed = None
        rows: list[Any] = []
        if old is not None:  # still open on the old file: its live rows
            with contextlib.suppress(sqlite3.Error):
                rows = old.execute(_LIVE, (self._expiry_now(),)).fetchall()
        log.error(
            "the SQLite store %s was %s while in use: reopened the file at that path and copied "
            "the %d live rows of the old file that the new one lacked",
            self.path,
            what,
            len(rows),
        )
        self._gen += 1  # the other threads' connections are to the old file: each drops its own
        if c is not None and old is not None:
            with self._conns_lock:
                self._conns.discard(c)
            with contextlib.suppress(sqlite3.Error):
                old.close()
        if rows:
            db = self._local.conn.db
            self._write(db, lambda: db.executemany(_COPY, rows))

    def _expiry_now(self, now: int | None = None) -> int:
        """The time expiry is judged at (see :class:`ExpiryClock`); with an injected clock, ``now``."""
        if now is None:
            now = self.now()
        return now if self._expiry is None else self._expiry(now)

    def _setup(self, gen: int = 0) -> None:
        """Open the file as ours (:func:`open_file`) and make it this thread's connection."""
        db = open_file(self.path, self.timeout)
        c = _Conn(db, gen)
        self._ident = file_ident(self.path)
        with self._conns_lock:
            self._conns.add(c)
        self._local.conn = c

    # -- the decisions --------------------------------------------------------------------------

    def hit1(self, key: str, window: Window, cost: int) -> Outcome:
        """The one fast path, equal to :meth:`apply` (tests/storage/test_fast_paths.py); measured: ``apply``
        takes 1.09x-1.27x the time (``python bench/fast_paths.py sqlite``: interleaved timeit in one run, gcra)."""
        k = self.key_prefix + (key if key.isascii() else _text(key))
        wid = window.id
        db = self._conn()
        if not cost:  # a check writes nothing: no write lock
            return run_checked("peek", [window], self._snapshot(db, [(k, wid)]), [(k, wid)], self.now(), [0], "")[0][0]

        def decide() -> Outcome:
            row = db.execute(_SELECT, (k, wid)).fetchone()
            now = self.now()
            if row is None:
                out = window.decide(None, now, cost)
            else:
                try:
                    out = window.decide(_state(db, k, wid, decode_state(row[0])), now, cost)
                    if not sane(out):
                        raise TypeError(f"the outcome {out[:4]!r} is not made of integers")
                except Exception as exc:
                    unreadable(k, wid, row[0], exc)
                    out = window.decide(None, now, cost)
                    if not out[ALLOWED]:
                        db.execute(_DELETE, (k, wid))
            if out[ALLOWED]:
                if out[RESET_US] > 0:
                    self._put(db, k, window, out[NEW_STATE], now + out[RESET_US])
                elif row is not None:
                    db.execute(_DELETE, (k, wid))
                self._wrote(db, now)
            return out

        return self._write(db, decide)

    def apply(self, op: Op, items: Sequence[Item], arg: str = "") -> list[Outcome]:
        prefix = self.key_prefix
        keys = [(prefix + (key if key.isascii() else _text(key)), w.id) for key, w, _ in items]
        windows = [item[1] for item in items]
        costs = [item[2] for item in items]
        db = self._conn()
        if op == "peek":
            return run_checked(op, windows, self._snapshot(db, keys), keys, self.now(), costs, arg)[0]

        def decide() -> list[Outcome]:
            read = [read_state(db, kw, _decode_row) for kw in keys]
            now = self.now()
            outs, new, states = run_checked(op, windows, read, keys, now, costs, arg)
            if new is not None:
                wrote = False
                for (k, wid), w, old, s, o, r in zip(keys, windows, states, new, outs, read, strict=True):
                    if s is old:
                        if r is not old:  # an unreadable row, still unreadable: forget it
                            db.execute(_DELETE, (k, wid))
                        continue
                    if s is None or o[RESET_US] <= 0:
                        if old is not None:
                            db.execute(_DELETE, (k, wid))
                    else:
                        self._put(db, k, w, s, now + o[RESET_US])
                    wrote = True
                if wrote:
                    self._wrote(db, now)
            return outs

        return self._write(db, decide)

    def reset(self, key: str, windows: Sequence[Window] | None = None) -> None:
        """Forget ``key``'s state in ``windows`` (every window when ``None``)."""
        k = self.key_prefix + (key if key.isascii() else _text(key))
        db = self._conn()

        def forget() -> None:
            if windows is None:
                db.execute(_DELETE_KEY, (k,))
            else:
                for w in windows:
                    db.execute(_DELETE, (k, w.id))
                    if isinstance(w, SlidingLog):
                        delete_log(db, k, w.id)

        self._write(db, forget)

    def sweep(self, limit: int | None = None) -> int:
        """Delete expired rows now (at most ``limit``; all when ``None``); how many went."""
        db = self._conn()
        n = -1 if limit is None else limit
        return self._write(db, lambda: db.execute(_SWEEP, (self._expiry_now(), n)).rowcount)

    def __len__(self) -> int:
        """The number of rows (window states) in the file, expired or not."""
        db = self._conn()
        try:
            return int(db.execute("SELECT count(*) FROM ratewarden_state").fetchone()[0])
        except sqlite3.Error as exc:
            raise self._failure(db, exc) from exc

    def close(self) -> None:
        """Close every connection of this store; it cannot be used afterwards."""
        self._closed = True
        with self._conns_lock:
            conns = list(self._conns)
            self._conns = weakref.WeakSet()
        for c in conns:
            with contextlib.suppress(sqlite3.Error):  # closing is best effort
                c.db.close()
        self._local = threading.local()

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _put(db: sqlite3.Connection, k: str, w: Window, state: Any, expires: int) -> None:
        """Write one window's state (a sliding log as a header row and one row per entry)."""
        if isinstance(state, Log):
            write_log(db, k, w.id, state, expires, w.period)
        else:
            db.execute(_UPSERT, (k, w.id, encode_state(state), expires))

    def _wrote(self, db: sqlite3.Connection, now: int) -> None:
        """Count a write; every ``SWEEP_EVERY`` writes, reclaim a few expired rows."""
        self._writes += 1
        if self._writes >= SWEEP_EVERY:
            self._writes = 0
            db.execute(_SWEEP, (self._expiry_now(now), SWEEP_LIMIT))
