"""The asyncio face keeps one pooled connection between round trips (``Batcher._send``): a lone
caller checks the pool out once, not once per call; a connection with anything unexpected in it
(a reply left by a cancelled call, bytes nobody asked for) is never read as the next reply; closing
the store gives it back. (A server that closed the connection: tests/storage/test_redis_restart.py.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ratewarden.core.algorithms import make_window
from ratewarden.core.rates import US, Rate
from ratewarden.storage.redis import RedisStore, open_redis

from . import redis_cluster
from .redis_cluster import RedisServer

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.redis
private_redis = redis_cluster.private_redis

W100 = make_window("gcra", Rate(100, 3600 * US))
W5 = make_window("gcra", Rate(5, 3600 * US))


def store(url: str, prefix: str) -> RedisStore:
    s = open_redis(url, key_prefix=prefix, breaker=0)
    assert isinstance(s, RedisStore)
    return s


def count_checkouts(s: RedisStore) -> list[int]:
    """Count the batcher's pool checkouts (the pool itself is untouched: the call goes through)."""
    pool = s._abatcher().pool
    seen = [0]
    real = pool.get_connection

    async def get_connection(*a: Any, **kw: Any) -> Any:
        seen[0] += 1
        return await real(*a, **kw)

    pool.get_connection = get_connection
    return seen


def test_a_lone_caller_checks_the_pool_out_once(redis_url: str, redis_prefix: str) -> None:
    async def main() -> None:
        s = store(redis_url, redis_prefix)
        try:
            seen = count_checkouts(s)
            for i in range(200):
                assert (await s.ahit1("k", W100, 0 if i else 1))[:2] == (True, 99)
            assert seen[0] == 1
        finally:
            await s.aclose()

    asyncio.run(main())


def test_the_reply_of_a_cancelled_call_is_never_read_as_the_next_reply(private_redis: RedisServer) -> None:
    """A call cancelled while its reply is due (the server busy with another client's script):
    the kept connection is dropped with that reply unread, and the next call gets its own."""
    url = private_redis.url

    async def main() -> None:
        s = open_redis(url, timeout=5, breaker=0)
        assert isinstance(s, RedisStore)
        try:
            assert (await s.ahit1("warm", W100, 1))[1] == 99  # the connection is kept from here
            seen = count_checkouts(s)
            busy = private_redis.busy(0.5)
            task = asyncio.create_task(s.ahit1("five", W5, 1))
            await asyncio.sleep(0.05)  # written; its reply ([1, 4, ...]) comes after the script
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # at once, the server still busy: on the old connection the first reply to come
            # would be the cancelled call's
            assert (await s.ahit1("hundred", W100, 1))[:2] == (True, 99)
            await asyncio.to_thread(busy.join)
            assert (await s.ahit1("five", W5, 0))[1] == 4  # the cancelled call ran once on the server
            assert seen[0] == 1  # the cancelled call's connection was dropped, one checkout since
        finally:
            await s.aclose()

    asyncio.run(main())


def test_bytes_nobody_asked_for_are_never_read_as_a_reply(redis_url: str, redis_prefix: str) -> None:
    async def main() -> None:
        s = store(redis_url, redis_prefix)
        try:
            assert (await s.ahit1("warm", W100, 1))[1] == 99
            kept = s._abatcher().conn
            assert kept is not None
            stale = kept._reader
            stale.feed_data(b"*4\r\n:0\r\n:0\r\n:0\r\n:0\r\n")  # a stray reply: a denial
            seen = count_checkouts(s)
            assert (await s.ahit1("fresh", W100, 1))[:2] == (True, 99)
            assert seen[0] == 1  # dropped and checked out again (the pool reconnects it)
            assert s._abatcher().conn._reader is not stale
        finally:
            await s.aclose()

    asyncio.run(main())


def test_closing_the_store_gives_the_kept_connection_back(redis_url: str, redis_prefix: str) -> None:
    async def main() -> None:
        s = store(redis_url, redis_prefix)
        await s.ahit1("k", W100, 1)
        b = s._abatcher()
        kept, pool = b.conn, b.pool
        assert kept is not None and kept in pool._in_use_connections
        await s.aclose()
        assert b.conn is None and kept not in pool._in_use_connections and not kept.is_connected

    asyncio.run(main())
