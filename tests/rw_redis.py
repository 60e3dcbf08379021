"""The Redis the tests share: its URL, and the one place that deletes a test's keys.

The URL comes from ``RATEWARDEN_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379``). That
server may be shared with other runs and other people, so every test writes under a key prefix
of its own and deletes only that prefix: nothing here flushes a database or the script cache.

Tests marked ``redis`` are skipped, with one reason, when this Redis does not answer; under
``CI=true`` they fail instead (see ``tests/conftest.py``). Tests that start a private
``redis-server`` of their own (killed, wiped, clustered) use other ports and never this one.
"""

from __future__ import annotations

import functools
import os
import uuid
from typing import Any

__all__ = ["URL", "client", "delete_prefix", "new_prefix", "unreachable"]

URL = os.environ.get("RATEWARDEN_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def new_prefix(tag: str = "rwtest") -> str:
    """A key prefix no other test (or run) uses: ``tag:<12 hex digits>:``."""
    return f"{tag}:{uuid.uuid4().hex[:12]}:"


def client(url: str = URL, **options: Any) -> Any:
    """A redis-py client for ``url`` (``redis+cluster://`` gives a cluster client)."""
    if url.startswith("redis+cluster://"):
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url.replace("redis+cluster://", "redis://", 1), **options)
    import redis

    return redis.Redis.from_url(url, **options)


def delete_prefix(prefix: str, url: str = URL) -> None:
    """Delete every key under ``prefix`` (one key at a time: a cluster's keys live in many slots)."""
    if not prefix:
        raise ValueError("refusing to delete every key of a shared Redis")
    c = client(url)
    try:
        for key in list(c.scan_iter(match=prefix + "*", count=1000)):
            c.delete(key)
    finally:
        c.close()


@functools.cache
def unreachable(url: str = URL) -> str | None:
    """``None`` when the Redis at ``url`` answers PING, else why not (asked once per run)."""
    try:
        c = client(url, socket_connect_timeout=2, socket_timeout=2)
    except ImportError as exc:
        return f"redis-py is not installed ({exc})"
    try:
        c.ping()
    except Exception as exc:
        return f"no Redis answers at {url} ({type(exc).__name__}: {exc})"
    finally:
        c.close()
    return None
