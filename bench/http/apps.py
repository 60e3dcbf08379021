"""Trivial apps for bench/http_bench.py: Starlette and Flask, bare, with ratewarden, or with the
peer (SlowAPI, Flask-Limiter) configured with the same three limits and headers on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

POLICY = os.environ.get("RW_BENCH_POLICY") or str(Path(__file__).with_name("policy.toml"))
PEER_LIMITS = ["1000000000/hour", "1000000000/minute", "1000000000/day"]


class NoopHeaders:
    """A do-nothing ASGI middleware that wraps ``send`` and adds two constant header fields, the
    shape of a rate-limit middleware without any rate limiting: the floor a pure-Python
    middleware that adds headers costs under the same server."""

    EXTRA: tuple[tuple[bytes, bytes], ...] = (
        (b"ratelimit-policy", b'"per-ip-hour";q=1000000000;w=3600'),
        (b"ratelimit", b'"per-ip-hour";r=999999999;t=1'),
    )

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.EXTRA

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class NoopSend(NoopHeaders):
    """The same middleware adding no field: what wrapping ``send`` alone costs."""

    EXTRA = ()


class NoopRateWardenHeaders(NoopHeaders):
    """The same middleware adding the very two fields ratewarden sends for this policy (the same
    names, the same lengths): what the server itself spends on those fields, with no rate limiting."""

    EXTRA = (
        (
            b"ratelimit-policy",
            b'"per-ip-hour";q=1000000000;w=3600, "per-ip-minute";q=1000000000;w=60, "per-client";q=1000000000;w=86400',
        ),
        (b"ratelimit", b'"per-ip-hour";r=999999999;t=1, "per-ip-minute";r=999999999;t=1, "per-client";r=999999999;t=1'),
    )


def make_starlette() -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    variant = os.environ["RW_BENCH_VARIANT"]

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    if variant == "bare":
        return Starlette(routes=[Route("/", hello)])
    if variant == "noop-mw":  # the floor: a pure ASGI middleware that only wraps send to add two fixed headers
        return Starlette(routes=[Route("/", hello)], middleware=[Middleware(NoopHeaders)])
    if variant == "noop-send":  # wraps send, adds no field
        return Starlette(routes=[Route("/", hello)], middleware=[Middleware(NoopSend)])
    if variant == "noop-rwheaders":  # adds ratewarden's two fields, does nothing else
        return Starlette(routes=[Route("/", hello)], middleware=[Middleware(NoopRateWardenHeaders)])
    if variant == "ratewarden":
        from ratewarden.asgi import RateLimitMiddleware

        return Starlette(routes=[Route("/", hello)], middleware=[Middleware(RateLimitMiddleware, policy=POLICY)])
    if variant == "slowapi":
        from slowapi import Limiter, _rate_limit_exceeded_handler
        from slowapi.errors import RateLimitExceeded
        from slowapi.middleware import SlowAPIMiddleware
        from slowapi.util import get_remote_address

        limiter = Limiter(
            key_func=get_remote_address, default_limits=PEER_LIMITS, headers_enabled=True, storage_uri="memory://"
        )
        app = Starlette(routes=[Route("/", hello)], middleware=[Middleware(SlowAPIMiddleware)])
        app.state.limiter = limiter
        app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
        return app
    raise SystemExit(f"unknown variant {variant!r}")


def make_flask() -> Any:
    from flask import Flask

    variant = os.environ["RW_BENCH_VARIANT"]
    app = Flask("bench")

    @app.get("/")
    def hello() -> str:
        return "hello"

    if variant == "ratewarden":
        from ratewarden.flask import RateWarden

        RateWarden(app, policy=POLICY)
    elif variant == "ratewarden-wsgi":
        from ratewarden.wsgi import RateLimitMiddleware

        app.wsgi_app = RateLimitMiddleware(app.wsgi_app, policy=POLICY)  # type: ignore[method-assign]
    elif variant == "flask-limiter":
        from flask_limiter import Limiter
        from flask_limiter.util import get_remote_address

        app.config["RATELIMIT_HEADERS_ENABLED"] = True
        Limiter(get_remote_address, app=app, default_limits=PEER_LIMITS, storage_uri="memory://")
    elif variant != "bare":
        raise SystemExit(f"unknown variant {variant!r}")
    return app
