"""The decision service's HTTP side: a Starlette app over one :class:`~ratewarden.service.state.Service`.

Routes: ``POST /v1/check``, ``GET /v1/status``, ``POST /v1/reset`` (bearer token),
``GET /healthz``, ``GET /metrics``, ``GET /openapi.json``, the browser helper at
``GET /ratewarden.js``, the live dashboard under ``/dashboard`` (the admin token guards it when
one is set: 401 without it, 403 with a wrong one), plus any ``extra_routes``. The dashboard
counts what ``/metrics`` counts, from the same call (:meth:`Service.record`), and shows the
store's health by the check behind ``/healthz``. A client mistake is 400 ``{"error", "field"}``, a body over
``service.max_body`` is 413, an unknown path 404, a wrong method 405: nothing a client sends
gives a 500. The app's lifespan starts the gRPC server (Envoy RLS) when given a port, the
policy file watch when given an interval, and the SIGHUP reload when ``handle_signals``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ratewarden import __version__
from ratewarden.dashboard import Dashboard
from ratewarden.service.check import CheckEndpoint
from ratewarden.service.decide import status
from ratewarden.service.inputs import MAX_KEY, ClientError, parse_body, parse_reset
from ratewarden.service.openapi import openapi
from ratewarden.service.state import Service
from ratewarden.static import script_route

__all__ = ["create_app"]

log = logging.getLogger("ratewarden.service")


class TooLargeError(Exception):
    pass


def _json(data: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")
    return Response(body, status_code, headers, media_type="application/json")


def _error(message: str, field: str | None, status_code: int = 400, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": message, "field": field}, status_code, headers)


async def _read(request: Request, cap: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise TooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise TooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    service: Service,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    grpc_port: int | None = None,
    grpc_host: str = "127.0.0.1",
    watch: float | None = None,
    handle_signals: bool = False,
    dashboard: Dashboard | bool = True,
) -> ServiceApp:
    """The ASGI app. ``extra_routes`` (Starlette routes or mounts, e.g. static files) are
    matched before the service's own routes. ``dashboard``: True (a new one), a
    :class:`~ratewarden.dashboard.Dashboard` to show, or False (no ``/dashboard``)."""
    metrics = service.metrics
    if dashboard is True:
        dashboard = Dashboard(health=service.healthy)
    own_routes: list[BaseRoute] = [script_route("/ratewarden.js")]
    if isinstance(dashboard, Dashboard):
        service.dashboard = dashboard
        own_routes += dashboard.routes(service.admin_token, min_token_length=1)
    too_large = {"error": f"the body is larger than {service.max_body} bytes", "field": None}
    check = CheckEndpoint(service)

    async def get_status(request: Request) -> Response:
        q = request.query_params
        snap = service.snapshot
        rule, key = q.get("rule"), q.get("key")
        if rule is None and key is None:
            return _json(
                {
                    "version": __version__,
                    "pid": os.getpid(),
                    "policy": snap.source,
                    "storage": snap.engine.store.kind,
                    "rules": sorted(snap.rules),
                    "descriptors": len(snap.index),
                    "reloads": service.reloads,
                    "reload_errors": service.reload_errors,
                    "last_reload_error": service.last_error,
                }
            )
        if rule is None or rule not in snap.rules:
            return _error(f"no rule named {rule!r}" if rule is not None else "rule is required", "rule")
        if not key or len(key) > MAX_KEY:
            return _error("key is required (1 to 4096 characters)", "key")
        windows = await status(snap.engine, snap.rules[rule], key)
        return _json({"rule": rule, "key": key, "windows": windows})

    async def reset(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error("an admin bearer token is required", "authorization", 401, {"WWW-Authenticate": "Bearer"})
        expected = service.admin_token
        if not expected:
            return _error("reset is disabled: RATEWARDEN_ADMIN_TOKEN is not set", "authorization", 403)
        if not hmac.compare_digest(token.strip().encode("utf-8", "surrogateescape"), expected.encode("utf-8")):
            return _error("wrong admin token", "authorization", 403)
        try:
            body = parse_body(await _read(request, service.max_body))
            snap = service.snapshot
            rule, key = parse_reset(body, snap.reset_names)
        except TooLargeError:
            return _json(too_large, 413)
        except ClientError as exc:
            return _error(exc.message, exc.field)
        await snap.engine.areset(rule, key)
        log.info("ratewarden: reset %s for %s", rule, key, extra={"rw_event": "reset", "rule": rule, "key": key})
        return _json({"reset": True, "rule": rule, "key": key})

    async def healthz(request: Request) -> Response:
        if await service.healthy():
            return _json({"status": "ok"})
        return _json({"status": "store unavailable"}, 503)

    async def get_metrics(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    spec = openapi(__version__)

    async def get_openapi(request: Request) -> Response:
        return _json(spec)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        grpc_server = None
        service.attach_metrics()
        if grpc_port is not None:
            from ratewarden.service.rls import start_grpc

            grpc_server = await start_grpc(service, grpc_host, grpc_port)
            app.state.grpc_port = grpc_server.port
        loop = asyncio.get_running_loop()
        restore: list[tuple[int, Any]] = []
        if handle_signals:
            loop.add_signal_handler(signal.SIGHUP, service.reload)
            if isinstance(dashboard, Dashboard):
                restore = _end_streams_on_stop(dashboard)
        if watch:
            tasks.append(asyncio.create_task(_watch(service, watch)))
        log.info("ratewarden: serving %s", service.snapshot.source, extra={"rw_event": "start"})
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            if handle_signals:
                loop.remove_signal_handler(signal.SIGHUP)
                for sig, previous in restore:
                    signal.signal(sig, previous)
            if grpc_server is not None:
                await grpc_server.stop(grace=5.0)
            log.info("ratewarden: stopped", extra={"rw_event": "stop"})

    routes: list[BaseRoute] = [
        *extra_routes,
        *own_routes,
        Route("/v1/check", check, methods=["POST"]),  # reached only through ServiceApp's fast dispatch
        Route("/v1/status", get_status, methods=["GET"]),
        Route("/v1/reset", reset, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", get_metrics, methods=["GET"]),
        Route("/openapi.json", get_openapi, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    return ServiceApp(app, check)


class ServiceApp:
    """The service's ASGI app: ``POST /v1/check`` straight to its endpoint, the rest (and the
    lifespan) to Starlette. ``state`` and ``routes`` are Starlette's."""

    def __init__(self, starlette: Starlette, check: CheckEndpoint) -> None:
        self.starlette = starlette
        self.check = check

    @property
    def state(self) -> Any:
        return self.starlette.state

    @property
    def routes(self) -> list[BaseRoute]:
        return self.starlette.routes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/check":
            await self.check(scope, receive, send)
            return
        await self.starlette(scope, receive, send)


def _end_streams_on_stop(dashboard: Dashboard) -> list[tuple[int, Any]]:
    """On SIGTERM/SIGINT, end the dashboard's event streams before the server's own handler
    (uvicorn's) starts the graceful shutdown, which waits for open responses: an open dashboard
    would otherwise hold it for the whole grace period. Returns what to restore."""
    restore: list[tuple[int, Any]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def chained(signum: int, frame: Any, previous: Any = previous) -> None:
            dashboard.end_streams()
            previous(signum, frame)

        signal.signal(sig, chained)
        restore.append((sig, previous))
    return restore


async def _watch(service: Service, every: float) -> None:
    """Reload when the policy file's modification time or size changes (checked every ``every`` s)."""
    path = service.path
    if path is None:
        return

    def stamp() -> tuple[float, int] | None:
        try:
            if path.is_dir():
                return max(((p.stat().st_mtime, p.stat().st_size) for p in path.iterdir()), default=None)
            st = path.stat()
            return (st.st_mtime, st.st_size)
        except OSError:
            return None

    last = stamp()
    while True:
        await asyncio.sleep(every)
        now = stamp()
        if now is not None and now != last:
            last = now
            service.reload()
