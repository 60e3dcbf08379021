"""``ratewarden demo``: one Starlette app with the five teams' scenarios on one policy file.

The page at ``/`` has a card per team (chat widget, sync and login, sign-up, chat quota, AI
generation); each button goes through the browser helper (``/ratewarden.js``), so a 429 disables
it and counts down. ``/dashboard`` shows the decisions live. The policy is ``policy.toml`` beside
this module; ``create_app(policy=..., profile="quick")`` runs another file or profile.
"""

from __future__ import annotations

import os
import secrets
from importlib.resources import files
from typing import Any

from ratewarden.asgi import RateLimitMiddleware
from ratewarden.dashboard import Dashboard, ObservedEngine
from ratewarden.engine import Engine
from ratewarden.static import script_route

__all__ = ["POLICY", "DemoIdentity", "create_app", "serve"]

#: the demo's policy file, shipped in the package
POLICY = str(files(__name__).joinpath("policy.toml"))
_ROLES = ("OWNER", "MAINTAINER", "WRITER", "READER")


class DemoIdentity:
    """Stands in for the app's authentication: ``X-Demo-User: alice:OWNER`` becomes the request's
    user (id and role), and every visitor gets a ``sid`` session cookie."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.dashboard: Dashboard | None = None  # the demo's, for tests and tools
        self.engine: Engine | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_sid = False
        for name, value in scope.get("headers", ()):
            if name == b"x-demo-user":
                uid, _, role = value.decode("latin-1")[:64].partition(":")
                if uid:
                    role = role.upper() if role.upper() in _ROLES else "READER"
                    scope.setdefault("state", {})["user"] = {"id": uid, "role": role}
            elif name == b"cookie" and b"sid=" in value:
                has_sid = True
        if has_sid:
            await self.app(scope, receive, send)
            return
        sid = secrets.token_urlsafe(12)
        scope["headers"] = [*scope.get("headers", ()), (b"cookie", b"sid=" + sid.encode())]
        cookie = f"sid={sid}; Path=/; HttpOnly; SameSite=Lax".encode()

        async def send_cookie(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"set-cookie", cookie)]
            await send(message)

        await self.app(scope, receive, send_cookie)


def create_app(
    policy: Any = None,
    *,
    profile: str | None = None,
    admin_token: str | None = None,
    dashboard: Dashboard | None = None,
    **engine_options: Any,
) -> Any:
    """The demo app (a Starlette app); ``policy`` defaults to the shipped ``policy.toml``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    dashboard = dashboard or Dashboard()
    engine = ObservedEngine(policy or POLICY, profile=profile, dashboard=dashboard, **engine_options)
    page = files(__name__).joinpath("index.html").read_text(encoding="utf-8")
    counter = {"n": 0}

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def ok(request: Request) -> Response:
        counter["n"] += 1
        return JSONResponse({"ok": True, "id": counter["n"], "path": request.url.path})

    async def login(request: Request) -> Response:
        try:
            data = await request.json()
        except ValueError:
            return JSONResponse({"error": "bad json"}, status_code=400)
        if not isinstance(data, dict) or data.get("password") != "demo":
            return JSONResponse({"error": "wrong e-mail or password (the demo's password is 'demo')"}, status_code=401)
        return JSONResponse({"ok": True, "email": str(data.get("email", ""))[:200]})

    async def generate(request: Request) -> Response:
        tokens = 500 + secrets.randbelow(1500)
        counter["n"] += 1
        return JSONResponse({"ok": True, "tokens": tokens}, headers={"X-Tokens-Used": str(tokens)})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        script_route("/ratewarden.js"),
        *dashboard.routes(admin_token),
        Route("/api/v1/chat/save", ok, methods=["POST"]),
        Route("/api/v1/user/personalize", ok, methods=["POST"]),
        Route("/api/v1/data/sync", ok, methods=["POST"]),
        Route("/api/v1/auth/login", login, methods=["POST"]),
        Route("/auth/register", ok, methods=["POST"]),
        Route("/api/chat", ok, methods=["POST"]),
        Route("/generate", generate, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    outer = DemoIdentity(RateLimitMiddleware(app, engine=engine))
    outer.dashboard = dashboard
    outer.engine = engine
    return outer


def serve(port: int = 8000, host: str = "127.0.0.1", profile: str | None = None) -> None:
    """Run the demo under uvicorn (``ratewarden demo``); the dashboard wants
    ``RATEWARDEN_ADMIN_TOKEN`` when it is set."""
    import uvicorn

    token = os.environ.get("RATEWARDEN_ADMIN_TOKEN") or None
    app = create_app(profile=profile, admin_token=token)
    print(f"ratewarden demo on http://{host}:{port}/  (dashboard: http://{host}:{port}/dashboard)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
