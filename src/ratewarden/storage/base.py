"""The storage contract: apply a pure core operation atomically to one key's windows.

A store holds, for each ``(key, window.id)``, the core's immutable state, and offers one
primitive that does not depend on the algorithm: :meth:`Store.apply` reads the states of
``items`` (``(key, window, cost)`` triples: one key's windows, or several rules' keys at
once), runs :func:`ratewarden.core.evaluate.run` (or, in Redis, its Lua port) and
writes what it returns, atomically (a lock in memory, ``BEGIN IMMEDIATE`` in SQLite, one script
in Redis). Multi-window checks are one call. Every failure of the backend raises
:class:`ratewarden.errors.StoreError`; the limiter turns it into the configured fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ratewarden.core.algorithms.base import Outcome, Window
from ratewarden.core.evaluate import Op

__all__ = ["AsyncStore", "Item", "Store"]

#: one window state to read and maybe write: (key, window, cost)
Item = tuple[str, Window, int]


@runtime_checkable
class Store(Protocol):
    kind: str

    def hit1(self, key: str, window: Window, cost: int) -> Outcome: ...

    def apply(self, op: Op, items: Sequence[Item], arg: str = "") -> list[Outcome]: ...

    def reset(self, key: str, windows: Sequence[Window] | None = None) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncStore(Protocol):
    kind: str

    async def ahit1(self, key: str, window: Window, cost: int) -> Outcome: ...

    async def aapply(self, op: Op, items: Sequence[Item], arg: str = "") -> list[Outcome]: ...

    async def areset(self, key: str, windows: Sequence[Window] | None = None) -> None: ...

    async def aclose(self) -> None: ...
