"""The storage contract: apply a pure core operation atomically to one key's windows.

A store holds, for each ``(key, window.id)``, the core's immutable state, and offers one
primitive that does not depend on the algorithm: :meth:`Store.apply` reads the states of a
key's windows, runs :func:`ratewarden.core.evaluate.run` (or, in Redis, its Lua port) and
writes what it returns, atomically (a lock in memory, ``BEGIN IMMEDIATE`` in SQLite, one script
in Redis). Multi-window checks are one call. Every failure of the backend raises
:class:`ratewarden.errors.StoreError`; the limiter turns it into the configured fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ratewarden.core.algorithms.base import Outcome, Window
from ratewarden.core.evaluate import Op

__all__ = ["AsyncStore", "Store"]


@runtime_checkable
class Store(Protocol):
    kind: str

    def hit1(self, key: str, window: Window, cost: int) -> Outcome: ...

    def apply(self, op: Op, key: str, windows: Sequence[Window], cost: int, arg: str = "") -> list[Outcome]: ...

    def reset(self, key: str, windows: Sequence[Window] | None = None) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncStore(Protocol):
    kind: str

    async def ahit1(self, key: str, window: Window, cost: int) -> Outcome: ...

    async def aapply(
        self, op: Op, key: str, windows: Sequence[Window], cost: int, arg: str = ""
    ) -> list[Outcome]: ...

    async def areset(self, key: str, windows: Sequence[Window] | None = None) -> None: ...

    async def aclose(self) -> None: ...
