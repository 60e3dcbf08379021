"""Fixes reported by the adapters' author: websocket ``MESSAGE`` rules, the shared ``unknown`` ip
bucket of clients without an address (through the real ASGI middleware and Starlette's TestClient)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from ratewarden import FakeClock
from ratewarden.asgi import RateLimitMiddleware

WS_POLICY = """
[ratewarden]
headers = "none"

[[rule]]
name = "connects"
match = { path = "/ws", methods = ["GET"] }
limits = ["2/minute"]
algorithm = "fixed-window"

[[rule]]
name = "messages"
match = { path = "/ws", methods = ["MESSAGE"] }
limits = ["3/minute"]
algorithm = "fixed-window"
"""


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def app(policy: str, **options: object) -> Starlette:
    routes = [Route("/", hello), WebSocketRoute("/ws", ws_echo)]
    return Starlette(routes=routes, middleware=[Middleware(RateLimitMiddleware, policy=policy, **options)])


def test_message_rules_count_messages_apart_from_connects() -> None:
    clock = FakeClock(1_800_000_000)
    with TestClient(app(WS_POLICY, clock=clock, websocket_messages=True)) as client:
        with client.websocket_connect("/ws") as ws:
            for text in ("a", "b", "c"):  # three messages: the message rule's limit, not the connect rule's 2
                ws.send_text(text)
                assert ws.receive_text() == text
            ws.send_text("d")
            try:
                ws.receive_text()
                raise AssertionError("the fourth message should close the connection")
            except WebSocketDisconnect as closed:
                assert closed.code == 1008
        clock.advance(60)
        with client.websocket_connect("/ws") as ws:  # the second connect: the connect rule still admits it
            ws.send_text("e")
            assert ws.receive_text() == "e"


def test_clients_without_an_address_share_the_unknown_bucket_and_never_bypass() -> None:
    policy = '[ratewarden]\nheaders = "draft"\n[[rule]]\nname = "per-ip"\nlimits = ["2/minute"]\n'
    clock = FakeClock(1_800_000_000)
    web = app(policy, clock=clock)
    with TestClient(web) as one, TestClient(web) as two:  # both peers are "testclient": no address
        assert one.get("/").status_code == 200
        assert two.get("/").status_code == 200
        denied = one.get("/")
        assert denied.status_code == 429, "a client without an address is limited, never let through"
        assert two.get("/").status_code == 429, "all clients without an address share one bucket"
