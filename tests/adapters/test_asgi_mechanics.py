"""The ASGI middleware's own translation work, checked with a recording engine."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from rw_recording import RecordingEngine
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from ratewarden.asgi import RateLimitMiddleware, identity_of, scope_path
from ratewarden.errors import ConfigError


async def echo(request: Request) -> PlainTextResponse:
    body = await request.body()
    return PlainTextResponse(body, status_code=201, headers={"X-App": "yes"})


async def boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("app failure")


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(text)
    except WebSocketDisconnect:
        pass


ROUTES = [
    Route("/echo", echo, methods=["GET", "POST"]),
    Route("/body", echo, methods=["POST"]),
    Route("/health", echo),
    Route("/boom", boom),
    WebSocketRoute("/ws", ws_echo),
]


def make(engine: RecordingEngine, **options: Any) -> Starlette:
    return Starlette(routes=ROUTES, middleware=[Middleware(RateLimitMiddleware, engine=engine, **options)])


def test_allowed_response_gets_the_verdict_headers_and_after_sees_the_app_response() -> None:
    engine = RecordingEngine()
    with TestClient(make(engine)) as client:
        r = client.post("/echo", content=b"hello", headers=[("X-Multi", "a"), ("x-multi", "b"), ("X-Upper", "V")])
    assert r.status_code == 201
    assert r.text == "hello"
    assert r.headers["ratelimit"] == '"test";r=999999;t=60'
    assert r.headers["x-app"] == "yes"
    facts = engine.checked[0]
    assert facts.method == "POST"
    assert facts.path == "/echo"
    assert facts.headers["x-multi"] == "a"  # a repeated header: its first line, as Starlette hands it to the app
    assert facts.headers["x-upper"] == "V"
    assert facts.body is None  # no rule needed it
    assert len(engine.afters) == 1
    _, status, headers = engine.afters[0]
    assert status == 201
    assert headers["x-app"] == "yes"


async def test_client_ip_is_the_socket_peer_and_spoofed_headers_are_only_headers() -> None:
    engine = RecordingEngine()
    transport = httpx.ASGITransport(app=make(engine), client=("198.51.100.7", 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get("/echo", headers={"X-Forwarded-For": "1.2.3.4"})
    assert r.status_code == 201
    assert engine.checked[0].client_ip == "198.51.100.7"
    assert engine.checked[0].headers["x-forwarded-for"] == "1.2.3.4"
    assert engine.checked[0].host == "test"


def test_denial_sends_the_verdict_and_never_calls_the_app() -> None:
    engine = RecordingEngine(allow=1)
    with TestClient(make(engine)) as client:
        assert client.get("/echo").status_code == 201
        r = client.get("/boom")  # the app would raise: it must not run
    assert r.status_code == 429
    assert r.headers["retry-after"] == "7"
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "rate_limited", "retry_after": 7}
    assert [status for _, status, _ in engine.afters] == [201, 429]  # denials too (Allow2Ban)


def test_exempt_paths_are_never_checked() -> None:
    engine = RecordingEngine(allow=0, exempt_paths=("/health",))
    with TestClient(make(engine)) as client:
        assert client.get("/health").status_code == 201
        assert client.get("/echo").status_code == 429
    assert [f.path for f in engine.checked] == ["/echo"]


def test_body_is_read_for_the_rule_and_replayed_unchanged() -> None:
    engine = RecordingEngine(body_paths=("/body",), body_limit=1024)
    payload = json.dumps({"email": "Alice@Example.com"}).encode()
    with TestClient(make(engine)) as client:
        r = client.post("/body", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 201
    assert r.content == payload
    assert engine.checked[0].body == payload
    assert engine.checked[0].body_truncated is False
    assert engine.checked[0].content_type == "application/json"


async def test_body_above_the_cap_is_truncated_for_the_rule_and_whole_for_the_app() -> None:
    engine = RecordingEngine(body_paths=("/body",), body_limit=1000)
    chunks = [bytes([i]) * 300 for i in range(20)]  # 6000 bytes in 20 ASGI messages

    async def stream() -> Any:
        for c in chunks:
            yield c

    transport = httpx.ASGITransport(app=make(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.post("/body", content=stream())
    assert r.status_code == 201
    assert r.content == b"".join(chunks)
    assert engine.checked[0].body == b"".join(chunks)[:1000]
    assert engine.checked[0].body_truncated is True


def test_after_sees_500_when_the_app_raises() -> None:
    engine = RecordingEngine()
    with TestClient(make(engine), raise_server_exceptions=False) as client:
        assert client.get("/boom").status_code == 500
    assert engine.afters[0][1] == 500


def test_non_utf8_paths_never_raise() -> None:
    assert scope_path({"path": "/caf\udcff"}) == "/caf\ufffd"
    assert scope_path({"raw_path": b"/caf%FF/x"}) == "/caf\ufffd/x"
    engine = RecordingEngine()
    with TestClient(make(engine)) as client:
        assert client.get("/caf%FF%FE").status_code == 404
    assert engine.checked[0].path == "/caf\ufffd\ufffd"


async def test_a_surrogate_path_in_the_scope_reaches_the_engine_replaced() -> None:
    engine = RecordingEngine(allow=0)
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - denied
        raise AssertionError("denied requests never reach the app")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/\udcff\udcfe", "headers": [(b"x-bin", b"\xff\x00")]}
    await RateLimitMiddleware(app, engine=engine)(scope, receive, send)
    assert sent[0]["status"] == 429
    assert engine.checked[0].path == "/\ufffd\ufffd"
    assert engine.checked[0].headers["x-bin"] == "\xff\x00"
    assert engine.checked[0].client_ip is None


class TokenBackend(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


def test_identity_from_starlettes_authentication_middleware() -> None:
    engine = RecordingEngine()
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(AuthenticationMiddleware, backend=TokenBackend()),
            Middleware(RateLimitMiddleware, engine=engine),
        ],
    )
    with TestClient(app) as client:
        client.get("/echo", headers={"x-user": "alice"})
        client.get("/echo")
    assert engine.checked[0].user == "alice"
    assert engine.checked[1].user is None  # UnauthenticatedUser is anonymous


def test_identity_from_scope_state_and_a_user_getter() -> None:
    engine = RecordingEngine()

    class SetState:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("state", {})["user"] = {"sub": "u-42", "role": "OWNER"}
            await self.app(scope, receive, send)

    app = Starlette(routes=ROUTES, middleware=[Middleware(SetState), Middleware(RateLimitMiddleware, engine=engine)])
    with TestClient(app) as client:
        client.get("/echo")
    assert engine.checked[0].user == "u-42"
    assert engine.checked[0].user_attrs["role"] == "OWNER"

    engine2 = RecordingEngine()
    with TestClient(make(engine2, user_getter=lambda scope: "from-getter")) as client:
        client.get("/echo")
    assert engine2.checked[0].user == "from-getter"


def test_identity_of_objects_mappings_and_anonymous_values() -> None:
    class User:
        is_authenticated = True
        id = 7
        role = "WRITER"

    class Anonymous:
        is_authenticated = False
        id = None

    assert identity_of(User()) == ("7", {"role": "WRITER"})
    assert identity_of(Anonymous()) == (None, {})
    assert identity_of(None) == (None, {})
    assert identity_of("") == (None, {})
    assert identity_of({"role": "READER"}) == (None, {"role": "READER"})


def test_websocket_connect_denied_with_an_http_response() -> None:
    engine = RecordingEngine(allow=1)
    with TestClient(make(engine)) as client:
        with client.websocket_connect("/ws") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "hi"
        with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws"):
            pass  # pragma: no cover - the connection is refused
    assert denied.value.status_code == 429
    assert denied.value.headers["retry-after"] == "7"
    assert denied.value.json() == {"error": "rate_limited", "retry_after": 7}
    assert engine.checked[0].scheme == "ws"
    assert engine.afters[0][1] == 101


async def test_websocket_denied_with_close_1008_without_the_extension() -> None:
    engine = RecordingEngine(allow=0)
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - denied
        raise AssertionError("denied connections never reach the app")

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": [], "client": ("192.0.2.1", 1)}
    await RateLimitMiddleware(app, engine=engine)(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "rate limited"}]


def test_websocket_messages_limited_when_configured() -> None:
    engine = RecordingEngine(allow=3)  # the connect and two messages
    with TestClient(make(engine, websocket_messages=True)) as client, client.websocket_connect("/ws") as ws:
        ws.send_text("one")
        assert ws.receive_text() == "one"
        ws.send_text("two")
        assert ws.receive_text() == "two"
        ws.send_text("three")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1008
    assert [f.method for f in engine.checked] == ["GET", "MESSAGE", "MESSAGE", "MESSAGE"]


async def test_lifespan_passes_through() -> None:
    engine = RecordingEngine()
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await RateLimitMiddleware(app, engine=engine)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]
    assert engine.checked == []


def test_engine_and_engine_options_together_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="either engine"):
        RateLimitMiddleware(echo, engine=RecordingEngine(), clock=lambda: 0.0)  # type: ignore[arg-type]


def test_json_response_from_the_app_keeps_its_body() -> None:
    engine = RecordingEngine()

    async def js(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/js", js)], middleware=[Middleware(RateLimitMiddleware, engine=engine)])
    with TestClient(app) as client:
        r = client.get("/js")
    assert r.json() == {"ok": True}
    assert "ratelimit-policy" in r.headers


def test_nothing_pending_means_no_after_call_and_the_headers_still_added() -> None:
    engine = RecordingEngine(pending=None)
    with TestClient(make(engine)) as client:
        r = client.get("/echo")
    assert r.headers["ratelimit"] == '"test";r=999999;t=60'
    assert engine.afters == []


@pytest.mark.parametrize("pending", [True, None])
async def test_the_send_wrapper_hands_back_the_servers_own_awaitable(pending: object) -> None:
    """Each message the app sends is awaited as the server's own awaitable (no coroutine of the
    middleware in between: two fewer per response), the start message with the verdict's fields
    added to the app's, the body untouched, and after() still sees the response."""
    engine = RecordingEngine(pending=pending)
    sent: list[dict[str, Any]] = []
    handed: list[object] = []

    class ServerSend:  # what the server's send returns, awaited by the app
        def __init__(self, message: dict[str, Any]) -> None:
            self.message = message

        def __await__(self) -> Any:
            sent.append(self.message)
            return iter(())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in (
            {"type": "http.response.start", "status": 202, "headers": [(b"x-app", b"1")]},
            {"type": "http.response.body", "body": b"ok"},
        ):
            awaitable = send(message)
            handed.append(awaitable)
            await awaitable

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("192.0.2.1", 1)}
    await RateLimitMiddleware(app, engine=engine)(scope, None, ServerSend)  # type: ignore[arg-type]
    assert [type(a) for a in handed] == [ServerSend, ServerSend]
    assert [a.message for a in handed] == sent  # type: ignore[attr-defined]
    assert sent[0]["headers"] == [
        (b"x-app", b"1"),
        (b"ratelimit-policy", b'"test";q=1000000;w=60'),
        (b"ratelimit", b'"test";r=999999;t=60'),
    ]
    assert sent[1] == {"type": "http.response.body", "body": b"ok"}
    assert [(status, headers.get("x-app")) for _, status, headers in engine.afters] == (
        [(202, "1")] if pending is not None else []
    )
