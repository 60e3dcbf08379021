"""The Redis store on the real Redis (the shared test Redis, rw_redis.URL) and on private servers of its own:
one round trip per decision (INFO commandstats), server time, TTLs, key hygiene, NOSCRIPT,
URL options. Exactness under concurrency is in test_redis_exact.py, failures in
test_redis_failure.py, the Cluster in test_redis_cluster.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest

import rw_redis
from ratewarden import ALGORITHMS, AsyncLimiter, ConfigError, FakeClock, Limiter, StoreError
from ratewarden.core.algorithms import make_window
from ratewarden.core.rates import US, Rate, RateParseError
from ratewarden.storage import open_store
from ratewarden.storage.redis import SCRIPT, SHA, RedisStore, open_redis
from ratewarden.storage.redis._lua import CODES, FILES

from . import redis_cluster
from .redis_cluster import RedisServer

private_redis = redis_cluster.private_redis

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.redis

URL = rw_redis.URL
RATE = {a: "5/day" if a == "quota" else "5/minute" for a in ALGORITHMS}


@pytest.fixture
def prefix() -> Iterator[str]:
    p = f"rwtest:{uuid.uuid4().hex[:10]}:"
    yield p
    rw_redis.delete_prefix(p)


@pytest.fixture
def client() -> Iterator[Any]:
    c = redis.Redis.from_url(URL)
    yield c
    c.close()


# -- the script is package data, one file per algorithm ---------------------------------------------


def test_one_lua_file_per_algorithm_composed_into_one_script() -> None:
    lua = resources.files("ratewarden.storage").joinpath("lua")
    for name in ALGORITHMS:
        text = lua.joinpath(name.replace("-", "_") + ".lua").read_text()
        assert f"A[{CODES[name]}] = {{" in text
        assert text in SCRIPT
    assert len(FILES) == len(ALGORITHMS) + 2  # + prelude and dispatch
    assert len(SHA) == 40


# -- one round trip per decision ------------------------------------------------------------------


def command_counts(c: Any) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in c.info("commandstats").items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    d["info"] -= 1  # the INFO that read `after`
    return {k: v for k, v in d.items() if v}


def test_one_evalsha_per_decision_however_many_windows_and_keys(private_redis: RedisServer) -> None:
    lim = Limiter(private_redis.url, algorithm="sliding-log")
    store = lim.store
    assert isinstance(store, RedisStore)
    c = redis.Redis.from_url(private_redis.url)
    try:
        lim.hit("warm", "5/minute")  # connects (CLIENT SETINFO...) and loads the script (NOSCRIPT -> EVAL)
        w = [make_window("fixed-window", Rate(10, 60 * US)), make_window("gcra", Rate(50, 3600 * US))]
        n = 20
        before = command_counts(c)
        for i in range(n):
            assert lim.hit("alice", "5/10 minutes;20/hour;100/day").allowed == (i < 5)
            store.apply("hit", [("alice", w[0], 1), ("bob", w[1], 2), ("carol", w[0], 1)])
        d = delta(before, command_counts(c))
        assert d.pop("evalsha") == 2 * n  # one per decision, 3 windows or 3 keys
        # Everything else ran inside the scripts: one TIME and one MGET per call.
        assert d.pop("time") == 2 * n
        assert d.pop("mget") == 2 * n
        # ... and the sliding logs' sorted sets (read the oldest entry, append, expire, search)
        assert set(d) <= {
            "set",
            "del",
            "unlink",
            "zrange",
            "zadd",
            "pexpire",
            "zrangebyscore",
            "zremrangebyrank",
            "zcard",
        }
        assert d["set"] == 3 * 5 + 3 * 10  # admitted calls write each window; denials write nothing
    finally:
        c.close()
        lim.close()


async def test_async_concurrent_decisions_share_round_trips(private_redis: RedisServer) -> None:
    """100 concurrent decisions: at most one EVALSHA each, and in practice far fewer (the calls
    queued behind a round trip are merged into one script call); still exact."""
    lim = AsyncLimiter(private_redis.url, algorithm="gcra")
    c = redis.Redis.from_url(private_redis.url)
    try:
        await lim.hit("warm", "5/minute")
        before = command_counts(c)
        ds = await asyncio.gather(*(lim.hit(f"k{i % 10}", "3/minute;10/hour") for i in range(100)))
        assert sum(d.allowed for d in ds) == 30
        d = delta(before, command_counts(c))
        calls = d.pop("evalsha")
        assert 1 <= calls < 100
        assert d.pop("time") == calls  # one TIME and one MGET per script call
        assert d.pop("mget") == calls
        assert set(d) <= {"set"}
    finally:
        c.close()
        await lim.aclose()


def test_noscript_is_answered_by_reloading(private_redis: RedisServer) -> None:
    lim = Limiter(private_redis.url)
    c = redis.Redis.from_url(private_redis.url)
    try:
        assert lim.hit("k", "3/minute").allowed
        c.script_flush()
        assert c.script_exists(SHA) == [False]
        assert lim.hit("k", "3/minute").allowed
        assert c.script_exists(SHA) == [True]
        before = command_counts(c)
        assert lim.hit("k", "3/minute").allowed
        assert not lim.hit("k", "3/minute").allowed
        assert delta(before, command_counts(c))["evalsha"] == 2
        assert lim.store_errors == 0
    finally:
        c.close()
        lim.close()


async def test_async_noscript_is_answered_by_reloading(private_redis: RedisServer) -> None:
    lim = AsyncLimiter(private_redis.url)
    c = redis.Redis.from_url(private_redis.url)
    try:
        assert (await lim.hit("k", "30/minute")).allowed
        c.script_flush()
        ds = await asyncio.gather(*(lim.hit("k", "30/minute") for _ in range(40)))
        assert sum(d.allowed for d in ds) == 29
        assert lim.store_errors == 0
    finally:
        c.close()
        await lim.aclose()


# -- server time ------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_skewed_client_clocks_share_one_exact_limit(client: Any, prefix: str, algorithm: str) -> None:
    """Two servers whose clocks differ by 10 minutes (and, for the quota's calendar bounds, by an
    hour) still share the limit exactly: the scripts read Redis TIME."""
    a_clock = FakeClock(time.time() - 600)
    # Redis TIME decides: a fixed window of 10 years (next edge 2029-12-17) cannot straddle the test
    rate = {"quota": "5/day", "fixed-window": "5 per 3650 days"}.get(algorithm, "5/hour")
    a = Limiter(URL, clock=a_clock, key_prefix=prefix, algorithm=algorithm)
    b = Limiter(open_redis(URL, key_prefix=prefix, clock=lambda: time.time() + 3600), algorithm=algorithm)
    try:
        admitted = 0
        for i in range(12):
            d = (a if i % 2 else b).hit("user", rate)
            admitted += d.allowed
            a_clock.advance(30)
        assert admitted == 5
        assert a.store_errors == b.store_errors == 0
    finally:
        a.close()
        b.close()


def test_the_test_hook_is_off_unless_asked(prefix: str) -> None:
    """Production stores send no time: the script reads TIME (a far-future fake clock changes nothing)."""
    clock = FakeClock(4_000_000_000.0)
    store = open_store(URL, clock=clock, key_prefix=prefix)
    assert isinstance(store, RedisStore)
    assert store.codec.now_us is None
    _, args = store.codec.pack("hit", [("k", make_window("gcra", Rate(5, 60 * US)), 1)])
    assert args[0] == ""  # no time: Redis TIME
    assert args[1] == 0  # no TTL slack
    tat = store.hit1("k", make_window("gcra", Rate(5, 60 * US)), 1)
    assert 0 < tat[2] <= 12 * US
    store.close()


def test_quota_refuses_a_server_time_outside_the_bounds_the_client_sent(client: Any, prefix: str) -> None:
    """A client clock off by more than a whole period: the script errs (StoreError), never guesses."""
    store = open_redis(URL, key_prefix=prefix, clock=lambda: time.time() - 3 * 86400)
    w = make_window("quota", Rate(5, 86400 * US))
    with pytest.raises(StoreError, match="clock skew"):
        store.hit1("k", w, 1)
    lim = Limiter(store, on_store_error="deny")
    assert not lim.hit("k", "5/day", algorithm="quota").allowed
    store.close()


# -- TTLs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "op"),
    [
        (a, op)
        for a in sorted(ALGORITHMS)
        for op in ("hit", "charge", "acquire")
        if (a, op) != ("concurrency", "charge")
    ],
)
def test_every_key_written_has_a_ttl_no_longer_than_its_window_needs(
    client: Any, prefix: str, algorithm: str, op: str
) -> None:
    store = open_redis(URL, key_prefix=prefix)
    rates = [Rate(5, 86400 * US), Rate(20, 30 * 86400 * US)] if algorithm == "quota" else [Rate(5, 60 * US)]
    rates += [] if algorithm == "quota" else [Rate(20, 3600 * US)]
    wins = [
        make_window(algorithm, r, tz="Asia/Kolkata") if algorithm == "quota" else make_window(algorithm, r)
        for r in rates
    ]
    try:
        for _ in range(3):
            outs = store.apply(op, [("k", w, 2) for w in wins], "lease1" if op == "acquire" else "")
            for w, o in zip(wins, outs, strict=True):
                ttl = client.pttl(store.codec.state_key("k", w))
                # PX is relative to Redis's command-time snapshot (ms), not TIME (us): 2 ms of slack;
                # a denial writes nothing, so its reset is measured later than the write.
                assert 0 < ttl <= -(-o[2] // 1000) + 2 + (0 if o[0] else 1), (w, o, ttl)
                bound = 2 * w.period if algorithm == "sliding-window" else w.period
                if algorithm == "quota":
                    bound = 31 * 86400 * US
                assert op == "charge" or ttl * 1000 <= bound  # charges past the limit need longer
        if algorithm == "concurrency" and op == "acquire":  # releasing the last lease deletes the key
            store.apply("release", [("k", w, 0) for w in wins], "lease1")
            assert all(client.exists(store.codec.state_key("k", w)) == 0 for w in wins)
    finally:
        store.close()


# -- keys -------------------------------------------------------------------------------------------


def test_keys_carry_the_prefix_and_a_hash_tag(client: Any, prefix: str) -> None:
    lim = Limiter(URL, key_prefix=prefix)
    try:
        lim.hit("user:42", "5/minute;20/hour")
        keys = sorted(k.decode() for k in client.scan_iter(match=prefix + "*"))
        assert keys == [f"{prefix}{{user:42}}:gcra:20:3600000000", f"{prefix}{{user:42}}:gcra:5:60000000"]
    finally:
        lim.close()


def test_long_keys_are_hashed_with_the_prefix_kept(client: Any, prefix: str) -> None:
    lim = Limiter(URL, key_prefix=prefix)
    long_a = "x" * 500 + "a"
    long_b = "x" * 500 + "b"
    try:
        assert lim.hit(long_a, "1/minute").allowed
        assert not lim.hit(long_a, "1/minute").allowed  # stable hash: the same state
        assert lim.hit(long_b, "1/minute").allowed  # a different long key: its own state
        keys = [k.decode() for k in client.scan_iter(match=prefix + "*")]
        assert len(keys) == 2
        assert all(k.startswith(prefix + "{#") and len(k) < 100 for k in keys)
        lim.reset(long_a)
        assert lim.hit(long_a, "1/minute").allowed
        assert not lim.hit(long_b, "1/minute").allowed
    finally:
        lim.close()


@pytest.mark.parametrize("key", ["a", "a*", "[ab]", "a?b", "br{a}ce", "}x", "", "ünï\\code"])
def test_reset_forgets_every_window_of_the_key_and_nothing_else(prefix: str, key: str) -> None:
    lim = Limiter(URL, key_prefix=prefix)
    others = ["ab", "a*b", "b", "abc", "x"]
    try:
        assert lim.hit(key, "1/minute;5/hour").allowed
        assert lim.hit(key, "1/day", algorithm="quota").allowed
        for o in others:
            assert lim.hit(o, "1/minute").allowed
        lim.reset(key)
        assert lim.hit(key, "1/minute;5/hour").allowed
        assert lim.hit(key, "1/day", algorithm="quota").allowed
        for o in others:
            if o != key:
                assert not lim.hit(o, "1/minute").allowed, o
    finally:
        lim.close()


async def test_async_reset(prefix: str) -> None:
    lim = AsyncLimiter(URL, key_prefix=prefix)
    try:
        assert (await lim.hit("k", "1/minute;3/hour")).allowed
        assert (await lim.hit("j", "1/minute")).allowed
        await lim.reset("k", "1/minute")
        d = await lim.hit("k", "1/minute;3/hour")
        assert d.allowed and d.remaining == 0
        await lim.reset("k")
        assert (await lim.hit("k", "3/hour")).remaining == 2
        assert not (await lim.hit("j", "1/minute")).allowed
    finally:
        await lim.aclose()


# -- options ----------------------------------------------------------------------------------------


def test_url_options_and_their_errors() -> None:
    store = open_redis("redis://:secret@127.0.0.1:6379/12?timeout=0.2&breaker=0&key_prefix=app:&max_key_length=64")
    assert store.timeout == 0.2
    assert store.codec.prefix == "app:"
    assert store.codec.max_key_length == 64
    assert "secret" not in store.url and "secret" not in repr(store)
    store.close()
    assert open_redis(URL, key_prefix="x:").codec.prefix == "x:"
    bad_urls = ("redis://h/0?timeout=abc", "redis://h/0?timeout=0", "redis://h/0?breaker=-1", "redis+sentinel://h:1")
    for bad in (*bad_urls, "redis://h:notaport/0", "redis://h/0?socket_timeout=x"):
        with pytest.raises(ConfigError):
            open_redis(bad)
    with pytest.raises(ConfigError, match="unknown Redis store option"):
        open_redis(URL, colour="blue")
    with pytest.raises(ConfigError, match="lease id"):
        open_redis(URL).apply("acquire", [("k", make_window("concurrency", Rate(1, US)), 1)], "two words")


def test_rates_beyond_double_arithmetic_are_decided(prefix: str) -> None:
    """Rates whose limit x period passes 2^53 (Lua doubles) were refused with ConfigError; the
    scripts now compute those products exactly, so Redis takes every rate memory takes."""
    lim = Limiter(URL, key_prefix=prefix)
    ref = Limiter("memory://")
    try:
        for algorithm, rate in [
            ("token-bucket", "1000000/day"),
            ("sliding-window", "1000000000/minute"),
            ("sliding-window", "100000000/month"),
            ("token-bucket", "100000000/month"),
            ("gcra", "1000000/day"),
            ("fixed-window", "100000000/month"),
            ("quota", "3000000/day"),
        ]:
            d = lim.hit(f"k-{algorithm}", rate, algorithm=algorithm, cost=5)
            assert d.allowed and d.remaining == ref.hit(f"k-{algorithm}", rate, algorithm=algorithm, cost=5).remaining
        assert lim.store_errors == 0
    finally:
        lim.close()
        ref.close()


@pytest.mark.parametrize("algorithm", ["fixed-window", "sliding-log", "concurrency", "sliding-window", "gcra"])
def test_a_period_beyond_exact_arithmetic_is_refused_never_failed_open(prefix: str, algorithm: str) -> None:
    """ "2/100000000000 years" made every call fail inside the script (an expiry Redis refuses),
    so with on_store_error="allow" every request passed. It is now a ConfigError when the rate
    is compiled, naming the rate, and nothing is admitted."""
    lim = Limiter(URL, key_prefix=prefix, algorithm=algorithm)
    try:
        with pytest.raises((ConfigError, RateParseError), match=r"10 years|beyond what ratewarden decides exactly"):
            lim.hit("k", "2/100000000000 years")
        assert lim.store_errors == 0
    finally:
        lim.close()


def test_check_window_refuses_inexact_windows_up_front_without_io() -> None:
    """The store's own bounds, checked when a rate is compiled: on a store whose server does not
    exist, so the check does no I/O; every rate up to 10^12 per 10 years passes."""
    store = open_redis(f"redis://127.0.0.1:{redis_cluster.free_port()}/0", breaker=0)
    year = 365 * 86_400 * US
    try:
        with pytest.raises(RateParseError, match="10 years"):  # past the promised sizes: no store sees it
            Rate(2, 10**11 * year)
        with pytest.raises(RateParseError):
            Rate(10**16, US)
        for algorithm in sorted(ALGORITHMS):
            if algorithm == "quota":
                continue
            for rate in (Rate(10**12, 10 * year), Rate(1, 10 * year), Rate(10**9, US)):
                store.check_window(make_window(algorithm, rate))
        with pytest.raises(ConfigError, match="burst"):  # gcra: burst x emission interval
            store.check_window(make_window("gcra", Rate(1, 10 * year), burst=10**6))
        store.check_window(make_window("token-bucket", Rate(1, 10 * year), burst=10**6))  # any burst
        with pytest.raises((ConfigError, RateParseError), match="10 years"):  # the Limiter compiles rates
            Limiter(store).windows("2/100000000000 years", algorithm="sliding-window")
    finally:
        store.close()


@pytest.mark.parametrize("op", ["hit", "peek", "charge", "acquire", "release"])
async def test_an_operation_over_no_items_is_empty_without_io(op: str) -> None:
    """apply(op, []) is [] like the memory store's, without calling Redis: the server does not
    exist here, so any call would raise StoreError (checked last)."""
    store = open_redis(f"redis://127.0.0.1:{redis_cluster.free_port()}/0", breaker=0, timeout=0.2)
    try:
        assert store.apply(op, []) == []
        assert await store.aapply(op, []) == []
        with pytest.raises(ValueError, match="unknown operation"):
            store.apply("poke", [])  # type: ignore[arg-type]
        with pytest.raises(StoreError):
            store.apply(op, [("k", make_window("gcra", Rate(5, 60 * US)), 1)])
    finally:
        await store.aclose()


def test_the_same_store_serves_sync_and_async(prefix: str) -> None:
    store = open_redis(URL, key_prefix=prefix)
    sync = Limiter(store)
    asyn = AsyncLimiter(store)

    async def main() -> list[bool]:
        try:
            return [(await asyn.hit("k", "4/minute")).allowed for _ in range(2)]
        finally:
            await asyn.aclose()

    try:
        assert [sync.hit("k", "4/minute").allowed for _ in range(2)] == [True, True]
        assert asyncio.run(main()) == [True, True]
        assert not sync.hit("k", "4/minute").allowed
    finally:
        sync.close()


def test_unix_socket_url(tmp_path: Any) -> None:
    sock = tmp_path / "r.sock"
    server = redis_cluster.RedisServer(
        redis_cluster.free_port(), tmp_path / "unix", "--unixsocket", str(sock), "--unixsocketperm", "700"
    ).start()
    try:
        lim = Limiter(f"unix://{sock}?db=3")
        assert [lim.hit("k", "2/minute").allowed for _ in range(3)] == [True, True, False]
        assert lim.store_errors == 0
        c = redis.Redis(unix_socket_path=str(sock), db=3)
        assert c.dbsize() == 1
        c.close()
        lim.close()
    finally:
        server.stop()
