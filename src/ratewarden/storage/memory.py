"""``memory://``: the embedded default store, in process memory.

Invariants kept here:

* **Atomic.** Every operation on a key's windows runs the pure core under one store lock, so
  no interleaving of threads or asyncio tasks can over-admit.
* **Bounded.** At most ``max_keys`` window states are held (a key limited by two windows holds
  two), so a flood of distinct keys can never exhaust memory.
* **Eviction admits the least.** When the store is full, a new state takes the place of the
  held state whose loss admits the fewest extra units. Exactly: expired states go first (those
  due before the current wheel tick by the sweep, the others when eviction meets them); then
  the state with the fewest *used units* (capacity minus what would pass now), compared by
  their power of two (1, 2-3, 4-7, ...), and among those the one due to expire soonest (to the
  ~1 s of a wheel bucket). A state is judged by what it holds when eviction reaches it, not
  when it was filed: one hit since is re-filed, never evicted early. So fresh one-hit keys are
  evicted before any key that has used more, and pushing out a key with ``n`` used units takes
  ``max_keys`` states with at least about ``n / 2`` used units each. Usage that time has
  paid back since a state was filed only keeps it longer (it is never evicted earlier).
  Amortised O(1): each re-filing is paid for by the hits since the state was filed.
* **Expiry needs real time.** A state is dropped as expired only when the wall clock *and*
  the time elapsed on the monotonic clock both say so (the sweep's "now" is the wall clock,
  never ahead of the smallest wall-minus-monotonic offset seen). A wall clock stepped ahead by
  NTP and then back loses no live state; one stepped ahead for good reclaims states as they
  age in real time. An injected ``clock`` (tests, simulations) is trusted as is.
* **No full scan on the hot path.** Each state is filed once in a coarse timing wheel (buckets of
  ~1 s, one wheel per class of used units) by the time it expires. A bucket that comes due is
  checked key by key: states that have really expired are dropped, the rest (refreshed since)
  are filed again by their new expiry. A hit on a known key touches no wheel at all; a new key
  appends one entry to one bucket.
* **Per process.** Each process has its own states: under a server with several worker
  processes every worker counts alone. A store inherited through ``fork()`` logs one warning.

States are the core's immutable values; a store keeps nothing of its own per key beyond the
state and one wheel entry, so a live key costs about 150 bytes.
"""

from __future__ import annotations

import heapq
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from ratewarden.clock import micros
from ratewarden.core.algorithms.base import NEW_STATE, REMAINING, RESET_US, Outcome, Window
from ratewarden.core.evaluate import Op, run
from ratewarden.errors import ConfigError
from ratewarden.storage._expiry import ExpiryClock
from ratewarden.storage.base import Item

__all__ = ["DEFAULT_MAX_KEYS", "MemoryStore"]

DEFAULT_MAX_KEYS = 1_000_000
_SHIFT = 20  # wheel bucket = expiry >> 20 microseconds (about 1.05 s)


class _Wheel:
    """Wheel buckets of one class of used units: bucket number -> keys, and a heap of them."""

    __slots__ = ("buckets", "heap")

    def __init__(self) -> None:
        self.buckets: dict[int, list[str]] = {}
        self.heap: list[int] = []  # bucket numbers present in ``buckets``


class _Table:
    """The states of one window (one algorithm + rate) for every key."""

    __slots__ = ("capacity", "data", "wheels", "window")

    def __init__(self, window: Window) -> None:
        self.window = window
        self.capacity = window.capacity
        self.data: dict[str, Any] = {}
        self.wheels: dict[int, _Wheel] = {}  # by class: the bit length of the used units

    def file(self, key: str, expires: int, remaining: int) -> None:
        b = expires >> _SHIFT
        cls = (self.capacity - remaining).bit_length() if remaining < self.capacity else 0
        wheel = self.wheels.get(cls)
        if wheel is None:
            wheel = self.wheels[cls] = _Wheel()
        lst = wheel.buckets.get(b)
        if lst is None:
            wheel.buckets[b] = [key]
            heapq.heappush(wheel.heap, b)
        else:
            lst.append(key)

    def refile(self, key: str, now: int) -> bool:
        """File a popped key again by what its state holds at ``now``; False when it expired."""
        state = self.data[key]
        if state is None:
            return False
        out = self.window.decide(state, now, 0)
        if out[RESET_US] <= 0:
            return False
        self.file(key, now + out[RESET_US], out[REMAINING])
        return True


log = logging.getLogger("ratewarden")
_FORK_WARNING = (
    "a memory:// store in a forked or pre-forking server process: limits are counted per process, "
    "so with several worker processes each admits the full limit; use sqlite:///path.db (one host) "
    "or redis:// (several) to share them"
)
_stores: weakref.WeakSet[MemoryStore] = weakref.WeakSet()
_fork = {"child": False, "warned": False}


def _after_fork() -> None:
    _fork["child"] = True
    for store in _stores:
        store._forked = True


def _warn_fork() -> None:
    if not _fork["warned"]:
        _fork["warned"] = True
        log.warning(_FORK_WARNING)


def _prefork_worker() -> bool:
    """True in a worker of a pre-forking server that imported ratewarden after the fork."""
    return "gunicorn.workers.base" in sys.modules


os.register_at_fork(after_in_child=_after_fork)

_time_ns = time.time_ns


def _now_us() -> int:
    return _time_ns() // 1000


class MemoryStore:
    """In-process store; thread-safe and asyncio-safe (the critical section never awaits)."""

    kind = "memory"
    blocking = False  # a lock held for microseconds, never across I/O
    shared = False  # each process counts on its own
    may_fail = False  # no I/O: nothing raises StoreError

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, clock: Callable[[], float] | None = None) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigError(f"max_keys must be a positive integer, not {max_keys!r}")
        self.max_keys = max_keys
        if clock is time.time:
            clock = None  # the real clock, named: guarded against NTP steps like the default
        self._clock = clock
        if clock is None:
            self.now: Callable[[], int] = _now_us
        else:
            self.now = micros(clock)
        self._lock = threading.Lock()
        self._tables: dict[str, _Table] = {}
        self._count = 0
        self._swept = 0  # wheel buckets below this number have been swept
        self._expiry = ExpiryClock() if clock is None else None
        self._ahead = 0  # how far the wall clock was ahead of the expiry clock when last read
        self._forked = False
        _stores.add(self)
        if _fork["child"] or _prefork_worker():
            _warn_fork()

    # -- the hot path -------------------------------------------------------------------------

    def hit1(self, key: str, window: Window, cost: int) -> Outcome:
        """One window, ``hit``: this store's one fast path, ``apply("hit", [(key, window, cost)])[0]``
        in fewer steps (tests/storage/test_fast_paths.py proves them equal). Measured: ``apply``
        takes 1.49x the time of ``hit1`` (``python bench/fast_paths.py memory``, interleaved
        timeit in one run, gcra; 2026-11-30)."""
        clock = self._clock
        lock = self._lock
        lock.acquire()  # (not ``with``: two special-method lookups and a call with three Nones)
        try:
            # Time is read under the lock, so decisions see it in the order they are made.
            now = _time_ns() // 1000 if clock is None else self.now()
            table = self._tables.get(window.id)
            if table is None:  # (not ``get() or``: the truth test of a _Table is a slot lookup)
                table = self._table(window)
            data = table.data
            state = data.get(key)
            out = window.decide(state, now, cost)
            if out[0] and cost:  # out[ALLOWED]: a constant index is a step shorter than a global
                if state is None and key not in data:
                    self._insert(table, key, out[NEW_STATE], out, now)
                else:
                    data[key] = out[4]  # out[NEW_STATE]
            return out
        finally:
            lock.release()

    # -- every operation ----------------------------------------------------------------------

    def apply(self, op: Op, items: Sequence[Item], arg: str = "") -> list[Outcome]:
        """``op`` on every item, all or nothing. ``hit`` (windows of one key, or of several policy
        rules' keys at once) is decided here without the general evaluator; the other operations
        go through :func:`~ratewarden.core.evaluate.run`."""
        if op != "hit":
            return self._apply_op(op, items, arg)
        clock = self._clock
        lock = self._lock
        lock.acquire()  # (not ``with``: see hit1)
        try:
            now = _time_ns() // 1000 if clock is None else self.now()
            tables = self._tables
            datas = []
            outs = []
            ok = True
            fresh = False
            for key, w, cost in items:
                table = tables.get(w.id)
                if table is None:
                    table = self._table(w)
                data = table.data
                state = data.get(key)
                if state is None:
                    fresh = True
                out = w.decide(state, now, cost)
                if not out[0]:  # out[ALLOWED]
                    ok = False
                outs.append(out)
                datas.append(data)
            if ok:
                if fresh:
                    self._write_items(items, outs, now)
                else:
                    i = 0
                    for key, _, cost in items:
                        if cost:
                            datas[i][key] = outs[i][4]  # [NEW_STATE]
                        i += 1
            return outs
        finally:
            lock.release()

    def _write_items(self, items: Sequence[Item], outs: list[Outcome], now: int) -> None:
        """Write the admitted states of ``items``, some of them new (a method of its own: a
        comprehension inside ``apply`` would make its locals closure cells on every call)."""
        tables = self._tables
        changes = [(tables[it[1].id], it[0], o[NEW_STATE], o) for it, o in zip(items, outs, strict=True) if it[2]]
        self._write_states(changes, now)

    def _apply_op(self, op: Op, items: Sequence[Item], arg: str) -> list[Outcome]:
        with self._lock:
            now = self.now()
            tables = []
            for _, w, _ in items:
                t = self._tables.get(w.id) or self._table(w)
                tables.append(t)
            states = [t.data.get(item[0]) for t, item in zip(tables, items, strict=True)]
            windows = [item[1] for item in items]
            outs, new = run(op, windows, states, now, [item[2] for item in items], arg)
            if new is not None:
                changed = [
                    (t, item[0], st, o)
                    for t, item, old, st, o in zip(tables, items, states, new, outs, strict=True)
                    if st is not old
                ]
                self._write_states(changed, now)
            return outs

    def reset(self, key: str, windows: Sequence[Window] | None = None) -> None:
        with self._lock:
            tables = (
                self._tables.values()
                if windows is None
                else [t for w in windows if (t := self._tables.get(w.id)) is not None]
            )
            for t in tables:
                if key in t.data:
                    del t.data[key]  # its wheel entry is dropped when it comes due
                    self._count -= 1

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()
            self._count = 0

    def __len__(self) -> int:
        """The number of window states held."""
        return self._count

    def sweep(self) -> int:
        """Reclaim every state that has expired; returns how many were dropped."""
        with self._lock:
            return self._sweep(self._expiry_now(self.now()))

    def check_window(self, window: Window) -> None:
        """Every window the core accepts is exact here."""

    def close(self) -> None:
        pass

    # -- bookkeeping --------------------------------------------------------------------------

    def _table(self, window: Window) -> _Table:
        """The table of a window seen for the first time."""
        table = self._tables[window.id] = _Table(window)
        return table

    def _write(self, key: str, tables: Sequence[_Table], outs: Sequence[Outcome], now: int) -> None:
        """Write each admitted state of one key's windows (some of them new)."""
        self._write_states([(t, key, o[NEW_STATE], o) for t, o in zip(tables, outs, strict=True)], now)

    def _write_states(self, changes: Sequence[tuple[_Table, str, Any, Outcome]], now: int) -> None:
        """Write states; new entries first, so room made for them never drops one just written.

        A state that became empty (a released lease) is kept as ``None`` until its wheel entry
        comes due, so a key keeps exactly one wheel entry however often it empties and refills.
        """
        for t, key, st, o in changes:
            if key not in t.data and st is not None and o[RESET_US] > 0:
                self._insert(t, key, st, o, now)
        for t, key, st, o in changes:
            if key in t.data:
                t.data[key] = st if o[RESET_US] > 0 else None
            elif st is not None and o[RESET_US] > 0:  # evicted by an insert above: make room again
                self._insert(t, key, st, o, now)

    def _expiry_now(self, now: int) -> int:
        """The time expiry is judged at (see :class:`ExpiryClock`); with an injected clock, ``now``.

        The monotonic clock is read here only (once per wheel tick on the insert path); in
        between, inserts subtract the gap seen last (``_ahead``)."""
        if self._expiry is None:
            return now
        expiry = self._expiry(now)
        self._ahead = now - expiry
        return expiry

    def _insert(self, table: _Table, key: str, state: Any, out: Outcome, now: int) -> None:
        if self._forked:
            _warn_fork()
            self._forked = False
        wall = now
        now -= self._ahead
        if now >> _SHIFT > self._swept:  # a new wheel tick, or a clock stepped ahead: read the clocks
            now = self._expiry_now(wall)
            if now >> _SHIFT > self._swept:
                self._sweep(now)
        if self._count >= self.max_keys:
            self._evict(now)
        table.data[key] = state
        table.file(key, now + out[RESET_US], out[REMAINING])
        self._count += 1

    def _sweep(self, now: int) -> int:
        """Process every wheel bucket that is due. Amortised O(1) per state."""
        due = now >> _SHIFT
        dropped = 0
        for t in self._tables.values():
            data = t.data
            for cls, wheel in list(t.wheels.items()):
                heap, buckets = wheel.heap, wheel.buckets
                while heap and heap[0] < due:
                    for key in buckets.pop(heapq.heappop(heap)):
                        if key in data and not t.refile(key, now):  # not reset or evicted, and expired
                            del data[key]
                            dropped += 1
                if not heap and t.wheels.get(cls) is wheel:
                    del t.wheels[cls]
        self._count -= dropped
        self._swept = due
        return dropped

    def _evict(self, now: int) -> None:
        """Make room for one state: drop the one whose loss admits the least (see the module
        docstring). A state refreshed since it was filed is filed again by what it holds now."""
        while self._count >= self.max_keys:
            best: tuple[int, int] | None = None
            table: _Table | None = None
            for t in self._tables.values():
                for cls, wheel in t.wheels.items():
                    if wheel.heap and (best is None or (cls, wheel.heap[0]) < best):
                        best = (cls, wheel.heap[0])
                        table = t
            if best is None or table is None:  # pragma: no cover - count and wheel disagree
                raise RuntimeError("memory store bookkeeping is inconsistent")
            cls, b = best
            wheel = table.wheels[cls]
            lst = wheel.buckets[b]
            key = lst.pop()
            if not lst:
                heapq.heappop(wheel.heap)
                del wheel.buckets[b]
                if not wheel.heap:
                    del table.wheels[cls]
            if key not in table.data:  # reset, or evicted
                continue
            if self._filed_later(table, key, now, cls, b):
                continue
            del table.data[key]
            self._count -= 1

    @staticmethod
    def _filed_later(table: _Table, key: str, now: int, cls: int, b: int) -> bool:
        """Refile ``key`` if what its state holds now ranks it after where it was filed."""
        state = table.data[key]
        if state is None:
            return False
        out = table.window.decide(state, now, 0)
        if out[RESET_US] <= 0:
            return False  # expired: evict it
        remaining = out[REMAINING]
        capacity = table.capacity
        true_cls = (capacity - remaining).bit_length() if remaining < capacity else 0
        if (true_cls, (now + out[RESET_US]) >> _SHIFT) <= (cls, b):
            return False
        table.file(key, now + out[RESET_US], remaining)
        return True
