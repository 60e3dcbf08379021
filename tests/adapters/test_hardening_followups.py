"""What a hostile client tries next, once the first bypasses are closed: proxy-header parameter
names in another letter case, a proxy header or a cookie sent on two lines, and a form whose
*other* fields carry bytes that are not UTF-8. Each time the key must be the value the handler
acts on, never the fallback an attacker can rotate (a fresh address per request)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ratewarden import FakeClock
from ratewarden.asgi import RateLimitMiddleware
from ratewarden.engine import Engine, RequestFacts

FORWARDED = """
[ratewarden]
trusted_proxies = ["10.0.0.0/8"]
proxy_header = "forwarded"

[[rule]]
name = "all"
limits = ["3/hour"]
algorithm = "fixed-window"
"""


@pytest.mark.parametrize("name", ["For", "FOR", "fOr"])
def test_forwarded_parameter_names_in_any_letter_case(clock: FakeClock, name: str) -> None:
    """RFC 7239 parameter names are case-insensitive: a proxy writing ``For=`` names the client;
    reading it as malformed would put every client behind that proxy in one bucket."""
    e = Engine(FORWARDED, clock=clock, env={})
    try:
        got = []
        for i in range(4):
            h = {"forwarded": f"{name}=203.0.113.{i}, {name}=198.51.100.{i % 2}"}
            got.append(e.check(RequestFacts("GET", "/", "10.0.0.1", headers=h)).allowed)
        assert got == [True, True, True, True], "two clients, 2 requests each: neither is limited"
        h = {"forwarded": f'{name}="[2001:db8::1]:4711"'}
        assert [e.check(RequestFacts("GET", "/", "10.0.0.1", headers=h)).allowed for _ in range(4)] == [
            True,
            True,
            True,
            False,
        ]
    finally:
        e.close()


async def _call(
    app: Any, headers: list[tuple[bytes, bytes]], client: str, method: str = "GET", body: bytes = b""
) -> int:
    sent: list[dict[str, Any]] = []
    done = False

    async def receive() -> dict[str, Any]:
        nonlocal done
        if done:
            return {"type": "http.disconnect"}
        done = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "headers": headers,
        "client": (client, 1234),
        "server": ("testserver", 80),
        "scheme": "http",
        "http_version": "1.1",
        "root_path": "",
    }
    await app(scope, receive, send)
    return int(sent[0]["status"])


SEEN: list[Any] = []


async def _echo(request: Request) -> JSONResponse:
    if request.method == "POST":
        form = await request.form()
        SEEN.append(form.get("email"))
    else:
        SEEN.append(request.cookies.get("sid"))
    return JSONResponse({})


def _app(policy: str, clock: FakeClock) -> Any:
    return RateLimitMiddleware(
        Starlette(routes=[Route("/echo", _echo, methods=["GET", "POST"])]), policy=policy, clock=clock, env={}
    )


async def test_a_forwarded_header_on_two_lines_is_read_from_the_proxy_line(clock: FakeClock) -> None:
    """The client's ``Forwarded`` line first, the proxy's own line after it: every line is one
    list, walked from the right (the first line alone is the client's choice)."""
    app = _app(FORWARDED, clock)
    codes = []
    for i in range(5):
        h = [(b"forwarded", f"for=203.0.113.{i}".encode()), (b"forwarded", b"for=198.51.100.7")]
        codes.append(await _call(app, h, "10.0.0.1"))
    assert codes == [200, 200, 200, 429, 429]


SESSION = """
[[rule]]
name = "s"
key = "cookie:sid"
fallback = "ip"
limits = ["3/hour"]
algorithm = "fixed-window"
"""


async def test_a_cookie_on_two_lines_is_keyed_by_the_value_starlette_hands_the_handler(clock: FakeClock) -> None:
    """Starlette reads every ``Cookie`` line, the last value of a name winning: a random value on
    the first line must not be the key while the handler acts on the second."""
    app = _app(SESSION, clock)
    SEEN.clear()
    codes = []
    for i in range(5):
        h = [(b"cookie", f"sid=r{i}".encode()), (b"cookie", b"sid=victim")]
        codes.append(await _call(app, h, f"203.0.113.{i + 1}"))
    assert set(SEEN) == {"victim"}
    assert codes == [200, 200, 200, 429, 429]


LOGIN = """
[[rule]]
name = "login"
key = "body:email"
fallback = "ip"
limits = ["3/hour"]
algorithm = "fixed-window"
"""


def _form(*fields: tuple[str, bytes]) -> bytes:
    """A ``multipart/form-data`` body (boundary ``rwb``) of text fields."""
    parts = [
        b'--rwb\r\nContent-Disposition: form-data; name="' + k.encode() + b'"\r\n\r\n' + v + b"\r\n" for k, v in fields
    ]
    return b"".join(parts) + b"--rwb--\r\n"


def _multipart(pad: bytes) -> bytes:
    return _form(("email", b"victim"), ("pad", pad))


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("application/x-www-form-urlencoded", lambda i: b"email=victim&pad=\xff" + str(i).encode()),
        ("application/x-www-form-urlencoded", lambda i: b"pad=\xc3\x28" + str(i).encode() + b"&email=victim"),
        ("multipart/form-data; boundary=rwb", lambda i: _multipart(b"\xff" + str(i).encode())),
        ("multipart/form-data; boundary=rwb; charset=no-such-codec", lambda i: _multipart(str(i).encode())),
        # a field sent twice: Starlette's form (python-multipart) keeps the last one
        ("application/x-www-form-urlencoded", lambda i: f"email=r{i}&email=victim".encode()),
        ("multipart/form-data; boundary=rwb", lambda i: _form(("email", f"r{i}".encode()), ("email", b"victim"))),
    ],
)
async def test_a_form_with_bytes_that_are_not_utf8_is_keyed_as_starlette_reads_it(
    clock: FakeClock, ctype: str, body: Any
) -> None:
    """Starlette decodes a form's bytes as Latin-1 where they are not in the request's charset:
    the handler gets ``email=victim``. Reading the whole body as unreadable instead took the
    fallback key, so an attacker with a fresh address per request had every attempt admitted."""
    pytest.importorskip("python_multipart")
    app = _app(LOGIN, clock)
    SEEN.clear()
    codes = []
    for i in range(5):
        h = [(b"content-type", ctype.encode())]
        codes.append(await _call(app, h, f"203.0.113.{i + 1}", "POST", body(i)))
    assert set(SEEN) == {"victim"}
    assert codes == [200, 200, 200, 429, 429]


async def test_a_json_body_sent_with_a_form_type_is_keyed_by_its_json_field(clock: FakeClock) -> None:
    """Starlette's ``request.json()`` reads the body whatever its ``Content-Type``: a JSON body
    labelled as a form must not lose its ``email`` and take the fallback key (a fresh address per
    request had every attempt admitted)."""

    async def login(request: Request) -> JSONResponse:
        SEEN.append((await request.json()).get("email"))
        return JSONResponse({})

    app = RateLimitMiddleware(
        Starlette(routes=[Route("/echo", login, methods=["POST"])]), policy=LOGIN, clock=clock, env={}
    )
    SEEN.clear()
    codes = []
    for i in range(5):
        h = [(b"content-type", b"application/x-www-form-urlencoded")]
        codes.append(await _call(app, h, f"203.0.113.{i + 1}", "POST", b'{"email": "victim"}'))
    assert set(SEEN) == {"victim"}
    assert codes == [200, 200, 200, 429, 429]


@pytest.mark.parametrize("prefix", [64, 128])
def test_an_ipv6_zone_never_mints_a_key(clock: FakeClock, prefix: int) -> None:
    """``2001:db8::1%1``, ``%2``...: the zone names an interface of the host that wrote it; read
    into the key it gave an address counted per /128 a fresh bucket per request."""
    policy = (
        f'[ratewarden]\ntrusted_proxies = ["10.0.0.0/8"]\nipv6_prefix = {prefix}\nreadable_keys = ["ip"]\n'
        '[[rule]]\nname = "all"\nlimits = ["3/hour"]\nalgorithm = "fixed-window"\n'
    )
    e = Engine(policy, clock=clock, env={})
    try:
        xff = [
            e.check(RequestFacts("GET", "/", "10.0.0.1", headers={"x-forwarded-for": f"[2001:db8::1%{i}]:80"}))
            for i in range(5)
        ]
        assert [v.allowed for v in xff] == [True, True, True, False, False]
        peer = [e.check(RequestFacts("GET", "/", f"2001:db8:1::2%{i}")).allowed for i in range(5)]
        assert peer == [True, True, True, False, False]
    finally:
        e.close()
