"""The storage contract: apply a pure core operation atomically to one key's windows.

A store holds, for each ``(key, window.id)``, the core's immutable state, and offers one
primitive that does not depend on the algorithm: :meth:`Store.apply` reads the states of
``items`` (``(key, window, cost)`` triples: one key's windows, or several rules' keys at
once), runs :func:`ratewarden.core.evaluate.run` (or, in Redis and PostgreSQL, its port) and
writes what it returns, atomically (a lock in memory, ``BEGIN IMMEDIATE`` in SQLite, one script
in Redis, one function call in PostgreSQL). Multi-window checks are one call. Every failure of
the backend raises :class:`ratewarden.errors.StoreError`; :mod:`ratewarden.runner` turns it
into the configured fallback.

The contract is typed (docs/design.md#the-store-contract): everything a caller needs is a member
of :class:`Store` (the sync face, which every store has) or :class:`AsyncStore` (the native
async face of the Redis and PostgreSQL stores), so no caller asks a store what it can do at run
time. :func:`as_async` gives any store an async face: its own, a direct call for a store that
never blocks (memory), or a worker thread (SQLite). :func:`check_store` vets a store object a
user passes, once, when a limiter or engine is built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ratewarden.core.algorithms.base import Outcome, Window
from ratewarden.core.evaluate import Op
from ratewarden.errors import ConfigError

__all__ = ["AsyncStore", "DirectAsync", "Item", "Store", "ThreadedAsync", "as_async", "check_store"]

#: one window state to read and maybe write: (key, window, cost)
Item = tuple[str, Window, int]


@runtime_checkable
class Store(Protocol):
    """The sync face every store has (memory, SQLite, Redis, PostgreSQL, and a user's own)."""

    #: a label for logs, metrics and the service's info page ("memory", "sqlite", "redis", ...)
    kind: str
    #: False when a call never waits for I/O (memory): async code calls it directly, no thread
    blocking: bool
    #: True when other processes see the same state (SQLite, Redis, PostgreSQL); False for
    #: process memory, whose limits several worker processes would each count on their own
    shared: bool
    #: False when a call never raises StoreError (memory: no connection, file or server to
    #: lose); the runner then calls it with no guard, which keeps the hot path as short as it was
    may_fail: bool

    def hit1(self, key: str, window: Window, cost: int) -> Outcome:
        """``apply("hit", [(key, window, cost)])[0]``: the same outcome and later state, the
        one fast path a store may have (tests/storage/test_fast_paths.py proves it equal)."""
        ...

    def apply(self, op: Op, items: Sequence[Item], arg: str = "") -> list[Outcome]:
        """``op`` on every item, all or nothing, atomically (``arg``: a concurrency lease id)."""
        ...

    def reset(self, key: str, windows: Sequence[Window] | None = None) -> None:
        """Forget the states of ``key`` in ``windows`` (every window when None)."""
        ...

    def check_window(self, window: Window) -> None:
        """Raise ConfigError now if this store cannot decide ``window`` exactly (Redis's
        doubles); called when a rate is compiled, never on the hot path. No I/O."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncStore(Protocol):
    """The async face: native in the Redis and PostgreSQL stores, else made by :func:`as_async`."""

    kind: str

    async def ahit1(self, key: str, window: Window, cost: int) -> Outcome: ...

    async def aapply(self, op: Op, items: Sequence[Item], arg: str = "") -> list[Outcome]: ...

    async def areset(self, key: str, windows: Sequence[Window] | None = None) -> None: ...

    def check_window(self, window: Window) -> None: ...

    async def aclose(self) -> None: ...


class DirectAsync:
    """The async face of a store that never blocks (memory): each call is made directly."""

    __slots__ = ("kind", "store")

    def __init__(self, store: Store) -> None:
        self.store = store
        self.kind = store.kind

    async def ahit1(self, key: str, window: Window, cost: int) -> Outcome:
        return self.store.hit1(key, window, cost)

    async def aapply(self, op: Op, items: Sequence[Item], arg: str = "") -> list[Outcome]:
        return self.store.apply(op, items, arg)

    async def areset(self, key: str, windows: Sequence[Window] | None = None) -> None:
        self.store.reset(key, windows)

    def check_window(self, window: Window) -> None:
        self.store.check_window(window)

    async def aclose(self) -> None:
        self.store.close()


class ThreadedAsync(DirectAsync):
    """The async face of a blocking store without one of its own (SQLite): a worker thread."""

    __slots__ = ()

    async def ahit1(self, key: str, window: Window, cost: int) -> Outcome:
        return await asyncio.to_thread(self.store.hit1, key, window, cost)

    async def aapply(self, op: Op, items: Sequence[Item], arg: str = "") -> list[Outcome]:
        return await asyncio.to_thread(self.store.apply, op, items, arg)

    async def areset(self, key: str, windows: Sequence[Window] | None = None) -> None:
        await asyncio.to_thread(self.store.reset, key, windows)


def as_async(store: Store | AsyncStore) -> AsyncStore:
    """``store``'s async face: its own when it has one (Redis, PostgreSQL), a direct call when
    its calls never block (memory), else a worker thread per call (SQLite)."""
    if isinstance(store, AsyncStore):
        return store
    return DirectAsync(store) if not store.blocking else ThreadedAsync(store)


_STORE_MEMBERS = ("kind", "blocking", "shared", "may_fail", "hit1", "apply", "reset", "check_window", "close")


def check_store(store: object) -> Store:
    """``store`` if it satisfies :class:`Store`, else a ConfigError naming what it lacks (once,
    when a limiter or engine is built: never on a decision's path)."""
    if isinstance(store, Store):
        return store
    missing = [m for m in _STORE_MEMBERS if not hasattr(store, m)]
    raise ConfigError(
        f"storage must be a URL string such as 'memory://' or a store (see ratewarden.storage.Store), "
        f"not {type(store).__name__}" + (f": it has no {', '.join(missing)}" if missing else "")
    )
