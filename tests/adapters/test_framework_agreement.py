"""Request-side hardening through the real frameworks: the key and the route ratewarden counts
are the ones the framework hands the handler (Starlette, FastAPI, Flask/Werkzeug, Django)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from flask import Flask, jsonify
from flask import request as flask_request
from rw_django_views import configure
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ratewarden import FakeClock
from ratewarden.asgi import RateLimitMiddleware
from ratewarden.engine import Engine
from ratewarden.fastapi import RateLimit
from ratewarden.flask import RateWarden

DJANGO_MIDDLEWARE = ["ratewarden.django.RateLimitMiddleware"]


def DjangoClient(**kw: Any) -> Any:
    from django.test import Client

    return Client(**kw)


@pytest.fixture
def django_policy(clock: FakeClock) -> Iterator[Any]:
    # configured at test time, not import time: another test module may configure Django first
    configure()
    from django.test import override_settings

    def use(policy: str) -> Any:
        return override_settings(
            RATEWARDEN_POLICY=policy,
            RATEWARDEN_OPTIONS={"clock": clock, "env": {}},
            ROOT_URLCONF="rw_django_views",
            MIDDLEWARE=DJANGO_MIDDLEWARE,
        )

    yield use


# -- paths: the route the router runs ------------------------------------------------------------

USER_POSTS = """
[[rule]]
name = "user-posts"
match = { path = "/users/{id}/posts" }
limits = ["3/hour"]
algorithm = "fixed-window"
"""


async def st_user_posts(request: Request) -> JSONResponse:
    return JSONResponse({"handler": "user-posts", "id": request.path_params["id"]})


async def st_posts(request: Request) -> JSONResponse:
    return JSONResponse({"handler": "posts"})


def test_starlette_dot_dot_segment_is_counted_by_the_route_it_runs(clock: FakeClock) -> None:
    app = Starlette(
        routes=[Route("/users/{id}/posts", st_user_posts), Route("/posts", st_posts)],
        middleware=[Middleware(RateLimitMiddleware, policy=USER_POSTS, clock=clock, env={})],
    )
    with TestClient(app) as c:
        got = [c.get("/users/%2e%2e/posts") for _ in range(4)]
    assert [r.json() for r in got[:3]] == [{"handler": "user-posts", "id": ".."}] * 3
    assert [r.status_code for r in got] == [200, 200, 200, 429]


def test_flask_dot_dot_segment_is_counted_by_the_route_it_runs(clock: FakeClock) -> None:
    app = Flask(__name__)

    @app.route("/users/<id>/posts")
    def user_posts(id: str) -> Any:
        return jsonify(handler="user-posts", id=id)

    RateWarden(app, policy=USER_POSTS, clock=clock, env={})
    c = app.test_client()
    got = [c.get("/users/%2e%2e/posts") for _ in range(4)]
    assert [r.get_json() for r in got[:3]] == [{"handler": "user-posts", "id": ".."}] * 3
    assert [r.status_code for r in got] == [200, 200, 200, 429]


def test_django_dot_dot_segment_is_counted_by_the_route_it_runs(django_policy: Any) -> None:
    with django_policy(USER_POSTS):
        c = DjangoClient(REMOTE_ADDR="198.51.100.7")
        got = [c.get("/users/%2e%2e/posts") for _ in range(4)]
    assert [r.json() for r in got[:3]] == [{"handler": "user-posts", "id": ".."}] * 3
    assert [r.status_code for r in got] == [200, 200, 200, 429]


# -- HEAD is counted by a GET rule ----------------------------------------------------------------

GET_RULE = """
[[rule]]
name = "reads"
match = { path = "/posts", methods = ["GET"] }
limits = ["3/hour"]
algorithm = "fixed-window"
"""


def test_head_counts_against_get_in_starlette_flask_and_django(clock: FakeClock, django_policy: Any) -> None:
    app = Starlette(
        routes=[Route("/posts", st_posts)],
        middleware=[Middleware(RateLimitMiddleware, policy=GET_RULE, clock=clock, env={})],
    )
    with TestClient(app) as c:
        assert [c.head("/posts").status_code for _ in range(4)] == [200, 200, 200, 429]
    fapp = Flask(__name__)
    fapp.add_url_rule("/posts", "posts", lambda: "posts")
    RateWarden(fapp, policy=GET_RULE, clock=clock, env={})
    fc = fapp.test_client()
    assert [fc.head("/posts").status_code for _ in range(4)] == [200, 200, 200, 429]
    with django_policy(GET_RULE):
        dc = DjangoClient(REMOTE_ADDR="198.51.100.7")
        assert [dc.head("/posts").status_code for _ in range(4)] == [200, 200, 200, 429]


# -- legacy headers: one value, the most restrictive window --------------------------------------

LEGACY = """
[ratewarden]
headers = "legacy"

[[rule]]
name = "site"
limits = ["50/hour"]
algorithm = "fixed-window"
"""


def test_flask_policy_and_view_limit_give_one_legacy_value(clock: FakeClock) -> None:
    app = Flask(__name__)
    rw = RateWarden(app, policy=LEGACY, clock=clock, env={})

    @app.route("/report")
    @rw.limit("10/hour", key="ip")
    def report() -> str:
        return "ok"

    r = app.test_client().get("/report")
    assert r.status_code == 200
    assert r.headers.getlist("X-RateLimit-Limit") == ["10"]
    assert r.headers.getlist("X-RateLimit-Remaining") == ["9"]
    assert len(r.headers.getlist("X-RateLimit-Reset")) == 1


def test_fastapi_middleware_and_dependency_give_one_legacy_value(clock: FakeClock) -> None:
    app = FastAPI()
    engine = Engine(LEGACY, clock=clock, env={})
    app.add_middleware(RateLimitMiddleware, engine=engine)

    @app.get("/report", dependencies=[Depends(RateLimit("10/hour", key="ip", engine=engine))])
    async def report() -> dict[str, str]:
        return {"ok": "yes"}

    with TestClient(app) as c:
        r = c.get("/report")
    assert r.status_code == 200
    assert r.headers.get_list("x-ratelimit-limit") == ["10"]
    assert r.headers.get_list("x-ratelimit-remaining") == ["9"]
    assert len(r.headers.get_list("x-ratelimit-reset")) == 1


def test_django_middleware_and_view_limit_give_one_legacy_value(django_policy: Any) -> None:
    with django_policy(LEGACY):
        r = DjangoClient(REMOTE_ADDR="198.51.100.7").get("/report")
    assert r.status_code == 200
    assert (r["X-RateLimit-Limit"], r["X-RateLimit-Remaining"]) == ("10", "9")


def test_draft_headers_of_two_checks_are_both_kept(clock: FakeClock) -> None:
    app = Flask(__name__)
    rw = RateWarden(app, policy=LEGACY.replace('"legacy"', '"both"'), clock=clock, env={})

    @app.route("/report")
    @rw.limit("10/hour", key="ip", name="report")
    def report() -> str:
        return "ok"

    r = app.test_client().get("/report")
    assert r.headers.getlist("RateLimit-Policy") == ['"site";q=50;w=3600', '"report";q=10;w=3600']
    assert r.headers.getlist("X-RateLimit-Limit") == ["10"]


# -- cookie:, query:, body: keys are what the handler gets ---------------------------------------

FIELDS = """
[[rule]]
name = "q"
match = { path = "/echo", methods = ["GET"] }
key = "query:email"
fallback = "skip"
limits = ["3/hour"]
algorithm = "fixed-window"

[[rule]]
name = "c"
match = { path = "/echo", methods = ["PUT"] }
key = "cookie:sid"
fallback = "skip"
limits = ["3/hour"]
algorithm = "fixed-window"

[[rule]]
name = "b"
match = { path = "/echo", methods = ["POST"] }
key = "body:email"
fallback = "skip"
limits = ["3/hour"]
algorithm = "fixed-window"
"""

FORM = "application/x-www-form-urlencoded"
BOUNDARY = "rwboundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(*fields: tuple[str, str]) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields]
    return ("".join(parts) + f"--{BOUNDARY}--\r\n").encode()


def _cases(first_wins: bool) -> list[tuple[str, str, Any]]:
    """(method, what the handler reports, request keywords for attempt i): the handler gets
    ``victim`` every time while the part it ignores changes."""
    dup = (lambda i: f"email=victim&email=r{i}") if first_wins else (lambda i: f"email=r{i}&email=victim")
    sid = (lambda i: f"sid=victim; sid=r{i}") if first_wins else (lambda i: f"sid=r{i}; sid=victim")
    fields = [("email", "victim"), ("email", "r")] if first_wins else [("email", "r"), ("email", "victim")]
    return [
        ("GET", "query", lambda i: {"query": dup(i)}),
        ("PUT", "cookie", lambda i: {"cookie": sid(i)}),
        ("PUT", "cookie", lambda i: {"cookie": f'x="a\\"b{i}; sid=victim'}),  # malformed before the real one
        ("POST", "form", lambda i: {"body": dup(i).encode(), "ctype": FORM}),
        ("POST", "form", lambda i: {"body": multipart(*fields, ("pad", str(i))), "ctype": MULTIPART}),
        (
            "POST",
            "json",
            lambda i: {"body": f'{{"email": "victim", "p": {i}}}'.encode("utf-16"), "ctype": "application/json"},
        ),
        (
            "POST",
            "json",
            lambda i: {"body": f'{{"email": "victim", "p": {i}}}'.encode("utf-8-sig"), "ctype": "application/json"},
        ),
    ]


def _flask_app(clock: FakeClock) -> Flask:
    app = Flask(__name__)

    @app.route("/echo", methods=["GET", "PUT", "POST"])
    def echo() -> Any:
        return jsonify(
            query=flask_request.args.get("email"),
            cookie=flask_request.cookies.get("sid"),
            form=flask_request.form.get("email"),
            json=(flask_request.get_json(silent=True) or {}).get("email"),
        )

    RateWarden(app, policy=FIELDS, clock=clock, env={})
    return app


@pytest.mark.parametrize("case", range(7))
def test_flask_keys_are_what_werkzeug_hands_the_view(clock: FakeClock, case: int) -> None:
    method, seen, make = _cases(first_wins=True)[case]
    c = _flask_app(clock).test_client(use_cookies=False)
    got = []
    for i in range(5):
        kw = make(i)
        headers = {"Cookie": kw["cookie"]} if "cookie" in kw else {}
        r = c.open(
            "/echo?" + kw.get("query", ""),
            method=method,
            data=kw.get("body"),
            content_type=kw.get("ctype"),
            headers=headers,
            environ_base={"REMOTE_ADDR": f"203.0.113.{i + 1}"},
        )
        if r.status_code == 200:
            assert r.get_json()[seen] == "victim", r.get_json()
        got.append(r.status_code)
    assert got == [200, 200, 200, 429, 429]


@pytest.mark.parametrize("case", range(7))
def test_django_keys_are_what_django_hands_the_view(django_policy: Any, case: int) -> None:
    method, seen, make = _cases(first_wins=False)[case]
    got = []
    with django_policy(FIELDS):
        for i in range(5):
            kw = make(i)
            c = DjangoClient(REMOTE_ADDR=f"203.0.113.{i + 1}")
            extra = {"HTTP_COOKIE": kw["cookie"]} if "cookie" in kw else {}
            r = c.generic(
                method,
                "/echo?" + kw.get("query", ""),
                data=kw.get("body", b""),
                content_type=kw.get("ctype", "application/octet-stream"),
                **extra,
            )
            if r.status_code == 200:
                assert r.json()[seen] == "victim", r.json()
            got.append(r.status_code)
    assert got == [200, 200, 200, 429, 429]


def test_django_reads_json_sent_as_text_plain_as_its_views_do(django_policy: Any) -> None:
    got = []
    with django_policy(FIELDS):
        for i in range(5):
            c = DjangoClient(REMOTE_ADDR=f"203.0.113.{i + 1}")
            r = c.post("/echo", data=f'{{"email": "victim", "p": {i}}}', content_type="text/plain")
            got.append(r.status_code)
            if r.status_code == 200:
                assert r.json()["json"] == "victim"
    assert got == [200, 200, 200, 429, 429]


async def st_echo(request: Request) -> JSONResponse:
    data = await request.json() if request.method == "POST" else {}
    return JSONResponse(
        {"query": request.query_params.get("email"), "cookie": request.cookies.get("sid"), "json": data.get("email")}
    )


@pytest.mark.parametrize("case", [0, 1, 2, 5, 6])
def test_starlette_keys_are_what_starlette_hands_the_handler(clock: FakeClock, case: int) -> None:
    method, seen, make = _cases(first_wins=False)[case]
    app = Starlette(
        routes=[Route("/echo", st_echo, methods=["GET", "PUT", "POST"])],
        middleware=[Middleware(RateLimitMiddleware, policy=FIELDS, clock=clock, env={})],
    )
    got = []
    with TestClient(app) as c:
        for i in range(5):
            kw = make(i)
            headers = {"cookie": kw["cookie"]} if "cookie" in kw else {}
            if "ctype" in kw:
                headers["content-type"] = kw["ctype"]
            r = c.request(method, "/echo?" + kw.get("query", ""), content=kw.get("body"), headers=headers)
            if r.status_code == 200:
                assert r.json()[seen] == "victim", r.json()
            got.append(r.status_code)
    assert got == [200, 200, 200, 429, 429]


def test_an_oversize_body_is_refused_with_413_through_starlette_and_flask(clock: FakeClock) -> None:
    policy = """
[ratewarden]
body_limit = 64

[[rule]]
name = "b"
match = { path = "/echo", methods = ["POST"] }
key = "body:email"
limits = ["3/hour"]
on_oversize_body = "deny"
"""
    big = b'{"email": "victim", "pad": "' + b"x" * 200 + b'"}'
    app = Starlette(
        routes=[Route("/echo", st_echo, methods=["POST"])],
        middleware=[Middleware(RateLimitMiddleware, policy=policy, clock=clock, env={})],
    )
    with TestClient(app) as c:
        r = c.post("/echo", content=big, headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["error"]) == (413, "body_too_large")
        assert c.post("/echo", content=b'{"email": "victim"}').status_code == 200
    fapp = _flask_app(clock)
    RateWarden(fapp, policy=policy, clock=clock, env={})
    fr = fapp.test_client().post("/echo", data=big, content_type="application/json")
    assert fr.status_code == 413


def test_flask_keys_a_repeated_header_by_the_joined_value_its_view_gets(clock: FakeClock) -> None:
    """Under WSGI the lines are joined before any code runs: ``request.headers`` gives the view
    ``"real-key, junk"``, and that is the key (one line or two, the same bucket)."""
    policy = '[[rule]]\nname = "k"\nkey = "header:X-Api-Key"\nfallback = "skip"\nlimits = ["2/hour"]\n'
    app = Flask(__name__)

    @app.route("/k")
    def k() -> Any:
        return jsonify(key=flask_request.headers.get("X-Api-Key"))

    RateWarden(app, policy=policy, clock=clock, env={})
    c = app.test_client()
    first = c.get("/k", headers=[("X-Api-Key", "real-key"), ("X-Api-Key", "junk")])
    assert first.get_json() == {"key": "real-key, junk"}
    assert c.get("/k", headers={"X-Api-Key": "real-key, junk"}).status_code == 200
    assert c.get("/k", headers=[("X-Api-Key", "real-key"), ("X-Api-Key", "junk")]).status_code == 429
    assert c.get("/k", headers={"X-Api-Key": "real-key"}).status_code == 200, "another value, another key"


def test_starlette_handler_and_key_take_the_first_of_repeated_header_lines(clock: FakeClock) -> None:
    policy = '[[rule]]\nname = "k"\nkey = "header:X-Api-Key"\nfallback = "skip"\nlimits = ["3/hour"]\n'

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"key": request.headers["x-api-key"]})

    app = Starlette(
        routes=[Route("/k", whoami)], middleware=[Middleware(RateLimitMiddleware, policy=policy, clock=clock, env={})]
    )
    with TestClient(app) as c:
        got = [c.get("/k", headers=[("X-Api-Key", "real-key"), ("X-Api-Key", f"junk-{i}")]) for i in range(5)]
    assert got[0].json() == {"key": "real-key"}
    assert [r.status_code for r in got] == [200, 200, 200, 429, 429]


async def test_every_x_forwarded_for_line_is_read_so_a_client_line_cannot_hide_the_proxy_line(
    clock: FakeClock,
) -> None:
    """A proxy that adds its own X-Forwarded-For line after the client's: the walk from the right
    must see the proxy's line (the first line alone would be the client's choice)."""
    policy = '[ratewarden]\ntrusted_proxies = ["10.0.0.0/8"]\n[[rule]]\nname = "ip"\nlimits = ["3/hour"]\n'
    app = RateLimitMiddleware(st_posts_app(), policy=policy, clock=clock, env={})
    codes = []
    for i in range(5):
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        headers = [(b"x-forwarded-for", f"203.0.113.{i}".encode()), (b"x-forwarded-for", b"198.51.100.7")]
        scope = {"type": "http", "method": "GET", "path": "/posts", "headers": headers, "client": ("10.0.0.1", 1)}
        await app(scope, receive, send)
        codes.append(sent[0]["status"])
    assert codes == [200, 200, 200, 429, 429]


def st_posts_app() -> Starlette:
    return Starlette(routes=[Route("/posts", st_posts)])
