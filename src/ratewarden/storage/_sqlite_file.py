"""The SQLite store's file: naming it, opening it as ours, and watching it while it is in use.

* **Opening.** A path that cannot be opened, a file that is not a SQLite database, or one whose
  tables belong to something else raises :class:`~ratewarden.errors.ConfigError` with the path
  and the reason. A new (empty) file is set up under ``BEGIN IMMEDIATE``, so processes that
  open it at once race safely. Every connection has ``mmap_size = 0``: a truncated database
  file is an I/O error (StoreError), never SIGBUS.
* **The WAL index.** SQLite always maps ``path-shm`` into memory when several processes share
  a file in WAL mode (only ``locking_mode = EXCLUSIVE``, which shuts the other processes out,
  keeps it on the heap). If something truncates it, the next access to a page past its end
  kills the process with SIGBUS. :class:`ShmWatch` notices a truncation on the store's slow
  path (at most once a second) and gives the file its size back (zeros), which SQLite reads as
  a stale index and rebuilds from the WAL; a decision that touches the index before that check
  still dies. Never truncate or edit ``-shm``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from urllib.parse import quote, unquote, urlsplit

from ratewarden.errors import ConfigError

__all__ = ["SCHEMA", "ShmWatch", "connect", "explain", "file_ident", "in_transaction", "open_file", "path_of"]

#: the value of ``ratewarden_meta.schema`` this module reads and writes
SCHEMA = "ratewarden-sqlite-1"
_SHM_REGION = 32768  # SQLite maps -shm in regions of 32 KiB
_STATE_COLUMNS = [("key", "TEXT", 1, 1), ("window", "TEXT", 1, 2), ("state", "", 1, 0), ("expires", "INTEGER", 1, 0)]
_CREATE = (
    "CREATE TABLE IF NOT EXISTS ratewarden_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS ratewarden_state (key TEXT NOT NULL, window TEXT NOT NULL, state NOT NULL,"
    " expires INTEGER NOT NULL, PRIMARY KEY (key, window)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS ratewarden_state_expires ON ratewarden_state (expires)",
    f"INSERT OR IGNORE INTO ratewarden_meta (name, value) VALUES ('schema', '{SCHEMA}')",
)
log = logging.getLogger("ratewarden")


def path_of(url: str) -> str:
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


def explain(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc)


def in_transaction(db: sqlite3.Connection) -> bool:
    try:
        return db.in_transaction
    except sqlite3.Error:  # closed meanwhile
        return False


def connect(uri: str, busy_timeout: float = 0.0) -> sqlite3.Connection:
    """A connection in autocommit mode. Decisions wait for the write lock in the store,
    so SQLite's busy handler is off (``busy_timeout=0``) except while setting the file up."""
    db = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA mmap_size = 0")  # a truncated file: an I/O error, never SIGBUS
    except BaseException:
        db.close()
        raise
    return db


def open_file(path: str, timeout: float) -> sqlite3.Connection:
    """Open (creating if needed) the file, check it is ours, switch to WAL, create the tables;
    a connection with the busy handler off."""
    where = f"the SQLite store {path}"
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise ConfigError(f"cannot open {where}: the directory {parent} does not exist")
    if os.path.isdir(path):
        raise ConfigError(f"cannot open {where}: it is a directory")
    try:
        db = connect(f"file:{quote(path)}?mode=rwc", busy_timeout=max(timeout, 1.0))
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open {where}: {explain(exc)}{_hint(path)}") from exc
    try:
        ready = _check_schema(db, where)
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigError(f"cannot use {where}: SQLite refused the WAL journal (journal_mode is {mode})")
        if not ready:  # a new file (or one being set up by another process right now)
            db.execute("BEGIN IMMEDIATE")
            try:
                _check_schema(db, where)
                for sql in _CREATE:
                    db.execute(sql)
                db.execute("COMMIT")
            finally:
                if in_transaction(db):
                    db.execute("ROLLBACK")
            _check_schema(db, where, created=True)
        db.execute("PRAGMA busy_timeout = 0")
    except sqlite3.Error as exc:
        db.close()
        raise ConfigError(f"cannot use {where}: {explain(exc)}{_hint(path)}") from exc
    except BaseException:
        db.close()
        raise
    return db


def _hint(path: str) -> str:
    parent = os.path.dirname(path)
    if not os.access(parent, os.W_OK):
        return f"; the directory {parent} is not writable (SQLite creates its -wal and -shm files there)"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return "; the file is not writable"
    return ""


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


class ShmWatch:
    """Notices a truncated ``-shm`` and gives it its size back (see the module docstring)."""

    __slots__ = ("seen", "shm")

    def __init__(self, path: str) -> None:
        self.shm = path + "-shm"
        self.seen = (0, 0)  # (inode, largest size) of the -shm seen

    def check(self) -> None:
        """SQLite maps ``-shm`` into memory: truncated under it, the next access is SIGBUS.
        Give it back its size (zeros), so SQLite sees a stale index and rebuilds it."""
        shm = self.shm
        try:
            st = os.stat(shm)
        except OSError:
            return
        ino, size = self.seen
        if st.st_ino == ino and st.st_size < size:
            log.error(
                "the WAL index %s was truncated from %d to %d bytes while in use: restoring its size "
                "(SQLite rebuilds the index); a process that touched it meanwhile died of SIGBUS",
                shm,
                size,
                st.st_size,
            )
            with contextlib.suppress(OSError):
                os.truncate(shm, size)
            return
        self.seen = (st.st_ino, max(st.st_size, size if st.st_ino == ino else 0, _SHM_REGION))


def file_ident(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``; None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
