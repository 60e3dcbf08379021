"""Bad input end to end through the ASGI and WSGI middleware with the real engine: malformed
proxy headers, a 1 MiB header, invalid JSON and oversized bodies for a ``body:`` rule,
non-UTF-8 and dot-segment paths. Never a 500 from the middleware, never a bypass."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.test import Client

from ratewarden import FakeClock
from ratewarden.asgi import RateLimitMiddleware as ASGILimit
from ratewarden.wsgi import RateLimitMiddleware as WSGILimit

POLICY = str(Path(__file__).parent / "policies" / "bad_input.toml")
MIB = 1024 * 1024


async def asgi_echo(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def wsgi_echo(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


Send = Callable[..., tuple[int, bytes]]


def asgi_sender(clock: FakeClock, loop: asyncio.AbstractEventLoop) -> Send:
    app = ASGILimit(asgi_echo, policy=POLICY, clock=clock)

    def send(
        method: str, path: str, ip: str = "198.51.100.7", body: bytes = b"", headers: Any = None
    ) -> tuple[int, bytes]:
        async def go() -> tuple[int, bytes]:
            transport = httpx.ASGITransport(app=app, client=(ip, 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                r = await c.request(method, path, content=body, headers=headers)
                return r.status_code, r.content

        return loop.run_until_complete(go())

    return send


def wsgi_sender(clock: FakeClock) -> Send:
    client = Client(WSGILimit(wsgi_echo, policy=POLICY, clock=clock))

    def send(
        method: str, path: str, ip: str = "198.51.100.7", body: bytes = b"", headers: Any = None
    ) -> tuple[int, bytes]:
        r = client.open(path, method=method, data=body, headers=headers or {}, environ_base={"REMOTE_ADDR": ip})
        out = (r.status_code, r.get_data())
        r.close()
        return out

    return send


@pytest.fixture(params=["asgi", "wsgi"])
def send(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Send]:
    if request.param == "wsgi":
        yield wsgi_sender(clock)
        return
    loop = asyncio.new_event_loop()
    try:
        yield asgi_sender(clock, loop)
    finally:
        loop.close()


def statuses(send: Send, n: int, *args: Any, **kw: Any) -> list[int]:
    return [send(*args, **kw)[0] for _ in range(n)]


def test_invalid_json_in_a_body_rule_falls_back_to_the_ip(send: Send) -> None:
    results = [
        send("POST", "/login", body=b'{"email": "a@x' + bytes([i]) + b'"', headers={"content-type": "application/json"})
        for i in range(3)
    ]
    assert [s for s, _ in results] == [200, 200, 429]  # rotating garbage: one bucket (the IP)
    assert results[0][1] == b'{"email": "a@x\x00"'  # the app got the body unchanged


def test_a_body_above_the_cap_is_passed_on_whole_and_still_limited(send: Send) -> None:
    big = json.dumps({"email": "a@example.com", "pad": "x" * 5000}).encode()
    results = [send("POST", "/login", body=big, headers={"content-type": "application/json"}) for _ in range(3)]
    assert [s for s, _ in results] == [200, 200, 429]
    assert results[0][1] == big


def test_valid_json_bodies_are_keyed_by_the_lower_cased_field(send: Send) -> None:
    h = {"content-type": "application/json"}
    assert send("POST", "/login", body=b'{"email": "A@X.io"}', headers=h)[0] == 200
    assert send("POST", "/login", ip="198.51.100.8", body=b'{"email": "a@x.IO"}', headers=h)[0] == 200
    assert send("POST", "/login", ip="198.51.100.9", body=b'{"email": "a@X.io"}', headers=h)[0] == 429
    assert (
        send("POST", "/login", body=b"email=b%40x.io", headers={"content-type": "application/x-www-form-urlencoded"})[0]
        == 200
    )


def test_a_one_mebibyte_header_neither_crashes_nor_escapes(send: Send) -> None:
    huge = "k" * MIB
    assert statuses(send, 3, "GET", "/keyed", headers={"X-Api-Key": huge}) == [200, 200, 429]
    assert statuses(send, 4, "GET", "/api/x", headers={"X-Junk": "j" * MIB}) == [200, 200, 200, 429]


@pytest.mark.parametrize(
    "xff",
    [
        "not-an-ip",
        "1.2.3.4, , ,",
        "[::1, 999.1.1.1",
        "\x00\x01garbage",
        ", ".join(f"192.0.2.{i}" for i in range(200)),
        "x" * MIB,
    ],
)
def test_malformed_forwarded_headers_from_a_trusted_proxy(send: Send, xff: str) -> None:
    hs = {"X-Forwarded-For": xff, "Forwarded": f'for={xff[:100]};proto=http, for="[bad'}
    assert statuses(send, 4, "GET", "/api/x", ip="10.0.0.1", headers=hs) == [200, 200, 200, 429]


def test_spoofed_forwarded_for_from_an_untrusted_peer(send: Send) -> None:
    codes = [send("GET", "/api/x", headers={"X-Forwarded-For": f"203.0.113.{i}"})[0] for i in range(4)]
    assert codes == [200, 200, 200, 429]


def test_non_utf8_and_dot_segment_paths(send: Send) -> None:
    paths = ["/api/%FF%FE", "/api/caf%C3", "/api//./x", "/x/../api/x"]
    assert [send("GET", p)[0] for p in paths] == [200, 200, 200, 429]  # all count against /api/*


def test_ipv6_clients_in_one_64_share_a_limit(send: Send) -> None:
    codes = [send("GET", "/api/x", ip=f"2001:db8:1:2::{i:x}")[0] for i in range(1, 1001)]
    assert codes[:3] == [200, 200, 200]
    assert set(codes[3:]) == {429}
    assert send("GET", "/api/x", ip="2001:db8:1:3::1")[0] == 200


async def test_dot_segments_and_surrogates_in_a_raw_asgi_scope(clock: FakeClock) -> None:
    """httpx normalises dot segments before sending, so the raw scope is built by hand here."""
    app = ASGILimit(asgi_echo, policy=POLICY, clock=clock)
    codes: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    for path in ["/x/../api/x", "//api/./x", "/api/\udcff", "/./api/%2e%2e/x"]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "headers": [], "client": ("198.51.100.7", 1)}
        await app(scope, receive, send)
        codes.append(sent[0]["status"])
    assert codes == [200, 200, 200, 429]
