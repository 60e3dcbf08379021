"""Shadow rules never deny, exempt paths are never counted, and events reach the callback
passed through the adapters' options, with the identity the adapter found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, g
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ratewarden import FakeClock
from ratewarden.asgi import RateLimitMiddleware
from ratewarden.events import Event
from ratewarden.flask import RateWarden

POLICY = str(Path(__file__).parent / "policies" / "shadow_events.toml")


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


class SetUser:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("state", {})["user"] = {"id": "alice"}
        await self.app(scope, receive, send)


def test_shadow_rule_counts_and_reports_but_never_denies(clock: FakeClock) -> None:
    events: list[Event] = []
    app = Starlette(
        routes=[Route("/api/x", ok), Route("/health", ok), Route("/api/strict", ok)],
        middleware=[
            Middleware(SetUser),
            Middleware(RateLimitMiddleware, policy=POLICY, clock=clock, on_event=events.append),
        ],
    )
    with TestClient(app, client=("198.51.100.7", 1)) as client:
        codes = [client.get("/api/x").status_code for _ in range(5)]
        assert [client.get("/health").status_code for _ in range(5)] == [200] * 5
        strict = [client.get("/api/strict").status_code for _ in range(2)]
    assert codes == [200] * 5
    shadow = [e for e in events if e.kind == "shadow"]
    # /api/x requests 3-5 and both /api/strict requests exceed the shadow 2/minute: reported, not denied
    assert [e.path for e in shadow] == ["/api/x"] * 3 + ["/api/strict"] * 2
    assert {e.rule for e in shadow} == {"new-limit"}
    assert shadow[0].client_ip == "198.51.100.7"
    assert shadow[0].path == "/api/x"
    assert strict == [200, 429]  # the enforced rule denies; the shadow rule never does
    (throttle,) = [e for e in events if e.kind == "throttle"]
    assert (throttle.rule, throttle.user, throttle.method, throttle.retry_after) == ("enforced", "alice", "GET", 60.0)
    assert all(e.path != "/health" for e in events)


def test_exempt_paths_in_flask_are_not_counted_and_get_no_headers(clock: FakeClock) -> None:
    events: list[Event] = []
    app = Flask("t")

    @app.before_request
    def user() -> None:
        g.user = "bob"

    RateWarden(app, policy=POLICY, clock=clock, on_event=events.append)

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.get("/api/strict")
    def strict() -> str:
        return "ok"

    client = app.test_client()
    for _ in range(5):
        r = client.get("/health")
        assert r.status_code == 200
        assert "RateLimit" not in r.headers
    assert [client.get("/api/strict").status_code for _ in range(2)] == [200, 429]
    (throttle,) = [e for e in events if e.kind == "throttle"]
    assert throttle.user == "bob"
