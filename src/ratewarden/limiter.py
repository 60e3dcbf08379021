"""``Limiter`` and ``AsyncLimiter``: the public Python API (docs/design.md#the-python-api).

Both share :class:`_LimiterBase`, which does everything but the store call: compiling rates
into windows (cached), validating input, choosing the deciding window, and the behaviour when
the store fails. Apart from ``hit``'s hot path (one cached window, straight to the store), each
public method of the two classes is the same two lines, one of them with ``await``.

Defined failure (docs/design.md#defined-failure) lives here: a :class:`~ratewarden.errors.StoreError` never reaches
the caller. Depending on ``on_store_error`` the request is admitted (``"allow"``), denied
(``"deny"``, with ``retry_after`` = ``deny_retry_after``) or decided by an in-process limiter
with the same rates (``"local"``) until the store answers again. The first failure of an outage
is logged as a warning and the recovery as info; every failure is counted in ``store_errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from ratewarden.core.algorithms import ALGORITHMS, Window, make_window
from ratewarden.core.algorithms.base import Outcome, tuple_new
from ratewarden.core.decision import Decision, deciding_index, to_decision
from ratewarden.core.evaluate import Op
from ratewarden.core.rates import PERIOD_MAX, US, Rate, parse_rates, to_micros
from ratewarden.errors import ConfigError, StoreError
from ratewarden.storage import open_store
from ratewarden.storage.memory import MemoryStore

__all__ = ["AsyncLimiter", "Limiter", "RateSpec"]

log = logging.getLogger("ratewarden")
_new = tuple.__new__
_EMPTY: dict[Any, Any] = {}

RateSpec = str | Rate | Sequence[str | Rate]
_FAIL_MODES = ("allow", "deny", "local")


class _Fallback(list[Outcome]):
    """Outcomes made up because the store failed; ``reason`` goes into the Decision."""

    reason = "store_unavailable"


def _check_cost(cost: object) -> int:
    if type(cost) is not int or cost < 0:
        raise ConfigError(f"cost must be an integer >= 0, not {cost!r}")
    return cost


def _short(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _check_seconds(value: object, name: str) -> float:
    """A positive, finite number of seconds up to ten years (a setting such as deny_retry_after)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= PERIOD_MAX / US:
        raise ConfigError(f"{name} must be a number of seconds above 0 and at most 10 years, not {_short(value)}")
    return float(value)


def _check_algorithm(algorithm: object) -> str:
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algorithm!r:.60}; choose one of {', '.join(sorted(ALGORITHMS))}")
    return algorithm


def _check_key(key: object) -> str:
    if type(key) is not str:
        raise ConfigError(f"a key must be a string, not {type(key).__name__}")
    return key


def _rates_of(spec: RateSpec) -> tuple[Rate, ...]:
    if isinstance(spec, str):
        return parse_rates(spec)
    if isinstance(spec, Rate):
        return (spec,)
    if not isinstance(spec, list | tuple):
        raise ConfigError(f"rates are a string such as '10/minute', a Rate, or a list of them, not {_short(spec)}")
    rates: list[Rate] = []
    for item in spec:
        if isinstance(item, str):
            rates.extend(parse_rates(item))
        elif isinstance(item, Rate):
            rates.append(item)
        else:
            raise ConfigError(f"each rate in a list is a string or a Rate, not {_short(item)}")
    if not rates:
        raise ConfigError("no rate given")
    if len(set(rates)) != len(rates):
        raise ConfigError(f"a rate appears twice in {spec!r}")
    return tuple(rates)


def _chargeable(windows: tuple[Window, ...]) -> tuple[Window, ...]:
    """``windows`` if their algorithm can consume a cost after the fact, else ConfigError."""
    for w in windows:
        if type(w).charge is Window.charge:
            raise ConfigError(f"the {w.name} algorithm cannot charge a cost after the fact (charge); use hit")
    return windows


class _LimiterBase:
    def __init__(
        self,
        storage: str | Any = "memory://",
        *,
        algorithm: str = "gcra",
        on_store_error: str = "allow",
        key_prefix: str = "rw:",
        clock: Callable[[], float] | None = None,
        max_keys: int | None = None,
        deny_retry_after: float = 1.0,
        **store_options: Any,
    ) -> None:
        _check_algorithm(algorithm)
        if not isinstance(on_store_error, str) or on_store_error not in _FAIL_MODES:
            raise ConfigError(f"on_store_error must be one of {_FAIL_MODES}, not {on_store_error!r:.60}")
        if not isinstance(key_prefix, str):
            raise ConfigError(f"key_prefix must be a string, not {key_prefix!r:.60}")
        self.algorithm = algorithm
        self.on_store_error = on_store_error
        self.key_prefix = key_prefix
        self.deny_retry_after = _check_seconds(deny_retry_after, "deny_retry_after")
        self._clock = clock
        if isinstance(storage, str):
            self.storage_url = storage
            self._store = open_store(storage, clock=clock, max_keys=max_keys, key_prefix=key_prefix, **store_options)
        else:
            self.storage_url = f"{getattr(storage, 'kind', 'custom')}://"
            self._store = storage
        self._plans: dict[tuple[Any, str | None], tuple[Window, ...]] = {}
        # The hot path's cache, per algorithm named in the call (None: the default), for rate
        # strings without parameters: {algorithm: {rates: a window, or a tuple of them}}.
        self._fast: dict[str, Window | tuple[Window, ...]] = {}
        self._fast_by: dict[str | None, dict[str, Window | tuple[Window, ...]]] = {None: self._fast}
        self._hitn = getattr(self._store, "hitn", None)
        self._ahit1 = getattr(self._store, "ahit1", None)
        # The in-process fallback of on_store_error="local", built here rather than at the first
        # failure: threads failing at once must all count in this one store, never in one each.
        self._local: MemoryStore | None = MemoryStore(clock=clock) if on_store_error == "local" else None
        self._failing = False
        #: failures of the store seen so far (every one, not once per outage)
        self.store_errors = 0

    @property
    def store(self) -> Any:
        return self._store

    # -- compiling ----------------------------------------------------------------------------

    def windows(self, rates: RateSpec, algorithm: str | None = None, **params: Any) -> tuple[Window, ...]:
        """The windows a rate spec and algorithm give (cached when there are no parameters)."""
        if not params:
            try:
                return self._plans[rates, algorithm]
            except (KeyError, TypeError):
                pass
        algo = self.algorithm if algorithm is None else _check_algorithm(algorithm)
        wins = tuple(make_window(algo, r, **params) for r in _rates_of(rates))
        ids = [w.id for w in wins]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"two windows of {rates!r} would share one state under {algo}")
        check = getattr(self._store, "check_window", None)  # a store's own bounds (Redis: exact doubles)
        if check is not None:
            for w in wins:
                check(w)
        if not params:
            with contextlib.suppress(TypeError):
                if len(self._plans) > 10_000:
                    self._plans.clear()
                    self._fast.clear()
                    self._fast_by = {None: self._fast}
                self._plans[rates, algorithm] = wins
                if isinstance(rates, str):
                    self._fast_by.setdefault(algorithm, {})[rates] = wins[0] if len(wins) == 1 else wins
        return wins

    # -- turning outcomes into decisions ------------------------------------------------------

    def _decide(self, key: str, windows: Sequence[Window], outs: list[Outcome], lease: str | None = None) -> Decision:
        i = deciding_index(outs)
        d = to_decision(windows[i], outs[i], key, lease)
        if type(outs) is _Fallback:
            return d._replace(reason=outs.reason)
        return d

    def _each(self, key: str, windows: Sequence[Window], outs: list[Outcome]) -> list[Decision]:
        ds = [to_decision(w, o, key) for w, o in zip(windows, outs, strict=True)]
        if type(outs) is _Fallback:
            return [d._replace(reason=outs.reason) for d in ds]
        return ds

    # -- failure ------------------------------------------------------------------------------

    def _failed(
        self, exc: BaseException, op: Op, key: str, windows: Sequence[Window], cost: int, arg: str
    ) -> list[Outcome]:
        self.store_errors += 1
        if not self._failing:
            self._failing = True
            log.warning(
                "ratewarden: store %s failed (%s); on_store_error=%r until it answers again",
                self.storage_url,
                exc,
                self.on_store_error,
            )
        mode = self.on_store_error
        local = self._local
        if local is not None:  # on_store_error == "local"
            return _Fallback(local.apply(op, [(key, w, cost) for w in windows], arg))
        if mode == "deny" and op in ("hit", "acquire"):
            wait = to_micros(self.deny_retry_after)
            return _Fallback(tuple_new(Outcome, (False, 0, wait, wait, None)) for w in windows)
        return _Fallback(tuple_new(Outcome, (True, w.limit, 0, 0, None)) for w in windows)

    def _recovered(self) -> None:
        self._failing = False
        log.info("ratewarden: store %s answers again; shared limits are back", self.storage_url)


class Limiter(_LimiterBase):
    """Synchronous limiter. ``Limiter("memory://")``, ``Limiter("sqlite:///rl.db")``, ...

    ``rates`` everywhere is a string such as ``"5/10 minutes;20/hour"``, a :class:`Rate`, or a
    list of either; ``algorithm`` overrides the limiter's default per call, and algorithm
    parameters (``burst`` for gcra and token-bucket; ``tz`` and ``reset`` for quota) are keywords.
    """

    def _run(self, op: Op, key: str, windows: Sequence[Window], cost: int, arg: str = "") -> list[Outcome]:
        try:
            if op == "hit" and len(windows) == 1:
                outs = [self._store.hit1(key, windows[0], cost)]
            else:
                outs = self._store.apply(op, [(key, w, cost) for w in windows], arg)
        except StoreError as exc:
            return self._failed(exc, op, key, windows, cost, arg)
        if self._failing:
            self._recovered()
        return outs

    def hit(self, key: str, rates: RateSpec, cost: int = 1, *, algorithm: str | None = None, **params: Any) -> Decision:
        """Consume ``cost`` in every window, or in none; the deciding window's Decision."""
        # The hot path: one compiled window, plain arguments. Everything else takes _run.
        if not params and type(key) is str and type(cost) is int and cost >= 0 and type(rates) is str:
            w: Any = (
                self._fast
                if algorithm is None
                else (self._fast_by.get(algorithm, _EMPTY) if type(algorithm) is str else _EMPTY)
            ).get(rates)
            if w is not None and (type(w) is not tuple or self._hitn is not None):
                ws = w if type(w) is tuple else None
                try:
                    if ws is None:
                        o = self._store.hit1(key, w, cost)
                    else:
                        outs = self._hitn(key, ws, cost)  # type: ignore[misc]  # not None: checked above
                        i = deciding_index(outs)
                        w, o = ws[i], outs[i]
                except StoreError as exc:
                    wins = ws or (w,)
                    return self._decide(key, wins, self._failed(exc, "hit", key, wins, cost, ""))
                if self._failing:
                    self._recovered()
                allowed, remaining, reset_us, retry_us, _ = o
                if retry_us < 0:  # a cost that no window can ever hold
                    return to_decision(w, o, key)
                return _new(
                    Decision,
                    (
                        allowed,
                        w.limit,
                        remaining if remaining > 0 else 0,
                        reset_us / 1e6,
                        retry_us / 1e6,
                        w.rate,
                        w.name,
                        key,
                        None,
                        None,
                    ),
                )
        windows = self.windows(rates, algorithm, **params)
        return self._decide(key, windows, self._run("hit", _check_key(key), windows, _check_cost(cost)))

    def peek(
        self, key: str, rates: RateSpec, cost: int = 1, *, algorithm: str | None = None, **params: Any
    ) -> Decision:
        """The Decision ``hit`` would return now, consuming nothing."""
        windows = self.windows(rates, algorithm, **params)
        return self._decide(key, windows, self._run("peek", _check_key(key), windows, _check_cost(cost)))

    def status(self, key: str, rates: RateSpec, *, algorithm: str | None = None, **params: Any) -> list[Decision]:
        """One Decision per window (cost 0: ``allowed`` says whether one more unit would pass)."""
        windows = self.windows(rates, algorithm, **params)
        return self._each(key, windows, self._run("peek", _check_key(key), windows, 0))

    def charge(self, key: str, rates: RateSpec, cost: int, *, algorithm: str | None = None, **params: Any) -> Decision:
        """Consume ``cost`` unconditionally: for costs known only after the work is done."""
        windows = _chargeable(self.windows(rates, algorithm, **params))
        return self._decide(key, windows, self._run("charge", _check_key(key), windows, _check_cost(cost)))

    def acquire(self, key: str, rates: RateSpec, cost: int = 1) -> Decision:
        """Take a ``concurrency`` lease; ``Decision.lease`` names it when allowed."""
        windows = self.windows(rates, "concurrency")
        lease = uuid.uuid4().hex
        outs = self._run("acquire", _check_key(key), windows, _check_cost(cost), lease)
        return self._decide(key, windows, outs, lease)

    def release(self, key: str, rates: RateSpec, lease: str) -> None:
        """Give a ``concurrency`` lease back before its TTL."""
        self._run("release", _check_key(key), self.windows(rates, "concurrency"), 0, lease)

    @contextlib.contextmanager
    def lease(self, key: str, rates: RateSpec, cost: int = 1) -> Iterator[Decision]:
        """``with limiter.lease(key, "10/minute") as d:`` holds a lease while ``d.allowed``."""
        d = self.acquire(key, rates, cost)
        try:
            yield d
        finally:
            if d.lease is not None:
                self.release(key, rates, d.lease)

    def reset(self, key: str, rates: RateSpec | None = None, *, algorithm: str | None = None) -> None:
        """Forget every window of ``key`` (or only those of ``rates``)."""
        windows = None if rates is None else self.windows(rates, algorithm)
        try:
            self._store.reset(_check_key(key), windows)
        except StoreError as exc:
            self._failed(exc, "peek", key, windows or (), 0, "")

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Limiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncLimiter(_LimiterBase):
    """The same API as :class:`Limiter`, awaitable. Stores without native async I/O (SQLite)
    run in a worker thread; the memory store is called directly (it never blocks)."""

    async def _run(self, op: Op, key: str, windows: Sequence[Window], cost: int, arg: str = "") -> list[Outcome]:
        store = self._store
        try:
            if hasattr(store, "aapply"):
                if op == "hit" and len(windows) == 1:
                    outs = [await store.ahit1(key, windows[0], cost)]
                else:
                    outs = await store.aapply(op, [(key, w, cost) for w in windows], arg)
            elif store.kind == "memory":  # never blocks: no thread hop
                if op == "hit":
                    outs = [store.hit1(key, windows[0], cost)] if len(windows) == 1 else store.hitn(key, windows, cost)
                else:
                    outs = store.apply(op, [(key, w, cost) for w in windows], arg)
            else:
                outs = await asyncio.to_thread(store.apply, op, [(key, w, cost) for w in windows], arg)
        except StoreError as exc:
            return self._failed(exc, op, key, windows, cost, arg)
        if self._failing:
            self._recovered()
        return outs

    async def hit(
        self, key: str, rates: RateSpec, cost: int = 1, *, algorithm: str | None = None, **params: Any
    ) -> Decision:
        # The hot path: one compiled window on a store with a native async face (Redis).
        ahit1 = self._ahit1
        if (
            ahit1 is not None
            and not params
            and type(key) is str
            and type(cost) is int
            and cost >= 0
            and type(rates) is str
        ):
            w: Any = (
                self._fast
                if algorithm is None
                else (self._fast_by.get(algorithm, _EMPTY) if type(algorithm) is str else _EMPTY)
            ).get(rates)
            if w is not None and type(w) is not tuple:
                try:
                    o = await ahit1(key, w, cost)
                except StoreError as exc:
                    return self._decide(key, (w,), self._failed(exc, "hit", key, (w,), cost, ""))
                if self._failing:
                    self._recovered()
                return to_decision(w, o, key)
        windows = self.windows(rates, algorithm, **params)
        return self._decide(key, windows, await self._run("hit", _check_key(key), windows, _check_cost(cost)))

    async def peek(
        self, key: str, rates: RateSpec, cost: int = 1, *, algorithm: str | None = None, **params: Any
    ) -> Decision:
        windows = self.windows(rates, algorithm, **params)
        return self._decide(key, windows, await self._run("peek", _check_key(key), windows, _check_cost(cost)))

    async def status(self, key: str, rates: RateSpec, *, algorithm: str | None = None, **params: Any) -> list[Decision]:
        windows = self.windows(rates, algorithm, **params)
        return self._each(key, windows, await self._run("peek", _check_key(key), windows, 0))

    async def charge(
        self, key: str, rates: RateSpec, cost: int, *, algorithm: str | None = None, **params: Any
    ) -> Decision:
        windows = _chargeable(self.windows(rates, algorithm, **params))
        return self._decide(key, windows, await self._run("charge", _check_key(key), windows, _check_cost(cost)))

    async def acquire(self, key: str, rates: RateSpec, cost: int = 1) -> Decision:
        windows = self.windows(rates, "concurrency")
        lease = uuid.uuid4().hex
        outs = await self._run("acquire", _check_key(key), windows, _check_cost(cost), lease)
        return self._decide(key, windows, outs, lease)

    async def release(self, key: str, rates: RateSpec, lease: str) -> None:
        await self._run("release", _check_key(key), self.windows(rates, "concurrency"), 0, lease)

    @contextlib.asynccontextmanager
    async def lease(self, key: str, rates: RateSpec, cost: int = 1) -> AsyncIterator[Decision]:
        d = await self.acquire(key, rates, cost)
        try:
            yield d
        finally:
            if d.lease is not None:
                await self.release(key, rates, d.lease)

    async def reset(self, key: str, rates: RateSpec | None = None, *, algorithm: str | None = None) -> None:
        windows = None if rates is None else self.windows(rates, algorithm)
        store = self._store
        try:
            if hasattr(store, "areset"):
                await store.areset(_check_key(key), windows)
            else:
                await asyncio.to_thread(store.reset, _check_key(key), windows)
        except StoreError as exc:
            self._failed(exc, "peek", key, windows or (), 0, "")

    async def aclose(self) -> None:
        store = self._store
        if hasattr(store, "aclose"):
            await store.aclose()
        else:
            store.close()

    async def __aenter__(self) -> AsyncLimiter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
