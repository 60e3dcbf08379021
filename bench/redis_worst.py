"""bench/redis_worst.py - the longest script calls, measured by Redis itself (SLOWLOG), on a private
redis-server (never the shared one): how long one EVALSHA of ratewarden's script runs in the
worst states this project knows of.

    .venv/bin/python bench/redis_worst.py

Each case prepares its state (with the store's test hook for time, so a log can be filled and
made to leave its window at once), clears the slow log, runs the measured calls, and reports the
slow log's durations (microseconds of Redis CPU per call, not the round trip): median and max.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import redis  # noqa: E402
from run import PrivateRedis  # noqa: E402

from ratewarden import FakeClock  # noqa: E402
from ratewarden.core.algorithms import make_window  # noqa: E402
from ratewarden.core.rates import US, Rate  # noqa: E402
from ratewarden.storage.redis import Codec, RedisStore, open_redis  # noqa: E402
from ratewarden.storage.redis._batch import MERGE, MERGE_KEYS  # noqa: E402

START = 1_767_225_600 * US


def measured(r: Any, run: Callable[[], None]) -> list[int]:
    r.slowlog_reset()
    run()
    return [e["duration"] for e in r.slowlog_get(100_000) if e["command"].split()[0].upper() in (b"EVALSHA", b"EVAL")]


def calls_of(r: Any, run: Callable[[], None], kinds: dict[str, bytes]) -> dict[str, list[int]]:
    """:func:`measured` of one run, its calls split by what their arguments hold."""
    r.slowlog_reset()
    run()
    log = [e for e in r.slowlog_get(100_000) if e["command"].split()[0].upper() in (b"EVALSHA", b"EVAL")]
    return {name: [e["duration"] for e in log if kind in e["command"]] for name, kind in kinds.items()}


def fill(r: Any, key: str, leases: list[tuple[int, str, int]]) -> None:
    """Write a concurrency state in the earlier string form (``"expires lease cost ..."``, read
    and rewritten by the script's next call): fast to build, the same sorted set afterwards."""
    r.set(key, " ".join(f"{e} {id} {c}" for e, id, c in leases), px=7_200_000)


def main() -> None:
    srv = PrivateRedis()
    r = redis.Redis.from_url(srv.url)
    r.config_set("slowlog-max-len", 1_000_000)  # the commands a script runs are logged too
    rows: list[tuple[str, list[int]]] = []
    try:
        clock = FakeClock(START / US)
        store = open_redis(srv.url, key_prefix="worst:", _test_now=clock, timeout=30.0)
        assert isinstance(store, RedisStore)
        gcra = make_window("gcra", Rate(10**6, 60 * US))
        rows.append(("gcra, one hit", measured(r, lambda: [store.hit1("g", gcra, 1) for _ in range(200)])))

        for n in (200, 2_000, 20_000):
            log = make_window("sliding-log", Rate(10**6, 3600 * US))
            key = f"log{n}"
            for i in range(n):
                clock.set((START + i) / US)
                store.hit1(key, log, 1)
            now = START + n

            def hits(now: int = now, key: str = key, log: Any = log) -> None:
                for j in range(200):
                    clock.set((now + j) / US)
                    store.hit1(key, log, 1)

            rows.append((f"sliding-log, {n:,} entries, admitted hit", measured(r, hits)))
            full = make_window("sliding-log", Rate(n, 3600 * US))  # the same entries, now at the limit

            def denied(now: int = now, key: str = key, full: Any = full) -> None:
                for j in range(200):
                    clock.set((now + 300 + j) / US)
                    store.apply("hit", [(key, full, 1)])

            # a window of its own (another id): fill it too
            for i in range(n):
                clock.set((START + i) / US)
                store.hit1(key, full, 1)
            rows.append((f"sliding-log, {n:,} entries, denied (retry_after search)", measured(r, denied)))

            def expired_prefix(key: str = key, full: Any = full, n: int = n) -> None:
                # half the log has left the window: every denial binary-searches for its start
                for j in range(100):
                    clock.set((START + 3600 * US + n // 2 + j) / US)
                    store.apply("peek", [(key, full, 1)])

            rows.append((f"sliding-log, {n:,} entries, half expired (binary search)", measured(r, expired_prefix)))

        # 20,000 entries leave the window together, 10 stay: the admissions trim 1,000 per call
        tl = make_window("sliding-log", Rate(10**6, 10 * US))
        for i in range(20_000):
            clock.set((START + i) / US)
            store.hit1("trim", tl, 1)
        for i in range(10):
            clock.set((START + 20_000 + 1_000 * (i + 1)) / US)
            store.hit1("trim", tl, 1)

        def trims() -> None:
            for j in range(30):
                clock.set((START + 10 * US + 20_001 + j) / US)
                store.hit1("trim", tl, 1)

        rows.append(("sliding-log, 20,000 entries leave at once (30 hits)", measured(r, trims)))

        big_tb = make_window("token-bucket", Rate(10**12, 10 * 365 * 86_400 * US))
        big_sw = make_window("sliding-window", Rate(10**12, 10 * 365 * 86_400 * US))
        rows.append(
            (
                "token-bucket 10^12 per 10 years (exact products)",
                measured(r, lambda: [store.hit1("tb", big_tb, 3) for _ in range(200)]),
            )
        )
        rows.append(
            (
                "sliding-window 10^12 per 10 years (exact products)",
                measured(r, lambda: [store.hit1("sw", big_sw, 3) for _ in range(200)]),
            )
        )

        # concurrency: n leases held (acquired one by one; then 50 acquires, 50 denied acquires
        # at the limit, 50 releases, and n leases expiring at once but one)
        for n in (200, 2_000, 20_000):
            conc = make_window("concurrency", Rate(n + 50, 3600 * US))
            ck = f"c{n}"
            for i in range(n):
                clock.set((START + i) / US)
                store.apply("acquire", [(ck, conc, 1)], f"l{i}")
            clock.set((START + n) / US)

            def acquire(ck: str = ck, conc: Any = conc) -> None:
                for i in range(50):
                    store.apply("acquire", [(ck, conc, 1)], f"m{i}")

            def denied(ck: str = ck, conc: Any = conc) -> None:
                for i in range(50):
                    store.apply("acquire", [(ck, conc, 1)], f"d{i}")

            def release(ck: str = ck, conc: Any = conc) -> None:
                for i in range(50):
                    store.apply("release", [(ck, conc, 0)], f"m{i}")

            rows.append((f"concurrency, {n:,} leases held, acquire", measured(r, acquire)))
            rows.append((f"concurrency, {n:,} leases held, denied acquire (retry_after)", measured(r, denied)))
            rows.append((f"concurrency, {n:,} leases held, release", measured(r, release)))
            clock.set((START + n + 100) / US)
            store.apply("acquire", [(ck, conc, 1)], "late")

            def expire(ck: str = ck, conc: Any = conc, n: int = n) -> None:
                clock.set((START + 3600 * US + n) / US)  # all but "late" have expired
                store.apply("acquire", [(ck, conc, 1)], "after")

            rows.append((f"concurrency, {n:,} leases expire at once, the next acquire", measured(r, expire)))

        # concurrency with mixed costs (1, 2, 3, 7): denials whose retry_after needs the binary
        # search over ranks (the excess is more than the first 32 live leases free)
        # (and costs spread over 1 .. 2^20: 20 bit sets, every probe 21 ZCOUNTs)
        for n, costs, label in [
            (2_000, (1, 2, 3, 7), "costs 1-7"),
            (20_000, (1, 2, 3, 7), "costs 1-7"),
            (20_000, tuple(1 + (7919 * i) % (1 << 20) for i in range(97)), "costs 1 to 2^20"),
        ]:
            total = sum(costs[i % len(costs)] for i in range(n))
            mixed = make_window("concurrency", Rate(total + 1, 3600 * US))
            ck = f"cm{n}-{len(costs)}"
            fill(
                r,
                store.codec.state_key(ck, mixed),
                [(START + 3600 * US + i, f"l{i}", costs[i % len(costs)]) for i in range(n)],
            )
            clock.set((START + n) / US)

            def denied_mixed(ck: str = ck, w: Any = mixed, total: int = total) -> None:
                for i in range(50):  # frees all but one unit: the search goes through most of the set
                    store.apply("acquire", [(ck, w, total - i)], f"d{i}")

            store.apply("peek", [(ck, mixed, 1)])  # the one-off rewrite of the string form
            rows.append(
                (f"concurrency, {n:,} leases of {label}, denied acquire (binary search)", measured(r, denied_mixed))
            )

        # the clock steps back more than the lease TTL while 20,000 dropped leases wait to be
        # removed: the one unbounded write (it removes those expiring after the new now)
        sb = make_window("concurrency", Rate(100, 60 * US))
        fill(
            r,
            store.codec.state_key("sb", sb),
            [*[(START + 100 * US, f"s{i}", 1) for i in range(20_000)], (START + 500 * US, "late", 1)],
        )
        clock.set((START + 1) / US)
        store.apply("peek", [("sb", sb, 1)])
        clock.set((START + 200 * US) / US)
        store.apply("acquire", [("sb", sb, 1)], "drops")  # drops the 20,000 (removes 50)

        def stepped_back() -> None:
            clock.set((START + 30 * US) / US)  # 170 s back: the new lease expires before the cut
            store.apply("acquire", [("sb", sb, 1)], "back")

        rows.append(
            ("concurrency, clock back 170 s (> TTL) mid-backlog of 20,000 (unbounded, rare)", measured(r, stepped_back))
        )

        # dead holders: n named leases expire together (their holders died), one stays; the next
        # 30 writes remove them CC_TRIM at a time, the peeks between them skip them
        for costs in ((1,), (1, 2, 3, 7)):
            for n in (200, 20_000):
                dw = make_window("concurrency", Rate(100, 60 * US))
                ck = f"dead{n}-{len(costs)}"
                held = [(START + 10 * US, f"d{i}", costs[i % len(costs)]) for i in range(n)]
                fill(r, store.codec.state_key(ck, dw), [*held, (START + 50 * US, "late", 2)])
                clock.set((START + 1) / US)
                store.apply("peek", [(ck, dw, 1)])  # the one-off rewrite of the string form

                def after(ck: str = ck, w: Any = dw) -> None:
                    for i in range(30):
                        clock.set((START + 20 * US + i) / US)
                        store.apply("acquire", [(ck, w, 1)], f"a{i}")
                        store.apply("peek", [(ck, w, 1)])
                        store.apply("acquire", [(ck, w, 99)], "no")  # denied
                        store.apply("release", [(ck, w, 0)], f"a{i}")

                label = "unit" if len(costs) == 1 else "costs 1-7"
                kinds = {
                    "acquire": b"acquire a",
                    "peek": b"peek",
                    "denied acquire": b"acquire no",
                    "release": b"release",
                }
                for what, ds in calls_of(r, after, kinds).items():
                    rows.append((f"concurrency, {n:,} dead holders ({label}), then 30 x {what}", ds))

        quota = make_window("quota", Rate(10**9, 86_400 * US))
        rows.append(("quota, one hit", measured(r, lambda: [store.hit1("q", quota, 1) for _ in range(200)])))

        ws = [make_window("gcra", Rate(1000, i * US)) for i in range(1, 71)]
        # the widest merges the MERGE_KEYS cap sends, 20 calls each (their median is the figure)
        for calls, width in ((MERGE_KEYS // 70, 70), (min(MERGE, MERGE_KEYS // 2), 2)):
            wide = ws[:width]

            def merged20(calls: int = calls, wide: list[Any] = wide) -> None:
                for j in range(20):
                    packed = [store.codec.pack("hit", [(f"w{j}-{i}", w, 1) for w in wide]) for i in range(calls)]
                    keys, args = Codec.merge(packed)
                    store._eval(keys, args)

            rows.append(
                (
                    f"merged batch: {calls} calls x {width} windows ({calls * width} keys), 20 calls",
                    measured(r, merged20),
                )
            )
        for calls in (8, 32, 128):  # above the cap: built here with Codec.merge alone

            def merged(calls: int = calls) -> None:
                packed = [store.codec.pack("hit", [(f"m{i}", w, 1) for w in ws]) for i in range(calls)]
                keys, args = Codec.merge(packed)
                store._eval(keys, args)

            rows.append(
                (f"merged batch: {calls} calls x 70 windows ({calls * 70:,} keys, above the cap)", measured(r, merged))
            )
        for calls in (32, 128):

            def merged1(calls: int = calls) -> None:
                packed = [store.codec.pack("hit", [(f"n{i}", gcra, 1)]) for i in range(calls)]
                keys, args = Codec.merge(packed)
                store._eval(keys, args)

            rows.append((f"merged batch: {calls} calls x 1 window", measured(r, merged1)))
        store.close()
    finally:
        r.close()
        srv.close()
    print(f"redis_worst.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.2f}")
    print()
    print("| case | calls | median us | max us |")
    print("|---|---|---|---|")
    for name, ds in rows:
        if ds:
            print(f"| {name} | {len(ds)} | {statistics.median(ds):,.0f} | {max(ds):,} |")
        else:
            print(f"| {name} | 0 | - | - |")


if __name__ == "__main__":
    main()
