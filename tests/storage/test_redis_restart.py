"""A pooled connection that died with its server (Redis killed and restarted on the same port):
the first call after the restart is decided by Redis, not by on_store_error (sync and asyncio);
and a script whose effect may have applied (a timeout after the write) is never sent twice.
A private redis-server of the test's own; the shared 6379 is never touched.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from ratewarden import StoreError
from ratewarden.core.algorithms import make_window
from ratewarden.core.rates import US, Rate
from ratewarden.storage.redis import RedisStore, open_redis

from . import redis_cluster
from .redis_cluster import RedisServer

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.redis
private_redis = redis_cluster.private_redis

W = make_window("gcra", Rate(100, 3600 * US))


def restart(server: RedisServer) -> None:
    server.stop()
    server.start()


def store(url: str, **kw: object) -> RedisStore:
    s = open_redis(url, breaker=0, **kw)
    assert isinstance(s, RedisStore)
    return s


def test_sync_first_call_after_restart_is_decided_by_redis(private_redis: RedisServer) -> None:
    s = store(private_redis.url)
    try:
        assert s.hit1("a", W, 1)[1] == 99
        restart(private_redis)
        for i in range(3):
            assert s.hit1(f"b{i}", W, 1)[:2] == (True, 99)  # no StoreError, a fresh key on Redis
    finally:
        s.close()


def test_async_first_call_after_restart_is_decided_by_redis(private_redis: RedisServer) -> None:
    async def main() -> None:
        s = store(private_redis.url)
        try:
            await asyncio.gather(*(s.ahit1(f"x{i}", W, 1) for i in range(50)))
            private_redis.stop()
            await asyncio.sleep(0.05)  # the event loop runs on while the server is away, as in a service
            private_redis.start()
            await asyncio.sleep(0.05)
            for i in range(3):
                assert (await s.ahit1(f"y{i}", W, 1))[:2] == (True, 99)
        finally:
            await s.aclose()

    asyncio.run(main())


def test_async_restart_unseen_by_the_loop_is_caught_by_the_health_check(private_redis: RedisServer) -> None:
    """The loop never ran while the server restarted (the socket's close is not seen at checkout):
    a connection idle longer than the health-check interval is PINGed, the PING fails and is
    retried on a fresh connection; the script goes out once, on the fresh one."""

    async def main() -> None:
        s = store(private_redis.url)
        try:
            assert (await s.ahit1("x", W, 1))[1] == 99
            restart(private_redis)  # blocking: no loop iteration sees the old socket close
            time.sleep(1.2)  # real time: longer than the health-check interval (1 s)
            assert (await s.ahit1("y", W, 1))[:2] == (True, 99)
        finally:
            await s.aclose()

    asyncio.run(main())


def test_timeout_after_the_write_is_not_retried(private_redis: RedisServer) -> None:
    """The server is busy (a 1 s script) when the call goes out: the call times out (a
    StoreError for on_store_error to decide), the server then runs it once; never twice."""
    url = private_redis.url
    s = store(url, timeout=0.05)
    try:
        assert s.hit1("k", W, 1)[1] == 99
        busy = private_redis.busy(1.0)
        with pytest.raises(StoreError):
            s.hit1("k", W, 1)
        busy.join()
        assert s.hit1("k", W, 1)[1] == 97  # the timed-out call counted once, this one once
    finally:
        s.close()


def test_default_timeout_is_250_ms() -> None:
    """50 ms failed ~1% of calls on a loaded 2-core machine (docs/redis.md, "The timeout"),
    each decided by on_store_error: an over-admission under "allow"."""
    s = open_redis("redis://127.0.0.1:1/0")
    assert isinstance(s, RedisStore)
    assert s.timeout == 0.25
    assert s._options["socket_timeout"] == s._options["socket_connect_timeout"] == 0.25


def _taken_by(cls: type) -> set[str]:
    """The keyword options a redis-py connection class takes (its __init__ and its bases')."""
    import inspect

    return {p for c in cls.__mro__ if "__init__" in vars(c) for p in inspect.signature(c.__init__).parameters}


def test_every_connection_option_is_one_this_redis_py_takes() -> None:
    """The options the store gives its sync and asyncio connections are ones the installed
    redis-py's connection classes take: redis-py 7.x's asyncio connection has no
    maint_notifications_config, and passing it broke every async call at the first connect."""
    import redis.asyncio.connection
    import redis.connection

    s = open_redis("redis://127.0.0.1:1/0")
    assert isinstance(s, RedisStore)
    for options, cls in ((s._options, redis.connection.Connection), (s._aoptions, redis.asyncio.connection.Connection)):
        unknown = set(options) - _taken_by(cls)
        assert not unknown, f"{cls.__module__}.Connection does not take {sorted(unknown)}"
