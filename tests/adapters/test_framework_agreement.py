"""Request-side hardening through the real frameworks: the key and the route ratewarden counts
are the ones the framework hands the handler (Starlette, FastAPI, Flask/Werkzeug, Django)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from flask import Flask, jsonify
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
