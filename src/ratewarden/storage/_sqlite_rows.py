"""Rows the SQLite store cannot read: reset, with a warning, never an exception.

A row's state may be unreadable: text that is not JSON, a float or a blob, or a value of the
wrong shape for its algorithm (``{}``, ``[]``, ``{"0": 1}``, ...), after a bug, a hand edit or a
change of state format between versions. Such a state is treated as no state (its key starts
afresh in that window: at most one window's worth of extra admissions for that key), a warning
names the key and the window, and the next write of the key overwrites or deletes the row. An
error instead would fail that key forever, per ``on_store_error``, until someone edits the file.

A state is unreadable when it does not decode, when the window raises on it, or when the
outcome it yields is not made of integers. A well-formed but wrong value (a count that is
merely too high) is decided as it is.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from ratewarden.core.algorithms.base import REMAINING, RESET_US, RETRY_US, Outcome, Window
from ratewarden.core.evaluate import Op, run

__all__ = ["Corrupt", "read_state", "run_checked", "sane", "unreadable"]

_SELECT = "SELECT state FROM ratewarden_state WHERE key = ? AND window = ?"
log = logging.getLogger("ratewarden")


def sane(out: Outcome) -> bool:
    """Whether an outcome decided on a stored state is well formed (a garbage state that the
    algorithm happens to accept yields floats or other types here)."""
    return type(out[REMAINING]) is int and type(out[RESET_US]) is int and type(out[RETRY_US]) is int


class Corrupt:
    """A column value that does not decode (read as no state, with a warning)."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any, error: Exception) -> None:
        self.value = value
        self.error = error


def read_state(db: sqlite3.Connection, kw: tuple[str, str], decode: Any) -> Any:
    """The state of one row, decoded by ``decode(db, kw, value)``; None when there is no row; :class:`Corrupt`
    when it does not decode."""
    row = db.execute(_SELECT, kw).fetchone()
    if row is None:
        return None
    try:
        return decode(db, kw, row[0])
    except (ValueError, TypeError, RecursionError) as exc:
        return Corrupt(row[0], exc)


def run_checked(
    op: Op,
    windows: list[Window],
    states: list[Any],
    keys: list[tuple[str, str]],
    now: int,
    costs: list[int],
    arg: str,
) -> tuple[list[Outcome], list[Any] | None, list[Any]]:
    """:func:`run` on states read from rows; a state it cannot decide on is reset (with a
    warning) and the operation run again. Returns the states it ran on as well."""
    if not any(type(st) is Corrupt for st in states):
        try:
            outs, new = run(op, windows, states, now, costs, arg)
            if all(sane(o) for o in outs):
                return outs, new, states
        except Exception:  # a garbage state: find it below
            pass
    checked = []
    for st, w, (k, wid) in zip(states, windows, keys, strict=True):
        bad: Exception | None = None
        if st is not None:
            try:
                bad = st.error if type(st) is Corrupt else None
                if bad is None and not sane(w.decide(st, now, 0)):
                    bad = TypeError("the outcome is not made of integers")
            except Exception as exc:
                bad = exc
            if bad is not None:
                unreadable(k, wid, st.value if type(st) is Corrupt else st, bad)
        checked.append(None if bad is not None else st)
    try:
        outs, new = run(op, windows, checked, now, costs, arg)
    except Exception as exc:  # a state each window reads alone, that the operation cannot
        raise ValueError(f"{op} cannot use the stored states ({type(exc).__name__}: {exc})") from exc
    return outs, new, checked


def unreadable(key: str, wid: str, value: Any, exc: Exception) -> None:
    shown = repr(value)
    log.warning(
        "the SQLite store holds a state it cannot read for key %r, window %s (%s: %s): %s; reset to no state",
        key,
        wid,
        type(exc).__name__,
        exc,
        shown if len(shown) <= 80 else shown[:77] + "...",
    )
