"""The HTTP API against a real uvicorn on the loopback: check by rule+key and by request facts
(the same answers as the ASGI middleware on the same policy), status, reset's token, healthz,
413 and every 400 of the input contract."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from rw_service_helpers import LiveServer, clock_route, free_port
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ratewarden import FakeClock
from ratewarden.asgi import RateLimitMiddleware
from ratewarden.service import Service

POLICY = """
[ratewarden]
storage = "memory://"
headers = "draft"

[[rule]]
name = "login"
match = { path = "/login", methods = ["POST"] }
key = "body:email|lower"
fallback = "ip"
limits = ["3/minute"]

[[rule]]
name = "api"
match = { path = "/api/*" }
key = "ip"
limits = ["5/10 seconds", "8/minute"]
algorithm = "sliding-log"

[[rule]]
name = "tiered"
match = { path = "/tiered" }
key = "user"
limits = ["2/minute"]
tiers = { attr = "role", OWNER = 3, READER = 1 }

[blocklist]
ips = ["203.0.113.0/24"]
"""

TOKEN = "admin-token-1234"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def live(clock: FakeClock) -> Any:
    with LiveServer(
        Service(POLICY, clock=clock, admin_token=TOKEN), grpc=False, extra_routes=[clock_route(clock)]
    ) as s:
        yield s


def post(live: LiveServer, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(live.url + "/v1/check", json=body, timeout=5, **kw)


def test_check_by_key_counts_down_then_denies_with_an_exact_retry(live: LiveServer, clock: FakeClock) -> None:
    answers = [post(live, {"rule": "login", "key": "alice"}).json() for _ in range(4)]
    assert [a["allowed"] for a in answers] == [True, True, True, False]
    assert [a["remaining"] for a in answers] == [2, 1, 0, 0]
    denied = answers[3]
    assert denied["status"] == 429 and denied["rule"] == "login" and denied["limit"] == 3
    assert denied["retry_after"] == pytest.approx(20.0)
    assert denied["headers"]["Retry-After"] == "20"
    assert denied["headers"]["RateLimit-Policy"] == '"login";q=3;w=60'
    assert len(denied["decisions"]) == 1
    clock.advance(denied["retry_after"])
    assert post(live, {"rule": "login", "key": "alice"}).json()["allowed"] is True
    assert post(live, {"rule": "login", "key": "bob", "cost": 3}).json()["remaining"] == 0


def test_cost_above_the_limit_never_passes_and_says_so(live: LiveServer) -> None:
    a = post(live, {"rule": "login", "key": "carol", "cost": 4}).json()
    assert a["allowed"] is False and a["retry_after"] is None  # never: JSON has no infinity
    assert post(live, {"rule": "login", "key": "carol"}).json()["remaining"] == 2  # nothing consumed


def test_tiers_by_attrs(live: LiveServer) -> None:
    owner = [
        post(live, {"rule": "tiered", "key": "u1", "attrs": {"role": "OWNER"}}).json()["allowed"] for _ in range(7)
    ]
    reader = [
        post(live, {"rule": "tiered", "key": "u2", "attrs": {"role": "READER"}}).json()["allowed"] for _ in range(3)
    ]
    assert owner == [True] * 6 + [False]
    assert reader == [True, True, False]


def test_status_consumes_nothing(live: LiveServer) -> None:
    post(live, {"rule": "api", "key": "k"})
    for _ in range(3):
        r = httpx.get(live.url + "/v1/status", params={"rule": "api", "key": "k"})
        assert r.status_code == 200
        assert [w["remaining"] for w in r.json()["windows"]] == [4, 7]
    info = httpx.get(live.url + "/v1/status").json()
    assert info["rules"] == ["api", "login", "tiered"] and info["storage"] == "memory"
    assert httpx.get(live.url + "/v1/status", params={"rule": "nope", "key": "k"}).json()["field"] == "rule"
    assert httpx.get(live.url + "/v1/status", params={"rule": "api"}).json()["field"] == "key"


def test_reset_needs_the_admin_token(live: LiveServer) -> None:
    for _ in range(3):
        post(live, {"rule": "login", "key": "dave"})
    assert post(live, {"rule": "login", "key": "dave"}).json()["allowed"] is False
    body = {"rule": "login", "key": "dave"}
    r = httpx.post(live.url + "/v1/reset", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = httpx.post(live.url + "/v1/reset", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403
    r = httpx.post(live.url + "/v1/reset", json=body, headers={"Authorization": "Basic " + TOKEN})
    assert r.status_code == 401
    assert post(live, {"rule": "login", "key": "dave"}).json()["allowed"] is False  # still limited
    r = httpx.post(live.url + "/v1/reset", json=body, headers={"Authorization": "Bearer " + TOKEN})
    assert r.status_code == 200 and r.json()["reset"] is True
    assert post(live, {"rule": "login", "key": "dave"}).json()["allowed"] is True
    r = httpx.post(live.url + "/v1/reset", json={"rule": "x", "key": "y"}, headers={"Authorization": "Bearer " + TOKEN})
    assert r.status_code == 400 and r.json()["field"] == "rule"


def test_reset_is_refused_when_no_token_is_configured(clock: FakeClock) -> None:
    with LiveServer(Service(POLICY, clock=clock), grpc=False) as live:
        r = httpx.post(
            live.url + "/v1/reset", json={"rule": "login", "key": "a"}, headers={"Authorization": "Bearer x"}
        )
        assert r.status_code == 403


BAD: list[tuple[bytes, str | None]] = [
    (b"{not json", None),
    (b"[1, 2]", None),
    (b'"text"', None),
    (b"null", None),
    (b"\xff\xfe", None),
    (b'{"rule": "login", "key": "a", "cost": NaN}', None),
    (b'{"rule": "login", "key": "a", "cost": Infinity}', None),
    (b'{"key": "a"}', "rule"),
    (b'{"rule": "nope", "key": "a"}', "rule"),
    (b'{"rule": 5, "key": "a"}', "rule"),
    (b'{"rule": "login"}', "key"),
    (b'{"rule": "login", "key": ""}', "key"),
    (b'{"rule": "login", "key": 7}', "key"),
    (b'{"rule": "login", "key": "a", "cost": -1}', "cost"),
    (b'{"rule": "login", "key": "a", "cost": 1.5}', "cost"),
    (b'{"rule": "login", "key": "a", "cost": 1.0}', "cost"),
    (b'{"rule": "login", "key": "a", "cost": true}', "cost"),
    (b'{"rule": "login", "key": "a", "cost": "2"}', "cost"),
    (b'{"rule": "login", "key": "a", "cost": 1e400}', "cost"),
    (b'{"rule": "login", "key": "a", "cost": 99999999999999999999999}', "cost"),
    (b'{"rule": "login", "key": "a", "extra": 1}', "extra"),
    (b'{"rule": "login", "key": "a", "attrs": {"role": 1}}', "attrs"),
    (b'{"request": 5}', "request"),
    (b'{"request": {}}', "request.path"),
    (b'{"request": {"path": "nope"}}', "request.path"),
    (b'{"request": {"path": "/", "headers": {"a": 1}}}', "request.headers"),
    (b'{"request": {"path": "/", "headers": []}}', "request.headers"),
    (b'{"request": {"path": "/", "scheme": "gopher"}}', "request.scheme"),
    (b'{"request": {"path": "/", "bogus": 1}}', "request.bogus"),
    (b'{"request": {"path": "/"}, "rule": "login"}', "rule"),
]


@pytest.mark.parametrize(("raw", "field"), BAD)
def test_client_mistakes_are_400_with_the_field(live: LiveServer, raw: bytes, field: str | None) -> None:
    r = httpx.post(live.url + "/v1/check", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"error", "field"} and body["field"] == field and body["error"]


def test_an_oversized_body_is_413(live: LiveServer) -> None:
    big = json.dumps({"rule": "login", "key": "x" * 70_000})
    r = httpx.post(live.url + "/v1/check", content=big)
    assert r.status_code == 413 and r.json()["field"] is None

    def chunks() -> Any:  # no content-length: the cap holds while streaming
        for _ in range(100):
            yield b" " * 1024

    r = httpx.post(live.url + "/v1/check", content=chunks())
    assert r.status_code == 413


def test_unknown_paths_and_methods(live: LiveServer) -> None:
    assert httpx.get(live.url + "/v1/check").status_code == 405
    assert httpx.get(live.url + "/nope").status_code == 404
    spec = httpx.get(live.url + "/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/v1/check" in spec["paths"]


def test_healthz_is_503_when_the_store_does_not_answer(clock: FakeClock) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with LiveServer(Service(POLICY, storage=dead), grpc=False) as live:
        r = httpx.get(live.url + "/healthz")
        assert r.status_code == 503
        # decisions still come, as on_store_error says (allow), never a 5xx
        a = httpx.post(live.url + "/v1/check", json={"rule": "login", "key": "z"})
        assert a.status_code == 200 and a.json()["allowed"] is True
    with LiveServer(Service(POLICY, clock=clock), grpc=False) as live:
        assert httpx.get(live.url + "/healthz").json() == {"status": "ok"}


# -- the same answers as the middleware --------------------------------------------------------

SEQUENCE = [
    ("POST", "/login", "198.51.100.1", {"content-type": "application/json"}, '{"email": "Eve@Example.com"}'),
    ("POST", "/login", "198.51.100.2", {"content-type": "application/json"}, '{"email": "eve@example.com"}'),
    ("POST", "/login", "198.51.100.3", {"content-type": "application/json"}, '{"email": "EVE@example.com"}'),
    ("POST", "/login", "198.51.100.4", {"content-type": "application/json"}, '{"email": "eve@example.COM"}'),
    ("POST", "/login", "198.51.100.4", {}, ""),
    *[("GET", "/api/items", "198.51.100.9", {}, "") for _ in range(7)],
    ("GET", "/api/items", "203.0.113.5", {}, ""),
    ("GET", "/other", "198.51.100.9", {}, ""),
]


def _middleware_app(clock: FakeClock) -> Any:
    async def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/{p:path}", ok, methods=["GET", "POST"])])
    return RateLimitMiddleware(app, policy=POLICY, clock=clock)


async def test_request_facts_get_the_middlewares_answers(live: LiveServer, clock: FakeClock) -> None:
    mw_clock = FakeClock(clock())
    mw = _middleware_app(mw_clock)
    step = 0
    async with httpx.AsyncClient() as svc:
        for method, path, ip, headers, body in SEQUENCE:
            step += 1
            transport = httpx.ASGITransport(app=mw, client=(ip, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as direct:
                m = await direct.request(method, path, headers=headers, content=body)
            req = {"method": method, "path": path, "ip": ip, "headers": headers, "body": body}
            s = (await svc.post(live.url + "/v1/check", json={"request": req})).json()
            assert s["status"] == m.status_code, (step, s)
            assert s["allowed"] == (m.status_code == 200)
            for name, value in s["headers"].items():
                assert m.headers.get(name) == value, (step, name)
            if m.status_code != 200:
                assert s["body"] == m.json()
            clock.advance(1.5)
            mw_clock.advance(1.5)
