"""HTTP throughput of trivial Starlette and Flask apps: bare, with ratewarden, and with the peers.

One run measures every configuration on loopback with ``wrk`` (Debian package ``wrk``; a small
httpx load generator is used when wrk is missing), interleaved over ``--rounds`` rounds, and
prints the median requests/s of each, the ratio to the bare app, and ratewarden against the peer
(SlowAPI on Starlette, Flask-Limiter on Flask). ratewarden and the peers run the same three
limits on the memory store with rate-limit headers on; nothing is ever denied. A reference row,
a pure ASGI middleware that only wraps ``send`` to add two constant header fields, shows the
floor any middleware of that shape costs under the same server.

Servers: Starlette under uvicorn (1 process; h11 unless ``--http httptools``), Flask under gunicorn (1 process, gthread, 4 threads).

Setup (once; the venv is git-ignored by the ``.gitignore`` inside it)::

    apt-get install -y wrk
    python3.11 -m venv bench/.venv-http && echo '*' > bench/.venv-http/.gitignore
    bench/.venv-http/bin/pip install "slowapi==0.1.10" "Flask-Limiter==4.1.1" "limits==5.8.0" \\
        starlette uvicorn flask gunicorn httptools
    bench/.venv-http/bin/pip install --no-deps -e .

Run::

    bench/.venv-http/bin/python bench/http_bench.py [--duration 5] [--rounds 3] [--connections 16]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
APPS = HERE / "http"
BIN = Path(sys.executable).parent

CONFIGS: list[tuple[str, str, str]] = [  # (framework, variant, label)
    ("starlette", "bare", "Starlette bare"),
    ("starlette", "noop-mw", "Starlette + no-op send-wrapping mw"),
    ("starlette", "ratewarden", "Starlette + ratewarden"),
    ("starlette", "slowapi", "Starlette + SlowAPI"),
    ("flask", "bare", "Flask bare"),
    ("flask", "ratewarden", "Flask + ratewarden (extension)"),
    ("flask", "ratewarden-wsgi", "Flask + ratewarden (WSGI mw)"),
    ("flask", "flask-limiter", "Flask + Flask-Limiter"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(framework: str, variant: str, port: int, http: str = "h11") -> subprocess.Popen[bytes]:
    # a PYTHONPATH given (e.g. another tree's src, to measure it) stays, after the apps
    path = os.pathsep.join(p for p in (str(APPS), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "RW_BENCH_VARIANT": variant, "PYTHONPATH": path}
    if framework == "starlette":
        cmd = [str(BIN / "uvicorn"), "apps:make_starlette", "--factory", "--app-dir", str(APPS)]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
        cmd += ["--http", http]
    else:
        cmd = [str(BIN / "gunicorn"), "--chdir", str(APPS), "-w", "1", "-k", "gthread", "--threads", "4"]
        cmd += ["-b", f"127.0.0.1:{port}", "--log-level", "warning", "apps:make_flask()"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"{framework}/{variant} did not start: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                reply = s.recv(4096)
            if reply.startswith(b"HTTP/1.1 200"):
                return proc
            raise SystemExit(f"{framework}/{variant}: unexpected reply {reply[:200]!r}")
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{framework}/{variant} did not answer within 20 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children (gunicorn's worker), from /proc."""
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


def wrk(port: int, duration: float, connections: int) -> tuple[float, int, int]:
    """Requests/s, requests done and the count of non-2xx responses (wrk's own report)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, done, int(bad.group(1)) if bad else 0


def pyload(port: int, duration: float, connections: int) -> tuple[float, int, int]:
    """A fallback load generator: ``connections`` keep-alive httpx clients in threads."""
    import threading

    import httpx

    counts = [0] * connections
    bad = [0] * connections
    end = time.monotonic() + duration

    def worker(i: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            while time.monotonic() < end:
                r = c.get("/")
                counts[i] += 1
                bad[i] += r.status_code >= 300

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - t0), sum(counts), sum(bad)


def inprocess(requests: int, rounds: int) -> dict[str, float]:
    """CPU microseconds per request of each configuration called directly (no server, no
    sockets): the cost the adapter and the engine add to one request, without network noise and
    (CPU time, best of rounds) mostly without the noise of other processes on the machine."""
    import asyncio
    import io

    sys.path.insert(0, str(APPS))
    import apps  # type: ignore[import-not-found]
    from http_cost import ENVIRON, SCOPE  # the one request the in-process figures replay

    built: dict[str, object] = {}
    for framework, variant, label in CONFIGS:
        os.environ["RW_BENCH_VARIANT"] = variant
        built[label] = apps.make_starlette() if framework == "starlette" else apps.make_flask()

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: object) -> None:
        return None

    async def run_asgi(app: object, n: int) -> None:
        for _ in range(n):
            await app(dict(SCOPE), receive, send)  # type: ignore[operator]

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> object:
        return None

    def run_wsgi(app: object, n: int) -> None:
        for _ in range(n):
            env = dict(ENVIRON)
            env["wsgi.input"] = io.BytesIO(b"")
            result = app(env, start_response)  # type: ignore[operator]
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()

    best: dict[str, float] = {}
    loop = asyncio.new_event_loop()
    try:
        for _ in range(rounds):
            for framework, _variant, label in CONFIGS:
                app = built[label]
                t0 = time.process_time()  # CPU time of this process: robust to a busy machine
                if framework == "starlette":
                    loop.run_until_complete(run_asgi(app, requests))
                else:
                    run_wsgi(app, requests)
                us = (time.process_time() - t0) / requests * 1e6
                best[label] = min(best.get(label, us), us)
    finally:
        loop.close()
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of load per configuration and round")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--http", default="h11", choices=("h11", "httptools"), help="uvicorn's HTTP/1.1 implementation (Starlette)"
    )
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--only", default="", help="comma-separated frameworks (starlette,flask)")
    ap.add_argument("--inprocess", type=int, default=5000, help="requests per in-process measurement (0: skip)")
    args = ap.parse_args(argv)
    if args.inprocess:
        us = inprocess(args.inprocess, 5)
        print(f"in process (no server), CPU time, best of 5 x {args.inprocess} requests:")
        print(f"{'configuration':34s} {'us/request':>11s} {'added us':>9s} {'vs bare':>8s}")
        for framework in ("Starlette", "Flask"):
            bare_us = us[f"{framework} bare"]
            for label, v in us.items():
                if label.startswith(framework):
                    print(f"{label:34s} {v:11.1f} {v - bare_us:9.1f} {bare_us / v:7.3f}x")
        print()
    load = wrk if shutil.which("wrk") else pyload
    configs = [c for c in CONFIGS if not args.only or c[0] in args.only.split(",")]
    if args.rounds < 1 or not configs:
        return 0
    results: dict[str, list[float]] = {label: [] for _, _, label in configs}
    cpu_us: dict[str, list[float]] = {label: [] for _, _, label in configs}
    errors: dict[str, int] = dict.fromkeys(results, 0)
    print(
        f"load generator: {load.__name__}, {args.connections} connections, {args.duration:g} s x {args.rounds} rounds"
    )
    for rnd in range(args.rounds):
        for framework, variant, label in configs:
            port = free_port()
            proc = start(framework, variant, port, args.http)
            try:
                load(port, args.warmup, args.connections)
                cpu0 = cpu_seconds(proc.pid)
                rps, done, bad = load(port, args.duration, args.connections)
                cpu = (cpu_seconds(proc.pid) - cpu0) / max(done, 1) * 1e6
            finally:
                stop(proc)
            results[label].append(rps)
            cpu_us[label].append(cpu)
            errors[label] += bad
            print(
                f"  round {rnd + 1}: {label:34s} {rps:8.0f} req/s {cpu:8.1f} server CPU us/req"
                + (f"  ({bad} non-2xx!)" if bad else "")
            )
    med = {label: statistics.median(v) for label, v in results.items()}
    cmed = {label: statistics.median(v) for label, v in cpu_us.items()}
    print()
    print(f"{'configuration':34s} {'req/s':>8s} {'vs bare':>8s} {'CPU us/req':>11s} {'capacity vs bare':>17s}")
    for framework in ("starlette", "flask"):
        bare = med.get(f"{framework.capitalize()} bare")
        bare_cpu = cmed.get(f"{framework.capitalize()} bare")
        for fw, _, label in configs:
            if fw != framework:
                continue
            ratio = f"{med[label] / bare:7.3f}x" if bare else ""
            cap = f"{bare_cpu / cmed[label]:16.3f}x" if bare_cpu else ""
            print(f"{label:34s} {med[label]:8.0f} {ratio:>8s} {cmed[label]:11.1f} {cap:>17s}")
    print()
    pairs = [
        ("Starlette + ratewarden", "Starlette + SlowAPI", "Starlette bare"),
        ("Flask + ratewarden (extension)", "Flask + Flask-Limiter", "Flask bare"),
        ("Flask + ratewarden (WSGI mw)", "Flask + Flask-Limiter", "Flask bare"),
    ]
    ok = True
    for rw, peer, bare in pairs:
        if rw in med and peer in med and bare in med:
            cost = 1 - med[rw] / med[bare]
            cpu_cost = 1 - cmed[bare] / cmed[rw]
            verdict = "OK" if cost <= 0.10 else "ABOVE the 10 % target"
            ok = ok and cost <= 0.10
            print(
                f"{rw}: {med[rw] / med[peer]:.2f}x the req/s of {peer} ({cmed[peer] / cmed[rw]:.2f}x by server CPU); "
                f"costs {cost * 100:.1f} % of bare req/s, {cpu_cost * 100:.1f} % of bare capacity by CPU ({verdict})"
            )
    if any(errors.values()):
        print(f"non-2xx responses: {errors}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
