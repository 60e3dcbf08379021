"""``redis+sentinel://`` against a real Sentinel: a private master and one sentinel process
monitoring it, both children of the test (stopped by pid)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratewarden import AsyncLimiter, Limiter

from .redis_cluster import REDIS_SERVER, RedisServer, free_port, ping

redis = pytest.importorskip("redis")
sentinel_mod = pytest.importorskip("redis.sentinel")
pytestmark = pytest.mark.redis


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[str, RedisServer]]:
    master = RedisServer(free_port(), tmp_path / "master").start()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor rwmaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds rwmaster 5000\n"
    )
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    proc = subprocess.Popen(
        [REDIS_SERVER, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the sentinel did not start")
            time.sleep(0.02)
        s = sentinel_mod.Sentinel([("127.0.0.1", port)])
        while True:  # wait until it knows the master
            try:
                s.discover_master("rwmaster")
                break
            except sentinel_mod.MasterNotFoundError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis+sentinel://127.0.0.1:{port}/rwmaster/0", master
    finally:
        proc.kill()
        proc.wait(10)
        master.stop()


def test_sentinel_url_finds_the_master_and_shares_its_limit(sentinel: tuple[str, RedisServer]) -> None:
    url, master = sentinel
    via_sentinel = Limiter(url, timeout=1.0)
    direct = Limiter(master.url)
    try:
        assert [via_sentinel.hit("k", "3/minute").allowed for _ in range(2)] == [True, True]
        assert direct.hit("k", "3/minute").allowed
        assert not via_sentinel.hit("k", "3/minute").allowed
        assert via_sentinel.store_errors == 0
    finally:
        via_sentinel.close()
        direct.close()


async def test_sentinel_async(sentinel: tuple[str, RedisServer]) -> None:
    url, _ = sentinel
    lim = AsyncLimiter(url, timeout=1.0)
    try:
        ds = [await lim.hit("a", "2/minute") for _ in range(3)]
        assert [d.allowed for d in ds] == [True, True, False]
        assert lim.store_errors == 0
    finally:
        await lim.aclose()
