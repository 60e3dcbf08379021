"""Running the service: uvicorn worker processes, the gRPC server in each, logs, signals.

* One worker runs in this process. Several: the parent binds the HTTP socket once and starts
  ``workers`` processes that share it (and bind the gRPC port with ``SO_REUSEPORT``: the kernel
  spreads connections over them); the parent forwards ``SIGHUP`` (reload) and ``SIGTERM`` /
  ``SIGINT`` (stop) to every worker and waits for them.
* The memory store lives in each process: with several workers each would keep its own
  counters and the limits would be that many times looser, so it is refused unless
  ``split_memory`` says the operator wants exactly that (e.g. a benchmark).
* ``SIGTERM``/``SIGINT``: uvicorn stops accepting, lets the requests in flight finish (up to
  ``graceful_timeout`` seconds), then the lifespan stops gRPC with the same grace.
* Logs are one JSON object per line on stderr (``log_format="json"``), with the fields of
  ratewarden's events (``rw_event``, ``rule``, ``key``, ...), or plain text.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

__all__ = ["ServeOptions", "configure_logging", "default_workers", "serve"]

log = logging.getLogger("ratewarden.service")

_RECORD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra fields}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for k, v in vars(record).items():
            if k not in _RECORD and not k.startswith("_"):
                out[k] = v if isinstance(v, str | int | float | bool | type(None)) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    for name in ("ratewarden", "uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.propagate = False
        lg.setLevel(level.upper())


@dataclass
class ServeOptions:
    policy: str | None = None
    envoy_config: str | None = None
    algorithm: str = "fixed-window"
    storage: str | None = None
    host: str = "127.0.0.1"
    port: int = 8787
    grpc_port: int | None = 8081
    grpc_host: str | None = None  # default: host
    workers: int | None = None  # default: see default_workers
    split_memory: bool = False
    watch: float | None = None
    log_format: str = "json"
    log_level: str = "info"
    access_log: bool = False
    max_body: int = 64 * 1024
    graceful_timeout: float = 10.0  # whole seconds for uvicorn
    admin_token: str | None = None


def default_workers(shared: bool) -> int:
    """One per core on a shared store (Redis, SQLite), but one for the memory store (its
    counters are per process: ``Store.shared`` is False)."""
    if not shared:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def _service(opts: ServeOptions) -> Any:
    from ratewarden.service.state import Service

    return Service(
        opts.policy,
        envoy_config=opts.envoy_config,
        algorithm=opts.algorithm,
        storage=opts.storage,
        admin_token=opts.admin_token,
        max_body=opts.max_body,
    )


def _worker(opts: ServeOptions, sock: socket.socket | None) -> None:
    import uvicorn

    from ratewarden.service.app import create_app

    configure_logging(opts.log_format, opts.log_level)
    service = _service(opts)
    app = create_app(
        service,
        grpc_port=opts.grpc_port,
        grpc_host=opts.grpc_host or opts.host,
        watch=opts.watch,
        handle_signals=True,
    )
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - Windows
        loop = "asyncio"
    config = uvicorn.Config(
        app,
        host=opts.host,
        port=opts.port,
        loop=loop,
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=opts.access_log,
        timeout_graceful_shutdown=max(1, round(opts.graceful_timeout)),
        server_header=False,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock] if sock is not None else None)
    service.close()


def serve(opts: ServeOptions) -> int:
    """Run until stopped. The policy is validated here first: a broken file exits with 2."""
    configure_logging(opts.log_format, opts.log_level)
    service = _service(opts)  # fails fast, with file:line:reason, before any worker starts
    shared = service.snapshot.engine.store.shared
    service.close()
    workers = opts.workers or default_workers(shared)
    if workers > 1 and not shared and not opts.split_memory:
        print(
            f"error: {workers} workers on the memory store would each keep their own counters "
            "(limits that many times looser); use Redis or SQLite, one worker, or --split-memory",
            file=sys.stderr,
        )
        return 2
    if workers == 1:
        _worker(opts, None)
        return 0
    sock = socket.socket(socket.AF_INET6 if ":" in opts.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((opts.host, opts.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(opts, sock), daemon=False) for _ in range(workers)]
    for p in procs:
        p.start()
    log.info("ratewarden: %d workers on %s:%d", workers, opts.host, opts.port, extra={"rw_event": "workers"})

    def forward(signum: int, frame: FrameType | None) -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM if signum == signal.SIGINT else signum)

    for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(s, forward)
    for p in procs:
        p.join()
    sock.close()
    # uvicorn re-raises the signal it stopped on, so a worker stopped by SIGTERM ends "killed by SIGTERM"
    clean = (0, -signal.SIGTERM, -signal.SIGINT)
    return 0 if all(p.exitcode in clean for p in procs) else 1
