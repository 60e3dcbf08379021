"""``RedisStore``: one store object for sync and async callers, over Redis, Cluster or Sentinel.

Invariants kept here:

* **One round trip per decision.** Every operation is one ``EVALSHA`` of the composed script
  (``_lua.py``); ``NOSCRIPT`` (a restarted or flushed server) is answered by one ``EVAL`` of the
  full text, which also caches it again. In a Cluster, the items of one call that live in
  different slots are split per slot (see :meth:`RedisStore.apply`).
* **Server time.** The script reads Redis ``TIME``; the client clock is used only to send the
  quota's calendar bounds. ``_test_now`` (tests only) replaces ``TIME`` by an injected clock.
* **Defined failure.** Every redis-py error becomes :class:`StoreError`. Socket and connect
  timeouts default to 250 ms (50 ms failed 1% of calls under load: docs/redis.md) and
  redis-py retries nothing but a health-check PING. After a connection failure a
  circuit breaker fails fast for ``breaker`` seconds (default 0.5), then the next call tries
  Redis again, so a dead server costs one timeout per ``breaker`` interval, not per request.
* **Async calls share round trips** (``_batch.py``): while one round trip is in flight on an
  event loop, the calls that arrive are queued and then sent together.

The sync and async faces share :class:`~ratewarden.storage.redis._lua.Codec` (keys, argument
packing, reply parsing) and :meth:`RedisStore._plan`; only the I/O differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio.connection
import redis.connection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError
from redis.retry import Retry

from ratewarden.clock import micros
from ratewarden.core.algorithms import Concurrency, Quota
from ratewarden.core.algorithms.base import ALLOWED, Outcome, Window
from ratewarden.core.evaluate import Op
from ratewarden.errors import StoreError
from ratewarden.storage.base import Item
from ratewarden.storage.redis._batch import Batcher
from ratewarden.storage.redis._denials import DenialCache
from ratewarden.storage.redis._lua import SCRIPT, SHA, Codec, resp_evalsha

_MaintConfig: Any
try:  # redis-py >= 7 (the extra asks for >= 5.0)
    from redis.maint_notifications import MaintNotificationsConfig as _MaintConfig
except ImportError:  # pragma: no cover - an older redis-py has no maintenance notifications
    _MaintConfig = None


def _takes(cls: Any, name: str) -> bool:
    """Whether this redis-py's connection class ``cls`` takes the option ``name``."""
    try:
        return name in inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):  # pragma: no cover - a signature inspect cannot read
        return False


#: which of the sync / asyncio connections take maint_notifications_config (redis-py 8 both,
#: 7.x only the sync one: passing it to the other is a TypeError at the first connect)
_MAINT_SYNC = _MaintConfig is not None and _takes(redis.connection.AbstractConnection, "maint_notifications_config")
_MAINT_ASYNC = _MaintConfig is not None and _takes(
    redis.asyncio.connection.AbstractConnection, "maint_notifications_config"
)

__all__ = ["ClientFactory", "RedisStore"]

_OPS = frozenset({"hit", "peek", "charge", "acquire", "release"})
_ERRORS = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)
_HEAD = 6  # ARGV fields before the items of a one-request call: now, slack, 1, op, lease, count
_FIELDS = 2  # ARGV fields per item
#: seconds a pooled connection may stay idle before it is checked with a PING (see __init__)
HEALTH_CHECK = 1.0

#: (sync: bool, options) -> a redis-py client (sync or asyncio)
ClientFactory = Callable[[bool, dict[str, Any]], Any]

# One planned script call: (indices of the items it covers, KEYS, ARGV).
_Call = tuple[list[int], list[str], list[Any]]


def _nothing(op: str) -> list[Outcome]:
    """The outcomes of an operation over no items (an unknown operation is still refused)."""
    if op not in _OPS:
        raise ValueError(f"unknown operation {op!r}")
    return []


class _Breaker:
    """After a connection failure, fail fast for ``backoff`` seconds; then try again."""

    __slots__ = ("backoff", "last", "until")

    def __init__(self, backoff: float) -> None:
        self.backoff = backoff
        self.until = 0.0
        self.last = ""

    def check(self) -> None:
        if self.until:
            if time.monotonic() < self.until:
                raise StoreError(f"redis unavailable ({self.last}); failing fast until the next retry")
            self.until = 0.0

    def fail(self, exc: BaseException) -> None:
        self.last = f"{type(exc).__name__}: {exc}"
        if self.backoff > 0:
            self.until = time.monotonic() + self.backoff


class RedisStore:
    """The ``redis://``, ``redis+cluster://``, ``redis+sentinel://`` and ``unix://`` store.

    Use :func:`ratewarden.storage.redis.open_redis` rather than this constructor. The sync
    client (thread-safe, pooled) and the asyncio client (one per event loop) are created lazily.
    """

    kind = "redis"
    blocking = shared = may_fail = True

    def __init__(
        self,
        factory: ClientFactory,
        *,
        cluster: bool = False,
        key_prefix: str = "rw:",
        timeout: float = 0.25,
        breaker: float = 0.5,
        max_key_length: int = 200,
        clock: Callable[[], float] | None = None,
        _test_now: Callable[[], float] | None = None,
        url: str = "redis://",
        denial_cache: int = 0,
    ) -> None:
        now_us = None if _test_now is None else micros(_test_now)
        self.codec = Codec(key_prefix, max_key_length, clock, now_us)
        #: denials answered in process until their retry_after (see _denials.py); None: off
        self.denials = DenialCache(denial_cache, now_us) if denial_cache else None
        self.url = url
        self.cluster = cluster
        self.timeout = timeout
        self._factory = factory
        self._options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        if not cluster:
            # A pooled connection idle for HEALTH_CHECK seconds is checked with a PING before the
            # script is sent (redis-py's health check); a PING that fails with a ConnectionError
            # (a socket that died with a restarted server) is retried once on a fresh connection
            # (redis-py's Retry). Only the PING is retried, never the script: the store sends it
            # on the raw connection itself, so a script whose effect may have applied (a timeout
            # or a closed connection after the write) is never sent twice.
            # And redis-py 8's maintenance notifications (on "auto" by default, for Redis
            # Enterprise's RESP3 push messages) turn off the pool's check at checkout that a
            # pooled socket has not been closed by the server: turn them off, so a connection
            # whose server went away is replaced before anything is sent on it.
            self._options["health_check_interval"] = HEALTH_CHECK
        #: the asyncio clients' options: the same, with redis.asyncio's Retry (it awaits the PING)
        self._aoptions = dict(self._options)
        if not cluster:
            if _MAINT_SYNC:
                self._options["maint_notifications_config"] = _MaintConfig(enabled=False)
            if _MAINT_ASYNC:
                self._aoptions["maint_notifications_config"] = _MaintConfig(enabled=False)
            self._aoptions["retry"] = AsyncRetry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
            self._options["retry"] = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        self._breaker = _Breaker(breaker)
        self._lock = threading.Lock()
        self._client: Any = None
        self._pool: Any = None  # the sync client's pool (None for a Cluster)
        self._batcher: Batcher | None = None

    def check_window(self, window: Window) -> None:
        """Raise :class:`~ratewarden.errors.ConfigError` now if the scripts cannot decide
        ``window`` exactly (Lua numbers are doubles: its products must stay below 2^53), so a
        rate is refused when it is compiled rather than on its first request. No I/O."""
        if not isinstance(window, Quota):  # a quota's numbers are counts and instants: always exact
            self.codec.spec(window, 0)

    # -- planning (shared by both faces) ------------------------------------------------------

    def _plan(self, op: Op, items: Sequence[Item], arg: str) -> list[_Call]:
        """One script call, or (Cluster, items in several slots) one per slot."""
        keys, args = self.codec.pack(op, items, arg)
        if not self.cluster or len(keys) < 2:
            return [(list(range(len(keys))), keys, args)]
        slots: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            slots.setdefault(key_slot(k.encode("utf-8", "surrogatepass")), []).append(i)
        if len(slots) == 1:
            return [(list(range(len(keys))), keys, args)]
        calls: list[_Call] = []
        for idx in slots.values():
            part = [*args[: _HEAD - 1], len(idx)]
            for i in idx:
                part += args[_HEAD + i * _FIELDS : _HEAD + (i + 1) * _FIELDS]
            calls.append((idx, [keys[i] for i in idx], part))
        return calls

    @staticmethod
    def _as(calls: list[_Call], op: str) -> list[_Call]:
        return [(idx, keys, [*args[:3], op, *args[4:]]) for idx, keys, args in calls]

    @staticmethod
    def _merge(n: int, calls: list[_Call], replies: list[Any]) -> list[Outcome]:
        outs: list[Outcome] = [(False, 0, 0, 0, None)] * n
        for (idx, keys, _), reply in zip(calls, replies, strict=True):
            for i, o in zip(idx, Codec.parse(reply, len(keys)), strict=True):
                outs[i] = o
        return outs

    def _error(self, exc: BaseException) -> StoreError:
        if not isinstance(exc, ResponseError):  # the server answered: no outage
            self._breaker.fail(exc)
        return StoreError(f"redis store {self.url}: {type(exc).__name__}: {exc}")

    # -- sync face ----------------------------------------------------------------------------

    def _sync(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    client = self._factory(True, self._options)
                    self._pool = None if self.cluster else getattr(client, "connection_pool", None)
                    self._client = client
                client = self._client
        return client

    def _eval(self, keys: list[str], args: list[Any]) -> Any:
        self._breaker.check()
        try:
            client = self._client or self._sync()
            pool = self._pool
            if pool is None:
                try:
                    return client.execute_command("EVALSHA", SHA, len(keys), *keys, *args)
                except NoScriptError:
                    return client.execute_command("EVAL", SCRIPT, len(keys), *keys, *args)
            # standalone and Sentinel: what execute_command does, minus the generic packer
            conn = pool.get_connection()
            try:
                conn.send_packed_command([resp_evalsha(keys, args)])  # PING first if idle (see __init__)
                try:
                    return conn.read_response()
                except NoScriptError:
                    conn.send_packed_command(conn.pack_command("EVAL", SCRIPT, len(keys), *keys, *args), False)
                    return conn.read_response()
            except BaseException as exc:
                if not isinstance(exc, ResponseError):  # unread replies may be pending
                    conn.disconnect()
                raise
            finally:
                pool.release(conn)
        except _ERRORS as exc:
            raise self._error(exc) from exc

    def hit1(self, key: str, window: Window, cost: int) -> Outcome:
        """The one fast path (and ``ahit1`` its async face), equal to :meth:`apply` (see
        tests/storage/test_fast_paths.py). Measured: ``apply`` takes 1.17x the time on a local
        Redis (``python bench/fast_paths.py redis``, interleaved timeit in one run, gcra)."""
        keys, args = self.codec.pack1(key, window, cost)
        dc = self.denials
        if dc is not None and dc._data and (hit := dc.get(keys, (cost,))) is not None:
            return hit[0]
        r = self._eval(keys, args)
        try:
            out = (r[0] == 1, r[1], r[2], r[3], None)
        except (TypeError, IndexError):
            return Codec.parse(r, 1)[0]  # raises with the reply in the message
        if not out[ALLOWED] and dc is not None and not isinstance(window, Concurrency):
            dc.put(keys, (cost,), (out,))
        return out

    def apply(self, op: Op, items: Sequence[Item], arg: str = "") -> list[Outcome]:
        """All-or-nothing in one script. Cluster items in several slots: peek every slot first,
        and charge only if all admit (best effort: another client may consume in between).
        No items: ``[]`` without any I/O, as the memory store does."""
        if not items:
            return _nothing(op)
        cache = self._cacheable(op, items)
        if cache is not None and (hit := cache[0].get(cache[1], cache[2])) is not None:
            return hit
        outs = self._apply(op, items, arg)
        if cache is not None and not all(o[ALLOWED] for o in outs):
            cache[0].put(cache[1], cache[2], outs)
        return outs

    def _cacheable(self, op: Op, items: Sequence[Item]) -> tuple[DenialCache, list[str], list[int]] | None:
        """The denial cache and this request's (state keys, costs), when a denial may be cached."""
        dc = self.denials
        if dc is None or op != "hit" or any(isinstance(w, Concurrency) for _, w, _ in items):
            return None
        return dc, [self.codec.state_key(k, w) for k, w, _ in items], [c for _, _, c in items]

    def _apply(self, op: Op, items: Sequence[Item], arg: str) -> list[Outcome]:
        calls = self._plan(op, items, arg)
        if len(calls) == 1:
            return Codec.parse(self._eval(calls[0][1], calls[0][2]), len(items))
        if op in ("hit", "acquire"):
            peeks = self._merge(len(items), calls, [self._eval(k, a) for _, k, a in self._as(calls, "peek")])
            if not all(o[ALLOWED] for o in peeks):
                return peeks
        return self._merge(len(items), calls, [self._eval(k, a) for _, k, a in calls])

    def _forget(self, key: str) -> None:
        if self.denials is not None:
            base = self.codec.base(key)
            self.denials.forget(lambda s: s.startswith(base))

    def reset(self, key: str, windows: Sequence[Window] | None = None) -> None:
        """Delete the windows given, or (``None``) every window of ``key``, found with SCAN on
        the key's hash-tagged pattern (an admin operation, not the hot path). The denial cache
        forgets the key at once (a reset through another server is seen after retry_after)."""
        self._forget(key)
        self._breaker.check()
        try:
            client = self._sync()
            if windows is None:
                keys = list(client.scan_iter(match=self.codec.pattern(key), count=1000))
            else:
                keys = [k for w in windows for k in self.codec.state_keys(key, w)]
            if keys:
                client.delete(*keys)
        except _ERRORS as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        client, self._client = self._client, None
        self._pool = None
        if client is not None:
            for c in (client, *getattr(client, "rw_also_close", ())):
                with contextlib.suppress(*_ERRORS):
                    c.close()

    # -- async face ---------------------------------------------------------------------------

    def _abatcher(self) -> Batcher:
        loop = asyncio.get_running_loop()
        b = self._batcher
        if b is None or b.loop is not loop:
            b = self._batcher = Batcher(self._factory(False, self._aoptions), loop)
        return b

    async def _aeval_calls(self, calls: list[_Call]) -> list[Any]:
        self._breaker.check()
        try:
            b = self._batcher if self._batcher is not None else self._abatcher()
            if b.loop is not asyncio.get_running_loop():
                b = self._abatcher()
            if len(calls) == 1:
                return [await b.call(calls[0][1], calls[0][2])]
            return list(await asyncio.gather(*(b.call(k, a) for _, k, a in calls)))
        except _ERRORS as exc:
            raise self._error(exc) from exc

    async def ahit1(self, key: str, window: Window, cost: int) -> Outcome:
        keys, args = self.codec.pack1(key, window, cost)
        dc = self.denials
        if dc is not None and dc._data and (hit := dc.get(keys, (cost,))) is not None:
            return hit[0]
        # _aeval_calls of one call, without its lists
        self._breaker.check()
        try:
            b = self._batcher
            if b is None or b.loop is not asyncio.get_running_loop():
                b = self._abatcher()
            r = await b.call(keys, args)
        except _ERRORS as exc:
            raise self._error(exc) from exc
        try:
            out = (r[0] == 1, r[1], r[2], r[3], None)
        except (TypeError, IndexError):
            return Codec.parse(r, 1)[0]  # raises with the reply in the message
        if not out[ALLOWED] and dc is not None and not isinstance(window, Concurrency):
            dc.put(keys, (cost,), (out,))
        return out

    async def aapply(self, op: Op, items: Sequence[Item], arg: str = "") -> list[Outcome]:
        if not items:
            return _nothing(op)
        cache = self._cacheable(op, items)
        if cache is not None and (hit := cache[0].get(cache[1], cache[2])) is not None:
            return hit
        outs = await self._aapply(op, items, arg)
        if cache is not None and not all(o[ALLOWED] for o in outs):
            cache[0].put(cache[1], cache[2], outs)
        return outs

    async def _aapply(self, op: Op, items: Sequence[Item], arg: str) -> list[Outcome]:
        calls = self._plan(op, items, arg)
        if len(calls) == 1:
            return Codec.parse((await self._aeval_calls(calls))[0], len(items))
        if op in ("hit", "acquire"):
            peeks = self._merge(len(items), calls, await self._aeval_calls(self._as(calls, "peek")))
            if not all(o[ALLOWED] for o in peeks):
                return peeks
        return self._merge(len(items), calls, await self._aeval_calls(calls))

    async def areset(self, key: str, windows: Sequence[Window] | None = None) -> None:
        self._forget(key)
        self._breaker.check()
        try:
            client = self._abatcher().client
            if windows is None:
                keys = [k async for k in client.scan_iter(match=self.codec.pattern(key), count=1000)]
            else:
                keys = [k for w in windows for k in self.codec.state_keys(key, w)]
            if keys:
                await client.delete(*keys)
        except _ERRORS as exc:
            raise self._error(exc) from exc

    async def aclose(self) -> None:
        b, self._batcher = self._batcher, None
        if b is not None:
            for t in list(b.tasks):
                await asyncio.gather(t, return_exceptions=True)
            with contextlib.suppress(*_ERRORS):
                await b.close()
            for c in (b.client, *getattr(b.client, "rw_also_close", ())):
                with contextlib.suppress(*_ERRORS):
                    await c.aclose()
        self.close()

    def __repr__(self) -> str:
        return f"<RedisStore {self.url} prefix={self.codec.prefix!r}>"
