"""Exact admission on Redis (docs/design.md#invariants: never more than the limit, under any
concurrency): 1,000 attempts at a limit of 100 under 8 threads, 4 processes and 200 asyncio tasks
admit exactly 100, for every strict algorithm, on the shared test Redis and on a real local
3-master Cluster.

gcra and token-bucket refill continuously, so they race at "100/day" (a unit refills every
864 s, far longer than the race); no window's edge can fall inside a run (see STRICT).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

import rw_redis
from ratewarden import AsyncLimiter, Limiter

from . import redis_cluster

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.redis
cluster_url = redis_cluster.cluster_url

URL = rw_redis.URL
# Redis TIME is the clock here, so the windows are long enough that no run straddles one: a
# fixed window of 10 years (epoch-aligned: edges on 2019-12-20 and 2029-12-17), an hour for the log
# and the leases, a day for the refilling algorithms (one unit back per 14 minutes). Only the
# quota's calendar day has an edge a run could cross (midnight UTC), and the test is seconds long.
STRICT = {
    "fixed-window": "100 per 3650 days",
    "sliding-log": "100/hour",
    "gcra": "100/day",
    "token-bucket": "100/day",
    "concurrency": "100/hour",
    "quota": "100/day",
}
ATTEMPTS = 1000


@pytest.fixture(params=["standalone", "cluster"])
def target(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(url, key prefix of this test); every key under the prefix is deleted afterwards."""
    url = URL if request.param == "standalone" else request.getfixturevalue("cluster_url")
    prefix = f"rwexact:{uuid.uuid4().hex[:10]}:"
    yield url, prefix
    rw_redis.delete_prefix(prefix, url)


def _race_threads(url: str, prefix: str, algorithm: str, rate: str, threads: int = 8) -> int:
    lim = Limiter(url, key_prefix=prefix, algorithm=algorithm, on_store_error="deny", timeout=5.0)
    barrier = threading.Barrier(threads)
    admitted = [0] * threads

    def run(i: int) -> None:
        barrier.wait()
        for _ in range(ATTEMPTS // threads):
            admitted[i] += lim.hit("shared", rate).allowed

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert lim.store_errors == 0
    lim.close()
    return sum(admitted)


@pytest.mark.parametrize("algorithm", sorted(STRICT))
def test_threads_admit_exactly_the_limit(target: tuple[str, str], algorithm: str) -> None:
    url, prefix = target
    assert _race_threads(url, prefix, algorithm, STRICT[algorithm]) == 100


@pytest.mark.parametrize("algorithm", sorted(STRICT))
async def test_asyncio_tasks_admit_exactly_the_limit(target: tuple[str, str], algorithm: str) -> None:
    url, prefix = target
    lim = AsyncLimiter(url, key_prefix=prefix, algorithm=algorithm, on_store_error="deny", timeout=5.0)
    rate = STRICT[algorithm]

    async def task() -> int:
        return sum([(await lim.hit("shared", rate)).allowed for _ in range(ATTEMPTS // 200)])

    try:
        assert sum(await asyncio.gather(*(task() for _ in range(200)))) == 100
        assert lim.store_errors == 0
    finally:
        await lim.aclose()


WORKER = """
import sys, time
from ratewarden import Limiter
url, prefix, start, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
plan = [a.split("=", 1) for a in sys.argv[5:]]
lim = Limiter(url, key_prefix=prefix, on_store_error="deny", timeout=5.0)
out = []
for i, (algorithm, rate) in enumerate(plan):
    while time.time() < start + i * 1.0:
        time.sleep(0.005)
    out.append(sum(lim.hit("shared", rate, algorithm=algorithm).allowed for _ in range(n)))
assert lim.store_errors == 0
print(" ".join(map(str, out)))
"""


@pytest.mark.slow
def test_processes_admit_exactly_the_limit(target: tuple[str, str]) -> None:
    """4 processes, each its own Limiter and connections (like 4 app servers), one algorithm
    after another in lockstep (each algorithm starts at the same instant in every process)."""
    url, prefix = target
    algorithms = sorted(STRICT)
    start = time.time() + 3.0
    args = [url, prefix, str(start), str(ATTEMPTS // 4), *(f"{a}={STRICT[a]}" for a in algorithms)]
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    totals = [0] * len(algorithms)
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        for i, n in enumerate(out.split()):
            totals[i] += int(n)
    assert dict(zip(algorithms, totals, strict=True)) == dict.fromkeys(algorithms, 100)
