"""Deterministic in-process cost of one request through an adapter: run under callgrind.

``python bench/http_cost.py CONFIG N`` sends N requests (after a warm-up of 200) to one of the
in-process apps of ``bench/http_bench.py`` and exits. Under ``valgrind --tool=callgrind`` the
instruction count of a run of N and of a run of 11N differ only by 10N requests, so

    instructions per request = (Ir(11N) - Ir(N)) / 10N

is free of start-up costs and, unlike wall or CPU time, does not move with the load of a shared
machine. ``--measure`` does the subtraction itself for every configuration given::

    python bench/http_cost.py --measure starlette-bare,starlette-ratewarden --n 300

``piece:NAME`` runs one part of the ASGI middleware's request alone (``piece:noop`` is the
loop's own cost; the names are in :func:`pieces`)::

    python bench/http_cost.py --measure piece:noop,piece:facts,piece:check,piece:store --n 1000

``--server CONFIGS`` counts the same under the real server instead: the Starlette app under
uvicorn (one process, as ``bench/http_bench.py`` runs it) started under callgrind, warmed up,
its counters zeroed (``callgrind_control -z``), then exactly N keep-alive requests sent over 16
connections from this process (outside valgrind) and the counters dumped: instructions per
request of the whole server (the socket, uvicorn's HTTP protocol, the app, ratewarden), the
figure whose ratio to bare is the capacity ratio ``bench/http_bench.py`` measures with wrk::

    python bench/http_cost.py --server starlette-bare,starlette-noop-rwheaders,starlette-ratewarden --n 2000

``--http httptools`` runs uvicorn on httptools (what ``uvicorn[standard]`` installs and picks by
default) instead of h11 (the pure-Python default of a plain ``uvicorn``); both are worth knowing,
since h11 validates every response field and httptools does not.

The 16 connections' set-up and tear-down are counted too, spread over the N requests: take N of
2,000 or more (bare Starlette: 621,000 per request at N = 300, 607,000 at N = 2,000).

CONFIG: ``starlette-bare``, ``starlette-noop-mw``, ``starlette-noop-send`` (wraps ``send``, adds
no field), ``starlette-noop-rwheaders`` (adds the very two fields ratewarden sends, nothing
else), ``starlette-ratewarden``, ``flask-bare``,
``flask-ratewarden`` (the extension), ``flask-ratewarden-wsgi``, ``asgi-bare`` (a 10-line ASGI
app, no framework) and ``asgi-ratewarden`` (that app inside ``RateLimitMiddleware``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
APPS = HERE / "http"

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}
ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/",
    "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_HOST": "127.0.0.1:8000",
    "HTTP_USER_AGENT": "wrk",
    "HTTP_ACCEPT": "*/*",
    "wsgi.url_scheme": "http",
    "wsgi.version": (1, 0),
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": True,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}
CONFIGS = (
    "asgi-bare",
    "asgi-ratewarden",
    "starlette-bare",
    "starlette-noop-mw",
    "starlette-noop-send",
    "starlette-noop-rwheaders",
    "starlette-ratewarden",
    "flask-bare",
    "flask-ratewarden",
    "flask-ratewarden-wsgi",
)


async def _plain(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def build(config: str) -> tuple[str, Any]:
    sys.path.insert(0, str(APPS))
    import apps  # type: ignore[import-not-found]

    framework, _, variant = config.partition("-")
    if framework == "asgi":
        if variant == "bare":
            return "asgi", _plain
        from ratewarden.asgi import RateLimitMiddleware

        return "asgi", RateLimitMiddleware(_plain, policy=apps.POLICY)
    os.environ["RW_BENCH_VARIANT"] = variant
    if framework == "starlette":
        return "asgi", apps.make_starlette()
    return "wsgi", apps.make_flask()


def pieces() -> dict[str, Any]:
    """The parts of the ASGI middleware's request, each callable alone (``piece:NAME``): the
    bench's policy, an admitted request; ``piece:noop`` is the loop's own cost."""
    sys.path.insert(0, str(APPS))
    import apps

    from ratewarden._adapters.middleware import _latin1, _with_headers
    from ratewarden.asgi import RateLimitMiddleware, scope_facts
    from ratewarden.engine.flows import _Call
    from ratewarden.policy.keys import RequestContext

    e = RateLimitMiddleware(_plain, policy=apps.POLICY).engine
    facts = scope_facts(dict(SCOPE), None)
    ctx = RequestContext(facts, e.policy, e._clock)
    route = e._route(ctx)
    t = e._fast(ctx, route, "hit")
    assert t is not None
    res = e._run(_Call("hit", t.items, t.modes))
    verdict = e.check(facts)
    extra = _latin1(verdict.headers)
    return {
        "noop": lambda: None,
        "facts": lambda: scope_facts(dict(SCOPE), None),
        "context": lambda: RequestContext(facts, e.policy, e._clock),
        "context+route": lambda: e._route(RequestContext(facts, e.policy, e._clock)),
        "context+keys": lambda: e._fast(RequestContext(facts, e.policy, e._clock), route, "hit"),
        "store-call": lambda: e._run(_Call("hit", t.items, t.modes)),
        "store": lambda: e.store.apply("hit", t.items),
        "verdict": lambda: e._throttled(ctx, route, t, res, "hit"),
        "admitted": lambda: e._admitted(route.parts, route.policy, route.rate_format, res.outs),  # type: ignore[arg-type]
        "check": lambda: e.check(facts),
        "exempt+needs_body": lambda: (e.exempt(facts), e.needs_body(facts)),
        "header-bytes": lambda: _latin1(verdict.headers),
        "with-headers": lambda: _with_headers([(b"content-type", b"text/plain")], extra, verdict.headers),
    }


def run(config: str, n: int) -> None:
    if config.startswith("piece:"):
        fn = pieces()[config[6:]]
        for _ in range(200 + n):
            fn()
        return
    kind, app = build(config)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: object) -> None:
        return None

    async def run_asgi(count: int) -> None:
        for _ in range(count):
            await app(dict(SCOPE), receive, send)

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> object:
        return None

    def run_wsgi(count: int) -> None:
        for _ in range(count):
            env = dict(ENVIRON)
            env["wsgi.input"] = io.BytesIO(b"")
            result = app(env, start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()

    if kind == "asgi":
        loop = asyncio.new_event_loop()
        loop.run_until_complete(run_asgi(200 + n))
        loop.close()
    else:
        run_wsgi(200 + n)


def _env() -> dict[str, str]:
    """The environment of a measured process: a fixed hash seed (``PYTHONHASHSEED=0`` unless set),
    since string hashes decide dictionary probes and with a random seed the same run moves by
    about 1,000 instructions per request."""
    return {**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}


def instructions(config: str, n: int, python: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python, __file__, config, str(n)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=_env())
        m = re.search(r"Collected : (\d+)", proc.stderr)
        if m is None:
            raise SystemExit(f"no instruction count from callgrind:\n{proc.stderr[-2000:]}")
        return int(m.group(1))


def requests(port: int, n: int, connections: int = 16) -> int:
    """Send exactly ``n`` keep-alive ``GET /`` requests (what wrk sends) over ``connections``
    connections and read every response; the count of responses that were not 200."""
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    left, done, bad = n, 0, 0
    socks = []
    for _ in range(min(connections, n)):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        s.setblocking(False)
        left -= 1
        sel.register(s, selectors.EVENT_READ, bytearray())
        socks.append(s)
    try:
        while done < n:
            for key, _ in sel.select(timeout=120):
                s, buf = key.fileobj, key.data
                chunk = s.recv(65536)  # type: ignore[union-attr]
                if not chunk:
                    raise SystemExit("the server closed a connection")
                buf += chunk
                while (end := buf.find(b"\r\n\r\n")) >= 0:
                    head = bytes(buf[:end]).lower()
                    m = re.search(rb"\r\ncontent-length: *(\d+)", head)
                    size = end + 4 + (int(m.group(1)) if m else 0)
                    if len(buf) < size:
                        break
                    bad += not head.startswith(b"http/1.1 200")
                    del buf[:size]
                    done += 1
                    if left > 0:
                        s.sendall(request)  # type: ignore[union-attr]
                        left -= 1
    finally:
        for s in socks:
            s.close()
    return bad


def server_instructions(config: str, n: int, python: str, http: str = "h11") -> int:
    """Instructions per request of the whole uvicorn server process serving ``config`` (see the
    module docstring): zeroed after start-up and a warm-up, dumped after exactly ``n`` requests."""
    framework, _, variant = config.partition("-")
    if framework != "starlette":
        raise SystemExit(f"--server runs the Starlette apps under uvicorn; not {config!r}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python, "-m", "uvicorn"]
        cmd += ["apps:make_starlette", "--factory", "--app-dir", str(APPS), "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--log-level", "warning", "--no-access-log", "--http", http]
        path = os.pathsep.join(p for p in (str(APPS), os.environ.get("PYTHONPATH", "")) if p)
        env = {**_env(), "RW_BENCH_VARIANT": variant, "PYTHONPATH": path}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                if proc.poll() is not None:
                    raise SystemExit(f"{config}: the server exited ({proc.returncode})")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            requests(port, 500)  # warm-up: every cache filled, every code path run once
            ctl = ["callgrind_control"]
            subprocess.run([*ctl, "-z", str(proc.pid)], check=True, capture_output=True)
            bad = requests(port, n)
            subprocess.run([*ctl, "-d", "measured", str(proc.pid)], check=True, capture_output=True)
            if bad:
                raise SystemExit(f"{config}: {bad} responses were not 200")
            dump = Path(f"{out}.1")
            m = re.search(r"^summary: (\d+)", dump.read_text(), re.MULTILINE)
            if m is None:
                raise SystemExit(f"{config}: no summary in the callgrind dump")
            return int(m.group(1)) // n
        finally:
            proc.terminate()
            proc.wait(timeout=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", help=f"one of {', '.join(CONFIGS)}, or piece:NAME")
    ap.add_argument("count", nargs="?", type=int, default=1000)
    ap.add_argument("--measure", default="", help="comma-separated configurations: instructions per request")
    ap.add_argument("--server", default="", help="comma-separated Starlette configurations: under uvicorn")
    ap.add_argument(
        "--http", default="h11", choices=("h11", "httptools"), help="--server: uvicorn's HTTP/1.1 implementation"
    )
    ap.add_argument("--n", type=int, default=300, help="N of the N / 11N pair (--server: requests counted)")
    args = ap.parse_args(argv)
    if args.server:
        base = None
        for config in args.server.split(","):
            per = server_instructions(config, args.n, sys.executable, args.http)
            base = per if base is None else base
            print(
                f"{config:28} {per:12,} instructions/request in the server  {base / per:6.3f}x of the first", flush=True
            )
        return 0
    if not args.measure:
        if args.config is None:
            ap.error("a configuration, or --measure")
        run(args.config, args.count)
        return 0
    for config in args.measure.split(","):
        small = instructions(config, args.n, sys.executable)
        large = instructions(config, 11 * args.n, sys.executable)
        print(f"{config:24} {(large - small) / (10 * args.n):12,.0f} instructions/request", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
