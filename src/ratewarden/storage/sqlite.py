"""``sqlite:///path.db``: state in one SQLite file, shared by the threads and processes of a host.

Invariants kept here:

* **Exact across threads and processes.** Every decision that may write is one transaction:
  ``BEGIN IMMEDIATE`` (the file's write lock) ... read the states ... run the pure core
  (:func:`ratewarden.core.evaluate.run`) ... write ... ``COMMIT``. "Now" is read only once the
  lock is held, so a writer never stamps a state earlier than one already written. Peeks read
  one consistent snapshot and take no write lock (WAL readers never block writers).
* **Durable, shared, not blocking.** WAL journal, ``synchronous=NORMAL`` (a commit survives a
  process crash; a power cut may lose the last commits, never corrupt the file), a busy
  timeout (``?timeout=5``, seconds: how long a decision retries, with sleeps of 0.1 to 2 ms, while
  another process holds the write lock), one connection per thread (``sqlite3`` connections must
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
  state as empty.
* **Defined failure.** A path that cannot be opened, a file that is not a SQLite database, or
  one whose tables belong to something else raises :class:`~ratewarden.errors.ConfigError` at
  open time with the path and the reason; every ``sqlite3`` error during a decision (locked
  beyond the timeout, I/O error, disk full, corruption) raises
  :class:`~ratewarden.errors.StoreError`, so the limiter's ``on_store_error`` applies.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ratewarden.core.algorithms.base import Outcome, Window
from ratewarden.core.algorithms.sliding_log import Log, SlidingLog
from ratewarden.core.evaluate import Op, run
from ratewarden.errors import ConfigError, StoreError
from ratewarden.storage._sqlite_log import RowLog, delete_log, is_header, write_log
from ratewarden.storage.base import Item

__all__ = ["DEFAULT_TIMEOUT", "SCHEMA", "SQLiteStore", "decode_state", "encode_state"]

#: the value of ``ratewarden_meta.schema`` this module reads and writes
SCHEMA = "ratewarden-sqlite-1"
#: seconds a decision waits for another process's write lock before it fails with StoreError
DEFAULT_TIMEOUT = 5.0
#: while another process holds the write lock, retry after this many seconds, doubling up to
#: ``_MAX_WAIT`` (SQLite's own busy handler sleeps up to 100 ms at a time, and a process that
#: sleeps that long loses the lock to busier ones: decisions of a second or more under load)
_FIRST_WAIT = 0.0001
_MAX_WAIT = 0.002
_SQLITE_BUSY = 5
#: a sweep of expired rows runs every this many writes of a store ...
SWEEP_EVERY = 64
#: ... and deletes at most this many rows
SWEEP_LIMIT = 256

_STATE_COLUMNS = [("key", "TEXT", 1, 1), ("window", "TEXT", 1, 2), ("state", "", 1, 0), ("expires", "INTEGER", 1, 0)]
_CREATE = (
    "CREATE TABLE IF NOT EXISTS ratewarden_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS ratewarden_state (key TEXT NOT NULL, window TEXT NOT NULL, state NOT NULL,"
    " expires INTEGER NOT NULL, PRIMARY KEY (key, window)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS ratewarden_state_expires ON ratewarden_state (expires)",
    f"INSERT OR IGNORE INTO ratewarden_meta (name, value) VALUES ('schema', '{SCHEMA}')",
)
_SELECT = "SELECT state FROM ratewarden_state WHERE key = ? AND window = ?"
_UPSERT = "INSERT OR REPLACE INTO ratewarden_state (key, window, state, expires) VALUES (?, ?, ?, ?)"
_DELETE = "DELETE FROM ratewarden_state WHERE key = ? AND window = ?"
_DELETE_KEY = "DELETE FROM ratewarden_state WHERE key = ?"
_SWEEP = (
    "DELETE FROM ratewarden_state WHERE (key, window) IN "
    "(SELECT key, window FROM ratewarden_state WHERE expires <= ? LIMIT ?)"
)
_INT64 = (-(2**63), 2**63 - 1)
_T = TypeVar("_T")
_json = json.JSONEncoder(separators=(",", ":")).encode
#: connections inherited through fork(): never used nor closed by the child (SQLite forbids both)
_ABANDONED: list[Any] = []


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


# -- opening ----------------------------------------------------------------------------------


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigError(
            f"{url!r}: a SQLite URL names a file, not a host {parts.netloc!r}; "
            "use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = unquote(parts.path)
    if path.startswith("/"):
        path = path[1:]
    if not path or path.endswith("/"):
        raise ConfigError(f"{url!r} names no file; use sqlite:///relative/path.db or sqlite:////absolute/path.db")
    if path == ":memory:" or path.startswith("file:") or "mode=memory" in parts.query:
        raise ConfigError(
            f"{url!r}: an in-memory SQLite database is neither shared between processes nor kept after a "
            "restart; use memory:// for in-process limits, or a file: sqlite:///path.db"
        )
    return path


def _timeout(value: Any, where: str) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"timeout must be a number of seconds in {where}, not {value!r}") from None
    if isinstance(value, bool) or not t >= 0 or t == float("inf"):
        raise ConfigError(f"timeout must be a finite number of seconds >= 0 in {where}, not {value!r}")
    return t


def _explain(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc)


def _in_transaction(db: sqlite3.Connection) -> bool:
    try:
        return db.in_transaction
    except sqlite3.Error:  # closed meanwhile
        return False


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

    __slots__ = ("__weakref__", "db")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.db.close()


class SQLiteStore:
    """A store in one SQLite file; thread-safe and multi-process safe.

    ``SQLiteStore("rl.db")`` or, through a limiter, ``Limiter("sqlite:///rl.db?timeout=2")``.
    ``clock`` returns seconds (float) and is for tests; the default is the wall clock, since
    windows are aligned to the epoch and shared by every process on the machine.
    """

    kind = "sqlite"

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
        if clock is None:
            self.now: Callable[[], int] = _now_us
        else:
            self.now = lambda: int(clock() * 1_000_000 + 0.5)
        self._local = threading.local()
        self._conns: weakref.WeakSet[_Conn] = weakref.WeakSet()
        self._conns_lock = threading.Lock()
        self._write_lock = threading.Lock()
        # threads of this store queue here; the holder waits at most ``timeout`` for other processes
        self._lock_wait = self.timeout + 1.0
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
        path = _path_of(url)
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

    def _connect(self, uri: str, busy_timeout: float = 0.0) -> sqlite3.Connection:
        """A connection in autocommit mode. Decisions wait for the write lock in :meth:`_write`,
        so SQLite's busy handler is off (``busy_timeout=0``) except while setting the file up."""
        db = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            db.close()
            raise
        return db

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"the SQLite store {self.path} is closed")
        c: _Conn | None = getattr(self._local, "conn", None)
        if c is not None:
            return c.db
        try:
            db = self._connect(self._uri)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store {self.path}: {_explain(exc)}") from exc
        c = _Conn(db)
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

    def _setup(self) -> None:
        """Open (creating if needed) the file, check it is ours, switch to WAL, create the tables."""
        where = f"the SQLite store {self.path}"
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise ConfigError(f"cannot open {where}: the directory {parent} does not exist")
        if os.path.isdir(self.path):
            raise ConfigError(f"cannot open {where}: it is a directory")
        try:
            db = self._connect(f"file:{quote(self.path)}?mode=rwc", busy_timeout=max(self.timeout, 1.0))
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open {where}: {_explain(exc)}{self._hint()}") from exc
        try:
            ready = self._check_schema(db, where)
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise ConfigError(f"cannot use {where}: SQLite refused the WAL journal (journal_mode is {mode})")
            if not ready:  # a new file (or one being set up by another process right now)
                db.execute("BEGIN IMMEDIATE")
                try:
                    self._check_schema(db, where)
                    for sql in _CREATE:
                        db.execute(sql)
                    db.execute("COMMIT")
                finally:
                    if _in_transaction(db):
                        db.execute("ROLLBACK")
                self._check_schema(db, where, created=True)
            db.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            db.close()
            raise ConfigError(f"cannot use {where}: {_explain(exc)}{self._hint()}") from exc
        except BaseException:
            db.close()
            raise
        c = _Conn(db)
        self._conns.add(c)
        self._local.conn = c

    def _hint(self) -> str:
        parent = os.path.dirname(self.path)
        if not os.access(parent, os.W_OK):
            return f"; the directory {parent} is not writable (SQLite creates its -wal and -shm files there)"
        if os.path.exists(self.path) and not os.access(self.path, os.W_OK):
            return "; the file is not writable"
        return ""

    @staticmethod
    def _check_schema(db: sqlite3.Connection, where: str, created: bool = False) -> bool:
        """Raise ConfigError if the file holds something else; True when it is set up completely."""
        names = {r[0]: r[1] for r in db.execute("SELECT name, type FROM sqlite_master")}
        tables = {name for name, kind in names.items() if kind == "table"}
        if "ratewarden_meta" not in tables:
            others = sorted(t for t in tables if not t.startswith("sqlite_"))
            if created or others:
                raise ConfigError(
                    f"cannot use {where}: it holds tables of something else ({', '.join(others[:5])}) "
                    "and no ratewarden schema; give the limiter a database file of its own"
                )
            return False  # an empty database: ours to set up
        row = db.execute("SELECT value FROM ratewarden_meta WHERE name = 'schema'").fetchone()
        if row is None or row[0] != SCHEMA:
            found = "no schema version" if row is None else f"schema {row[0]!r}"
            raise ConfigError(f"cannot use {where}: it has {found}, this ratewarden reads {SCHEMA!r}")
        if "ratewarden_state" in tables:
            cols = [(r[1], r[2].upper(), r[3], r[5]) for r in db.execute("PRAGMA table_info(ratewarden_state)")]
            if cols != _STATE_COLUMNS:
                raise ConfigError(f"cannot use {where}: the table ratewarden_state has unexpected columns {cols}")
        elif created:
            raise ConfigError(f"cannot use {where}: the table ratewarden_state is missing")
        return "ratewarden_state" in tables and "ratewarden_state_expires" in names

    # -- the decisions --------------------------------------------------------------------------

    def hit1(self, key: str, window: Window, cost: int) -> Outcome:
        """One window, ``hit``: the fast path of :meth:`apply`."""
        k = self.key_prefix + (key if key.isascii() else _text(key))
        wid = window.id
        db = self._conn()
        if not cost:  # a check writes nothing: no write lock
            return window.decide(self._snapshot(db, [(k, wid)])[0], self.now(), 0)

        def decide() -> Outcome:
            row = db.execute(_SELECT, (k, wid)).fetchone()
            now = self.now()
            out = window.decide(None if row is None else _state(db, k, wid, decode_state(row[0])), now, cost)
            if out[0]:
                if out[2] > 0:
                    self._put(db, k, window, out[4], now + out[2])
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
            return run(op, windows, self._snapshot(db, keys), self.now(), costs, arg)[0]

        def decide() -> list[Outcome]:
            states = [self._read(db, kw) for kw in keys]
            now = self.now()
            outs, new = run(op, windows, states, now, costs, arg)
            if new is not None:
                wrote = False
                for (k, wid), w, old, s, o in zip(keys, windows, states, new, outs, strict=True):
                    if s is old:
                        continue
                    if s is None or o[2] <= 0:
                        if old is not None:
                            db.execute(_DELETE, (k, wid))
                    else:
                        self._put(db, k, w, s, now + o[2])
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
        return self._write(db, lambda: db.execute(_SWEEP, (self.now(), -1 if limit is None else limit)).rowcount)

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

    def _write(self, db: sqlite3.Connection, body: Callable[[], _T]) -> _T:
        """``BEGIN IMMEDIATE``, ``body()``, ``COMMIT``: one atomic decision. While another process
        holds the write lock, roll back and retry (short, growing sleeps) for up to ``timeout``."""
        if not self._write_lock.acquire(timeout=self._lock_wait):
            raise StoreError(f"the SQLite store {self.path} stayed busy for more than {self.timeout} s")
        try:
            deadline = 0.0
            delay = _FIRST_WAIT
            while True:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    result = body()
                    db.execute("COMMIT")
                    return result
                except sqlite3.OperationalError as exc:
                    if _in_transaction(db):
                        self._rollback(db)
                    deadline, delay = self._wait(db, exc, deadline, delay)
                except (sqlite3.Error, ValueError, TypeError) as exc:
                    raise self._failure(db, exc) from exc
        finally:
            if _in_transaction(db):
                self._rollback(db)
            self._write_lock.release()

    def _snapshot(self, db: sqlite3.Connection, keys: list[tuple[str, str]]) -> list[Any]:
        """The states of ``keys``, read from one snapshot without the write lock (WAL readers
        never wait for writers; SQLITE_BUSY only while a crashed writer's log is recovered)."""
        deadline = 0.0
        delay = _FIRST_WAIT
        while True:
            try:
                if len(keys) == 1:
                    return [self._read(db, keys[0])]
                db.execute("BEGIN")
                try:
                    return [self._read(db, kw) for kw in keys]
                finally:
                    db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if _in_transaction(db):
                    self._rollback(db)
                deadline, delay = self._wait(db, exc, deadline, delay)
            except (sqlite3.Error, ValueError, TypeError) as exc:
                if _in_transaction(db):
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
        if not deadline:
            deadline = now + self.timeout
        if now >= deadline:
            raise self._failure(db, exc) from exc
        time.sleep(min(delay, deadline - now))
        return deadline, min(2 * delay, _MAX_WAIT)

    @staticmethod
    def _read(db: sqlite3.Connection, kw: tuple[str, str]) -> Any:
        row = db.execute(_SELECT, kw).fetchone()
        return None if row is None else _state(db, kw[0], kw[1], decode_state(row[0]))

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
            db.execute(_SWEEP, (now, SWEEP_LIMIT))

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):  # the failed statement may have rolled back already
            db.execute("ROLLBACK")

    def _failure(self, db: sqlite3.Connection, exc: Exception) -> StoreError:
        if _in_transaction(db):
            self._rollback(db)
        if isinstance(exc, sqlite3.Error):
            if self._closed:
                return StoreError(f"the SQLite store {self.path} is closed")
            if _in_transaction(db):  # pragma: no cover - a connection we cannot reuse
                self._discard()
            text = _explain(exc)
            if "locked" in str(exc) or "busy" in str(exc):
                text += f" for more than the {self.timeout} s timeout"
            return StoreError(f"the SQLite store {self.path} failed: {text}")
        return StoreError(f"the SQLite store {self.path} holds a state it cannot read ({type(exc).__name__}: {exc})")
