"""The scenario apps, one small app per framework, all protected by a policy file."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from flask import Flask, g
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ratewarden.asgi import RateLimitMiddleware
from ratewarden.fastapi import RateLimit, install
from ratewarden.flask import RateWarden

# -- S0: FastAPI, per-action limits keyed by the session token ------------------------------------


def s0_fastapi(policy: Any, **options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(RateLimitMiddleware, policy=policy, **options)

    @app.post("/api/save_chat")
    async def save_chat(request: Request) -> dict[str, Any]:
        return {"saved": await request.json()}

    @app.post("/api/personalize")
    async def personalize() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    return app


# -- S4: FastAPI, per-user/per-role limits, a token budget charged after the response -------------


class DemoAuth:
    """Stands in for a real authentication middleware: ``X-Demo-User: alice:OWNER``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            for name, value in scope.get("headers", ()):
                if name == b"x-demo-user":
                    uid, _, role = value.decode("latin-1").partition(":")
                    scope.setdefault("state", {})["user"] = {"id": uid, "role": role}
        await self.app(scope, receive, send)


def s4_fastapi(policy: Any, **options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(RateLimitMiddleware, policy=policy, **options)
    app.add_middleware(DemoAuth)  # added last = outermost: the user is set before the limiter runs
    install(app)
    auth_limit = RateLimit("5/minute", key="ip", name="auth", clock=options.get("clock"))

    @app.post("/generate")
    async def generate(tokens: int, response: Response) -> dict[str, int]:
        response.headers["X-Tokens-Used"] = str(tokens)
        return {"tokens": tokens}

    @app.get("/projects")
    async def projects() -> list[str]:
        return ["p1"]

    @app.post("/auth/login", dependencies=[Depends(auth_limit)])
    async def login() -> dict[str, str]:
        return {"token": "t"}

    return app


# -- S1: Starlette, a sync endpoint and login; Fail2Ban on failed logins ---------------------------

USERS = {"alice@example.com": "right-password"}


async def s1_login(request: StarletteRequest) -> JSONResponse:
    data = await request.json()
    if USERS.get(str(data.get("email", "")).lower()) == data.get("password"):
        return JSONResponse({"token": "t"})
    return JSONResponse({"error": "bad credentials"}, status_code=401)


async def s1_sync(request: StarletteRequest) -> JSONResponse:
    return JSONResponse({"synced": True})


async def s1_any(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse("ok")


def s1_starlette(policy: Any, **options: Any) -> Starlette:
    routes = [
        Route("/api/v1/auth/login", s1_login, methods=["POST"]),
        Route("/api/v1/sync", s1_sync, methods=["GET", "POST"]),
        Route("/api/v1/items", s1_any),
    ]
    return Starlette(routes=routes, middleware=[Middleware(RateLimitMiddleware, policy=policy, **options)])


def s1_flask(policy: Any, **options: Any) -> Flask:
    app = Flask("s1")
    RateWarden(app, policy=policy, **options)

    @app.post("/api/v1/auth/login")
    def login() -> Any:
        data = flask_request.get_json(silent=True) or {}
        if USERS.get(str(data.get("email", "")).lower()) == data.get("password"):
            return {"token": "t"}
        return {"error": "bad credentials"}, 401

    return app


# -- S2: Flask, auth brute-force protection ----------------------------------------------------------


def s2_flask(policy: Any, **options: Any) -> Flask:
    app = Flask("s2")

    @app.before_request
    def load_user() -> None:  # registered before RateWarden: g.user is set when it checks
        name = flask_request.headers.get("X-Demo-User")
        g.user = {"id": name, "role": "READER"} if name else None

    rw = RateWarden(app, policy=policy, **options)

    @app.post("/auth/register")
    def register() -> Any:
        return {"registered": True}, 201

    @app.post("/auth/login")
    def login() -> Any:
        return {"token": "t"}

    @app.get("/profile")
    def profile() -> Any:
        return {"user": g.user}

    @app.post("/auth/reset-password")
    @rw.limit("3/hour", key=lambda request: request.get_json(silent=True, cache=True).get("email"))
    def reset_password() -> Any:
        return {"sent": True}

    return app


# -- S3: ASGI, per-session quotas shown to the user --------------------------------------------------


async def s3_chat(request: StarletteRequest) -> JSONResponse:
    return JSONResponse({"reply": "hi"})


async def s3_health(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def s3_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


def s3_asgi(policy: Any, **options: Any) -> Starlette:
    routes = [
        Route("/api/chat", s3_chat, methods=["POST"]),
        Route("/health", s3_health),
        WebSocketRoute("/ws", s3_ws),
    ]
    return Starlette(routes=routes, middleware=[Middleware(RateLimitMiddleware, policy=policy, **options)])


def s3_wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ.get("PATH_INFO") == "/health":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"reply": "hi"}).encode()]
