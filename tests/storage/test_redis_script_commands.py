"""The Redis commands the script runs: a merged call writes each plain state once, with its
last value and TTL; one hit of one window is GET + SET, as the floor.

A private redis-server of the test's own (INFO commandstats counts the whole server; the shared
6379 is never touched).
"""

from __future__ import annotations

import pytest

from ratewarden.core.algorithms import make_window
from ratewarden.core.rates import US, Rate
from ratewarden.storage.redis import RedisStore, open_redis
from ratewarden.storage.redis._lua import Codec

from . import redis_cluster
from .redis_cluster import RedisServer

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.redis
private_redis = redis_cluster.private_redis

NOW = 1_000_000_000_000  # us: the injected clock (the script then keeps states an hour longer)


def _sets(client: object) -> int:
    stats = client.info("commandstats")  # type: ignore[attr-defined]
    return int(stats.get("cmdstat_set", {}).get("calls", 0))


@pytest.mark.parametrize("algo", ["gcra", "fixed-window", "sliding-window", "token-bucket"])
def test_a_merged_call_sets_each_key_once_with_the_state_of_its_last_request(
    private_redis: RedisServer, algo: str
) -> None:
    store = open_redis(private_redis.url, breaker=0, _test_now=lambda: NOW / 1e6)
    assert isinstance(store, RedisStore)
    w = make_window(algo, Rate(100, 60 * US))
    client = redis.Redis.from_url(private_redis.url)
    try:
        calls = [store.codec.pack("hit", [(key, w, 1)]) for key in ("a", "a", "b", "a")]
        client.config_resetstat()
        reply = store._eval(*Codec.merge(calls))
        assert _sets(client) == 2  # "a" and "b", once each (before: once per request, 4)
        outs = Codec.parse(reply, 4)
        assert [o[0] for o in outs] == [True] * 4
        assert [o[1] for o in outs] == [99, 98, 99, 97]
        # the same end state as four calls one after the other, on other keys
        for key in ("c", "c", "d", "c"):
            store.hit1(key, w, 1)
        for merged, single in (("a", "c"), ("b", "d")):
            k1, k2 = store.codec.state_key(merged, w), store.codec.state_key(single, w)
            assert client.get(k1) == client.get(k2)
            assert abs(client.pttl(k1) - client.pttl(k2)) < 1_000
    finally:
        client.close()
        store.close()


def _calls(client: object) -> dict[str, int]:
    stats = client.info("commandstats")  # type: ignore[attr-defined]
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


@pytest.mark.parametrize("algo", ["gcra", "fixed-window", "sliding-window", "token-bucket"])
def test_one_hit_is_one_get_and_one_set_in_the_script(private_redis: RedisServer, algo: str) -> None:
    """The script's hot path (one hit, one window, a plain algorithm) runs the floor's commands,
    GET and SET (and TIME without the test clock), nothing else; its reply and state equal the
    general path's (the same hit sent merged with a peek of another key)."""
    store = open_redis(private_redis.url, breaker=0, _test_now=lambda: NOW / 1e6)
    assert isinstance(store, RedisStore)
    w = make_window(algo, Rate(100, 60 * US))
    client = redis.Redis.from_url(private_redis.url)
    try:
        store.hit1("a", w, 1)
        client.config_resetstat()
        fast = store.hit1("a", w, 1)
        calls = _calls(client)
        assert calls.get("get") == 1 and calls.get("set") == 1 and "mget" not in calls
        store.hit1("b", w, 1)
        general = Codec.parse(
            store._eval(
                *Codec.merge([store.codec.pack("hit", [("b", w, 1)]), store.codec.pack("peek", [("z", w, 1)])])
            ),
            2,
        )[0]
        assert general == fast
        ka, kb = store.codec.state_key("a", w), store.codec.state_key("b", w)
        assert client.get(ka) == client.get(kb)
        assert abs(client.pttl(ka) - client.pttl(kb)) < 1_000
    finally:
        client.close()
        store.close()


def test_tasks_that_hit_again_at_once_share_one_script_call_per_round(private_redis: RedisServer) -> None:
    """50 tasks, each hitting 10 times in a row: each round's 50 requests go out as ONE merged
    script call (before: every other call carried a lone request, the first task woken)."""
    import asyncio

    w = make_window("gcra", Rate(10**6, 60 * US))
    client = redis.Redis.from_url(private_redis.url)

    async def main() -> None:
        store = open_redis(private_redis.url, breaker=0)
        assert isinstance(store, RedisStore)
        await store.ahit1("k", w, 1)  # connect and load the script
        client.config_resetstat()

        async def task() -> None:
            for _ in range(10):
                assert (await store.ahit1("k", w, 1))[0]

        await asyncio.gather(*(task() for _ in range(50)))
        await store.aclose()

    try:
        asyncio.run(main())
        calls = _calls(client)
        assert calls.get("evalsha", 0) <= 12  # 10 rounds (+ the first lone call); before: 20
        assert calls.get("set", 0) == calls["evalsha"]  # one SET per call, whatever it carries
    finally:
        client.close()
