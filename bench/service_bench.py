"""The decision service under load: decisions/s and p50/p99 latency of ``POST /v1/check`` (HTTP
keep-alive, wrk with a Lua body) and of gRPC ``ShouldRateLimit`` (an asyncio grpc client in
separate processes), on the memory store (1 and 2 workers) and on Redis (a private
redis-server on a spare port, so its command counts are ours alone).

    apt-get install -y wrk redis-server
    .venv/bin/python bench/service_bench.py                # ~3 minutes; prints a Markdown table
    .venv/bin/python bench/service_bench.py --quick        # shorter runs

Two kinds of HTTP run: *saturation* (wrk, 2 threads, 64 connections: the most decisions/s) and
*paced* (wrk's Lua ``delay()``: 50 connections each sending one request every 10 ms, so about
5,000 decisions/s when the service keeps up; latency is measured per request, without the
pause). Every request is a decision on a rule with a large limit (all admitted), keys spread
over 10,000 values. The load generator and the service share this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
POLICY = """
[ratewarden]
storage = "{storage}"
key_prefix = "rwbench:"

[[rule]]
name = "bench"
key = "ip"
limits = ["1000000000/hour"]
descriptor = {{ domain = "bench", entries = ["client"] }}
"""
LUA = """
math.randomseed(os.time())
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, "/v1/check", nil, '{"rule":"bench","key":"k' .. math.random(10000) .. '"}')
end
"""
PACED = LUA + "\ndelay = function() return 10 end\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the workers), in MiB."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total / 1024


def start_service(storage: str, workers: int, tmp: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    policy = tmp / f"bench-{workers}.toml"
    policy.write_text(POLICY.format(storage=storage))
    port, gport = free_port(), free_port()
    cmd = [sys.executable, "-m", "ratewarden.cli", "serve", "--policy", str(policy), "--port", str(port)]
    cmd += ["--grpc-port", str(gport), "--workers", str(workers), "--log-level", "warning"]
    if workers > 1 and storage.startswith("memory"):
        cmd.append("--split-memory")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the service did not start")
        time.sleep(0.1)
    time.sleep(1.0 if workers > 1 else 0.2)  # let every worker bind
    return proc, port, gport


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children (the workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:  # fields[1]: ppid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def measured(pid: int, run: Any, *args: Any) -> dict[str, Any]:
    """Run a load and add the service's CPU microseconds per decision (less dependent on the
    machine's other load than decisions/s)."""
    c0 = cpu_seconds(pid)
    r: dict[str, Any] = run(*args)
    r["cpu_us"] = (cpu_seconds(pid) - c0) * 1e6 / max(1, r.pop("done"))
    return r


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def wrk(port: int, seconds: int, connections: int, script: str, tmp: Path) -> dict[str, Any]:
    lua = tmp / "body.lua"
    lua.write_text(script)
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), f"http://127.0.0.1:{port}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"rate": rate, "p50_ms": p50, "p99_ms": p99, "non2xx": int(bad.group(1)) if bad else 0, "done": done}


GRPC_CLIENT = r"""
import asyncio, json, random, sys, time
import grpc
from ratewarden.service.proto import rls_pb2, rls_pb2_grpc

async def main(target, seconds, concurrency):
    lat = []
    async with grpc.aio.insecure_channel(target) as ch:
        stub = rls_pb2_grpc.RateLimitServiceStub(ch)
        end = time.perf_counter() + seconds
        async def worker():
            while time.perf_counter() < end:
                d = rls_pb2.RateLimitDescriptor(entries=[rls_pb2.RateLimitDescriptor.Entry(key="client", value=f"k{random.randrange(10000)}")])
                t = time.perf_counter()
                await stub.ShouldRateLimit(rls_pb2.RateLimitRequest(domain="bench", descriptors=[d]))
                lat.append(time.perf_counter() - t)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    print(json.dumps(lat))

asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
"""


def grpc_load(gport: int, seconds: int, procs: int, concurrency: int) -> dict[str, Any]:
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", GRPC_CLIENT, f"127.0.0.1:{gport}", str(seconds), str(concurrency)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(procs)
    ]
    lat: list[float] = []
    for c in clients:
        out, _ = c.communicate(timeout=seconds + 120)
        lat += json.loads(out)
    lat.sort()
    n = len(lat)
    return {
        "rate": n / seconds,
        "p50_ms": lat[n // 2] * 1000,
        "p99_ms": lat[int(n * 0.99)] * 1000,
        "non2xx": 0,
        "done": n,
    }


def redis_commands(port: int) -> dict[str, int]:
    cmd = ["redis-cli", "-p", str(port), "info", "commandstats"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_(\w+):calls=(\d+)", out)}


def inprocess(n: int = 20000) -> float:
    """CPU microseconds per ``POST /v1/check`` through the ASGI app alone (no server, no socket)."""
    from ratewarden.service import Service, create_app

    app = create_app(Service(POLICY.format(storage="memory://")))
    body = b'{"rule":"bench","key":"k123"}'
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/check",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def run(k: int) -> None:
        for _ in range(k):
            await app(scope, receive, send)

    import asyncio

    asyncio.run(run(2000))
    t = time.process_time()
    asyncio.run(run(n))
    return (time.process_time() - t) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 s runs instead of 10 s")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--inprocess", action="store_true", help="only the app's CPU per check, in this process")
    args = ap.parse_args(argv)
    if args.inprocess:
        print(f"{inprocess():.1f} us CPU per POST /v1/check in process (load average {os.getloadavg()[0]:.2f})")
        return 0
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install -y wrk", file=sys.stderr)
        return 2
    secs = 5 if args.quick else 10
    rows: list[dict[str, Any]] = []
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        redis_port = free_port()
        redis = None
        if shutil.which("redis-server"):
            redis = subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(0.5)
        setups = [("memory", 1, "memory://"), ("memory", 2, "memory://")]
        if redis is not None:
            setups += [("redis", 2, f"redis://127.0.0.1:{redis_port}/0?timeout=1")]
        try:
            for store, workers, url in setups:
                proc, port, gport = start_service(url, workers, tmp)
                try:
                    wrk(port, 2, 16, LUA, tmp)  # warm up
                    before = redis_commands(redis_port) if store == "redis" else {}
                    sat = measured(proc.pid, wrk, port, secs, 64, LUA, tmp)
                    after = redis_commands(redis_port) if store == "redis" else {}
                    paced = measured(proc.pid, wrk, port, secs, 50, PACED, tmp)
                    g = measured(proc.pid, grpc_load, gport, secs, 2, 32)
                    mem = rss_mb(proc.pid)
                finally:
                    stop(proc)
                calls = sum(after.values()) - sum(before.values())
                per = {k: (after.get(k, 0) - before.get(k, 0)) for k in after}
                decisions = sat["rate"] * secs
                cmds = f"{calls / decisions:.2f} ({', '.join(f'{k} {v / decisions:.2f}' for k, v in per.items() if v)})"
                for kind, r in (("HTTP saturation", sat), ("HTTP paced ~5,000/s", paced), ("gRPC 2x32 in flight", g)):
                    rows.append(
                        {
                            "store": store,
                            "workers": workers,
                            "run": kind,
                            **r,
                            "rss_mb": mem,
                            "redis": cmds if store == "redis" else "",
                        }
                    )
        finally:
            if redis is not None:
                redis.terminate()
                redis.wait()
    load1 = os.getloadavg()
    print(f"load average before {load0[0]:.2f}, after {load1[0]:.2f}; {os.cpu_count()} cores")
    print(
        "| store | workers | run | decisions/s | p50 ms | p99 ms | non-2xx | service CPU us/decision "
        "| RSS MiB | Redis commands per decision |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['store']} | {r['workers']} | {r['run']} | {r['rate']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['non2xx']} | {r['cpu_us']:.0f} | {r['rss_mb']:.0f} | {r['redis']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"load": [load0, load1], "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
