"""The one place that calls a store and decides what a failure means (docs/design.md#defined-failure).

:class:`Runner` wraps a store's typed contract (:class:`~ratewarden.storage.base.Store`, and
its async face from :func:`~ratewarden.storage.base.as_async`). ``Limiter``, ``AsyncLimiter``,
the engine's flows (sync and async drivers) and the decision service call stores through it and
nowhere else. A :class:`~ratewarden.errors.StoreError` never leaves it: each item is decided by
its ``on_store_error`` mode (the limiter has one, each policy rule its own):

- ``"allow"``: admitted, with the window's full limit left;
- ``"deny"``: a ``hit`` or ``acquire`` is denied with ``retry_after`` = the runner's
  ``deny_retry_after`` (its outcome's state is ``"store_error"``); other operations are admitted;
- ``"local"``: decided by an in-process :class:`~ratewarden.storage.memory.MemoryStore` with the
  same windows, built up front by the caller (threads failing at once must all count in one).

The outcomes of a failed call come back as a :class:`Fallback` (a list that carries the error).
Every failure is counted in ``store_errors``; the first failure of an outage is logged as a
warning and the first success after it (the recovery) as info.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

from ratewarden.core.algorithms import make_window
from ratewarden.core.algorithms.base import Outcome, Window
from ratewarden.core.evaluate import Op
from ratewarden.core.rates import US, Rate, to_micros
from ratewarden.errors import StoreError
from ratewarden.storage.base import AsyncStore, DirectAsync, Item, Store, as_async
from ratewarden.storage.memory import MemoryStore

__all__ = ["FAIL_MODES", "FailMode", "Failed", "Fallback", "Runner", "failure"]

log = logging.getLogger("ratewarden")

FailMode = Literal["allow", "deny", "local"]
FAIL_MODES: tuple[FailMode, ...] = ("allow", "deny", "local")
_HEALTH_ITEMS: list[Item] = [("__healthz__", make_window("fixed-window", Rate(1, US)), 0)]


class Fallback(list[Outcome]):
    """Outcomes made up because the store failed (``error``); ``reason`` goes into a Decision."""

    reason = "store_unavailable"
    error: BaseException


class Failed(tuple[bool, int, int, int, Any]):
    """The outcome :meth:`Runner.hit1` makes up when the store failed (its type says so): an
    :data:`~ratewarden.core.algorithms.base.Outcome` of its own type."""

    __slots__ = ()


def failure(outs: list[Outcome]) -> BaseException | None:
    """The store error behind ``outs``, or None when the store answered them."""
    return outs.error if type(outs) is Fallback else None


class Runner:
    """Calls one store (``run``/``hit1`` and their async ``arun``/``ahit1``) under on_store_error.

    ``mode``: the default mode of every item (a limiter's ``on_store_error``); ``modes`` given to
    :meth:`run` override it item by item (the engine's rules). ``local``: the in-process store of
    the ``"local"`` mode (required when any item may use it). ``label`` names the store in logs.
    """

    __slots__ = (
        "_apply",
        "_deny_us",
        "_hit1",
        "astore",
        "failing",
        "hit1",
        "hits",
        "inline",
        "label",
        "local",
        "mode",
        "store",
        "store_errors",
    )

    def __init__(
        self,
        store: Store,
        *,
        mode: str = "allow",
        local: MemoryStore | None = None,
        deny_retry_after: float = 1.0,
        label: str = "",
    ) -> None:
        self.store = store
        self._hit1 = store.hit1  # bound once: the hot path saves two lookups
        self._apply = store.apply
        #: ``hit`` of one window (the store's fast path), in the default mode; a :class:`Failed`
        #: outcome when the store failed. A store that never fails is called with no guard.
        self.hit1: Callable[[str, Window, int], Outcome] = self._hit1 if not store.may_fail else self._guarded_hit1
        #: ``hits("hit", items)``: several items, all or nothing, in the default mode (a
        #: :class:`Fallback` when the store failed): the limiter's hot path for several windows.
        #: A store that never fails is called with no guard (and no ``partial``: a bound method
        #: is called in place, a partial through a frame of its own).
        self.hits: Callable[[Op, Sequence[Item]], list[Outcome]] = self._apply if not store.may_fail else self.run
        self.astore: AsyncStore = as_async(store)
        #: the async face is a direct call (a store that never blocks): async callers may run
        #: the sync path and save a coroutine
        self.inline = type(self.astore) is DirectAsync
        self.mode = mode
        self.local = local
        self._deny_us = to_micros(deny_retry_after)
        self.label = label or f"{store.kind}://"
        self.failing = False
        #: failures of the store seen so far (every one, not once per outage)
        self.store_errors = 0

    # -- the sync face ------------------------------------------------------------------------

    def _guarded_hit1(self, key: str, window: Window, cost: int) -> Outcome:
        try:
            out = self._hit1(key, window, cost)
        except StoreError as exc:
            return Failed(self.failed(exc, "hit", [(key, window, cost)])[0])
        if self.failing:
            self.recovered()
        return out

    def run(self, op: Op, items: Sequence[Item], modes: Sequence[str] | None = None, arg: str = "") -> list[Outcome]:
        """``op`` on ``items`` in one all-or-nothing store call (a :class:`Fallback` on failure)."""
        try:
            if op == "hit" and len(items) == 1:
                key, w, cost = items[0]
                outs = [self._hit1(key, w, cost)]
            else:
                outs = self._apply(op, items, arg)
        except StoreError as exc:
            return self.failed(exc, op, items, modes, arg)
        if self.failing:
            self.recovered()
        return outs

    def reset(self, pairs: Sequence[tuple[str, Sequence[Window] | None]]) -> BaseException | None:
        """Forget each ``(key, windows)`` (windows None: all of the key's); the error, if any."""
        try:
            for key, windows in pairs:
                self.store.reset(key, windows)
        except StoreError as exc:
            self.failed(exc, "peek", [])
            return exc
        if self.failing:
            self.recovered()
        return None

    def close(self) -> None:
        self.store.close()

    # -- the async face -----------------------------------------------------------------------

    async def ahit1(self, key: str, window: Window, cost: int) -> Outcome:
        try:
            out = await self.astore.ahit1(key, window, cost)
        except StoreError as exc:
            return Failed(self.failed(exc, "hit", [(key, window, cost)])[0])
        if self.failing:
            self.recovered()
        return out

    async def arun(
        self, op: Op, items: Sequence[Item], modes: Sequence[str] | None = None, arg: str = ""
    ) -> list[Outcome]:
        try:
            if op == "hit" and len(items) == 1:
                key, w, cost = items[0]
                outs = [await self.astore.ahit1(key, w, cost)]
            else:
                outs = await self.astore.aapply(op, items, arg)
        except StoreError as exc:
            return self.failed(exc, op, items, modes, arg)
        if self.failing:
            self.recovered()
        return outs

    async def areset(self, pairs: Sequence[tuple[str, Sequence[Window] | None]]) -> BaseException | None:
        try:
            for key, windows in pairs:
                await self.astore.areset(key, windows)
        except StoreError as exc:
            self.failed(exc, "peek", [])
            return exc
        if self.failing:
            self.recovered()
        return None

    async def aclose(self) -> None:
        await self.astore.aclose()

    async def answers(self, timeout: float) -> BaseException | None:
        """Whether the store answers a read that changes nothing within ``timeout`` (a health
        check: not counted, not logged, no on_store_error): None, or what went wrong."""
        try:
            if self.inline:
                self.store.apply("peek", _HEALTH_ITEMS)
            else:
                await asyncio.wait_for(self.astore.aapply("peek", _HEALTH_ITEMS), timeout)
        except Exception as exc:
            return exc
        return None

    # -- failure ------------------------------------------------------------------------------

    def failed(
        self, exc: BaseException, op: Op, items: Sequence[Item], modes: Sequence[str] | None = None, arg: str = ""
    ) -> Fallback:
        """Count and maybe log a failure; the outcomes each item's mode gives."""
        self.store_errors += 1
        if not self.failing:
            self.failing = True
            log.warning(
                "ratewarden: the store failed (%s); on_store_error=%s until it answers again (%s)",
                exc,
                self.mode if modes is None else "of each rule",
                self.label,
            )
        if modes is None:
            modes = [self.mode] * len(items)
        result = Fallback()
        result.error = exc
        local_idx = [i for i, m in enumerate(modes) if m == "local"]
        local: dict[int, Outcome] = {}
        if local_idx:
            if self.local is None:  # pragma: no cover - the caller builds it whenever a mode is "local"
                raise RuntimeError("on_store_error='local' without its in-process store")
            outs = self.local.apply(op, [items[i] for i in local_idx], arg)
            local = dict(zip(local_idx, outs, strict=True))
        deny = op in ("hit", "acquire")
        wait = self._deny_us
        for i, ((_, w, _), mode) in enumerate(zip(items, modes, strict=True)):
            if i in local:
                result.append(local[i])
            elif deny and mode == "deny":
                result.append((False, 0, wait, wait, "store_error"))
            else:
                result.append((True, w.limit, 0, 0, None))
        return result

    def recovered(self) -> None:
        self.failing = False
        log.info("ratewarden: the store answers again; shared limits are back (%s)", self.label)
