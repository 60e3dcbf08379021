"""The sliding log in SQLite: one row per admission, so a decision reads a few rows, never the log.

A sliding-log window of a key is a *header* row ``(key, window)`` whose state is
``{"h": head, "n": next, "t": newest time, "c": running total}`` and one row per admission
``(key, "window#<seq, 20 digits>")`` whose state is ``[time, running total after it, cost]``
and whose ``expires`` is ``time + P`` (so the store's sweep reclaims entries that left the
window like any other expired row). Entry ``i`` of the core's :class:`Log` is the row of
sequence number ``i``: the core's binary searches read rows by primary key, O(log n) each.

A write appends the new row, deletes the rows that left the window (each once), and updates
the header. States written before this form (the whole log as JSON pairs) are read by the
core and rewritten in this form on the next write.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ratewarden.core.algorithms.sliding_log import Log

__all__ = ["RowLog", "is_header", "write_log", "delete_log"]

_ENTRY = "SELECT state FROM ratewarden_state WHERE key = ? AND window = ?"
_PUT = "INSERT OR REPLACE INTO ratewarden_state (key, window, state, expires) VALUES (?, ?, ?, ?)"
_CUT = "DELETE FROM ratewarden_state WHERE key = ? AND window >= ? AND window < ?"
_enc = json.JSONEncoder(separators=(",", ":")).encode
_HEADER = "INSERT OR REPLACE INTO ratewarden_state (key, window, state, expires) VALUES (?, ?, ?, ?)"


def _seq(wid: str, i: int) -> str:
    return f"{wid}#{i:020d}"


def _end(wid: str) -> str:
    return f"{wid}#~"  # after every sequence number


def is_header(value: Any) -> bool:
    return type(value) is dict and "n" in value


class _Column:
    """``ts`` (``at = 0``) or ``cum`` (``at = 1``) of a :class:`RowLog`, read row by row."""

    __slots__ = ("at", "log")

    def __init__(self, log: RowLog, at: int) -> None:
        self.log = log
        self.at = at

    def __len__(self) -> int:
        return self.log.n

    def __getitem__(self, i: int) -> int:
        log = self.log
        if i == log.n - 1:
            return log.last if self.at == 0 else log.running
        if i >= log.n and log.pending is not None:
            return log.pending[self.at]
        row = log.row(i)
        if row is not None:
            return int(row[self.at])
        if self.at == 0:
            return -(2**62)  # reclaimed by the sweep: it had left the window
        nxt = log.row(i + 1)  # the running total before the next entry
        return int(nxt[1]) - int(nxt[2]) if nxt is not None else log.running


class RowLog(Log):
    """A version of a sliding log kept as rows; ``pending`` is the entry this version adds."""

    __slots__ = ("db", "key", "last", "old_head", "old_n", "pending", "running", "wid")

    def __init__(
        self,
        db: sqlite3.Connection,
        key: str,
        wid: str,
        head: int,
        n: int,
        last: int,
        total: int,
        pending: tuple[int, int, int] | None = None,
        old: tuple[int, int] | None = None,
    ) -> None:
        self.db = db
        self.key = key
        self.wid = wid
        self.last = last
        self.running = total
        self.pending = pending
        self.old_head, self.old_n = old if old is not None else (head, n)
        super().__init__(_Column(self, 0), _Column(self, 1), head, n)  # type: ignore[arg-type]

    @classmethod
    def read(cls, db: sqlite3.Connection, key: str, wid: str, header: dict[str, int]) -> RowLog:
        return cls(db, key, wid, int(header["h"]), int(header["n"]), int(header["t"]), int(header["c"]))

    def row(self, i: int) -> list[int] | None:
        r = self.db.execute(_ENTRY, (self.key, _seq(self.wid, i))).fetchone()
        return None if r is None else list(json.loads(r[0]))

    def view(self, head: int) -> Log:
        if head == self.head:
            return self
        old = (self.old_head, self.old_n)
        return RowLog(self.db, self.key, self.wid, head, self.n, self.last, self.running, self.pending, old)

    def add(self, head: int, t: int, cost: int) -> Log:
        if self.pending is not None:  # pragma: no cover - a store extends only the version it read
            raise RuntimeError("a sliding-log version was extended twice")
        total = self.running + cost
        return RowLog(
            self.db, self.key, self.wid, head, self.n + 1, t, total, (t, total, cost), (self.old_head, self.old_n)
        )

    def entries(self) -> tuple[tuple[int, int], ...]:
        return Log.of(self._pairs()).entries()

    def _pairs(self) -> list[tuple[int, int]]:
        out = []
        prev = self.cum[self.head - 1] if self.head else 0
        for i in range(self.head, self.n):
            c = self.cum[i]
            out.append((self.ts[i], c - prev))
            prev = c
        return out


def write_log(db: sqlite3.Connection, key: str, wid: str, log: Log, expires: int, period: int) -> None:
    """Write ``log`` (the state a decision admitted) as the header and entry rows."""
    if isinstance(log, RowLog):
        if log.head > log.old_head:  # entries that left the window
            db.execute(_CUT, (key, _seq(wid, log.old_head), _seq(wid, log.head)))
        if log.pending is not None:
            t, total, cost = log.pending
            db.execute(_PUT, (key, _seq(wid, log.n - 1), _enc([t, total, cost]), t + period))
        head, n, last, total = log.head, log.n, log.last, log.running
    else:  # a new log (or one read in the earlier form): its rows from sequence 0
        db.execute(_CUT, (key, _seq(wid, 0), _end(wid)))
        total = 0
        prev = log.cum[log.head - 1] if log.head else 0
        for i in range(log.head, log.n):
            t = log.ts[i]
            total = log.cum[i] - (log.cum[log.head - 1] if log.head else 0)
            db.execute(_PUT, (key, _seq(wid, i - log.head), _enc([t, total, log.cum[i] - prev]), t + period))
            prev = log.cum[i]
        head, n = 0, log.n - log.head
        last = log.ts[log.n - 1]
    db.execute(_HEADER, (key, wid, _enc({"h": head, "n": n, "t": last, "c": total}), expires))


def delete_log(db: sqlite3.Connection, key: str, wid: str) -> None:
    """Delete the entry rows of a sliding-log window (the header is the caller's)."""
    db.execute(_CUT, (key, _seq(wid, 0), _end(wid)))
