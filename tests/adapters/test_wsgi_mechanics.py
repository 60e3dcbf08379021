"""The WSGI middleware's own translation work, checked with a recording engine."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

import pytest
from rw_recording import RecordingEngine
from werkzeug.test import Client

from ratewarden.wsgi import RateLimitMiddleware, read_body


def echo_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-App", "yes")])
    return [body]


class Closable:
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self.closed = False

    def __iter__(self) -> Any:
        return iter(self.parts)

    def close(self) -> None:
        self.closed = True


def test_allowed_response_gets_headers_and_after_runs_on_close() -> None:
    engine = RecordingEngine()
    result = Closable([b"ok"])

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("X-App", "yes")])
        return result

    client = Client(RateLimitMiddleware(app, engine=engine))
    r = client.get(
        "/x?a=1",
        headers=[("X-Multi", "v"), ("Content-Type", "text/plain")],
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )
    assert r.status_code == 200
    assert r.headers["RateLimit"] == '"test";r=999999;t=60'
    assert engine.afters == []  # the response is not finished until the server closes it
    r.close()
    assert result.closed
    facts = engine.checked[0]
    assert (facts.method, facts.path, facts.query_string) == ("GET", "/x", "a=1")
    assert facts.headers["x-multi"] == "v"
    assert facts.content_type == "text/plain"
    assert facts.client_ip == "198.51.100.7"
    assert engine.afters[0][1] == 200
    assert engine.afters[0][2]["x-app"] == "yes"


def test_denial_is_the_verdict_and_the_app_does_not_run() -> None:
    engine = RecordingEngine(allow=0, status=403)
    ran: list[bool] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:  # pragma: no cover
        ran.append(True)
        return []

    r = Client(RateLimitMiddleware(app, engine=engine)).get("/")
    assert r.status_code == 403
    assert r.status == "403 FORBIDDEN" or r.status.startswith("403 ")
    assert r.headers["Retry-After"] == "7"
    assert r.json == {"error": "rate_limited", "retry_after": 7}
    assert ran == []
    assert [status for _, status, _ in engine.afters] == [403]


def test_body_read_when_needed_and_the_app_gets_the_same_bytes() -> None:
    engine = RecordingEngine(body_paths=("/login",), body_limit=100)
    client = Client(RateLimitMiddleware(echo_app, engine=engine))
    small = json.dumps({"email": "a@b.c"}).encode()
    r = client.post("/login", data=small, content_type="application/json")
    assert r.data == small
    assert engine.checked[-1].body == small
    assert engine.checked[-1].body_truncated is False
    big = bytes(range(256)) * 40  # 10240 bytes, cap 100
    r = client.post("/login", data=big, content_type="application/octet-stream")
    assert r.data == big
    assert engine.checked[-1].body == big[:100]
    assert engine.checked[-1].body_truncated is True
    r = client.post("/other", data=big)
    assert r.data == big
    assert engine.checked[-1].body is None


def test_replayed_stream_supports_readline_and_partial_reads() -> None:
    engine = RecordingEngine(body_limit=5)
    from ratewarden.engine import RequestFacts

    facts = RequestFacts(method="POST", path="/", client_ip=None)
    environ: dict[str, Any] = {"CONTENT_LENGTH": "17", "wsgi.input": io.BytesIO(b"line1\nline2\nrest.")}
    read_body(facts, environ, engine.body_limit)
    assert facts.body == b"line1"
    assert facts.body_truncated
    stream = environ["wsgi.input"]
    assert stream.readline() == b"line1\n"
    assert stream.read(3) == b"lin"
    assert stream.read() == b"e2\nrest."


def test_bad_content_length_never_reads_or_raises() -> None:
    from ratewarden.engine import RequestFacts

    for value in ("abc", "-5", ""):
        facts = RequestFacts(method="POST", path="/", client_ip=None)
        environ: dict[str, Any] = {"CONTENT_LENGTH": value, "wsgi.input": io.BytesIO(b"data")}
        read_body(facts, environ, 100)
        assert facts.body == b""


def test_non_utf8_path_is_decoded_with_replacement() -> None:
    engine = RecordingEngine()
    client = Client(RateLimitMiddleware(echo_app, engine=engine))
    client.get("/caf%FF%FEx")
    assert engine.checked[0].path == "/caf\ufffd\ufffdx"
    client.get("/caf%C3%A9")
    assert engine.checked[1].path == "/café"


def test_exempt_paths_are_not_checked_and_user_comes_from_the_environ() -> None:
    engine = RecordingEngine(exempt_paths=("/health",))
    client = Client(RateLimitMiddleware(echo_app, engine=engine))
    client.get("/health")
    client.get("/x", environ_overrides={"REMOTE_USER": "bob"})
    assert [f.path for f in engine.checked] == ["/x"]
    assert engine.checked[0].user == "bob"


def test_after_sees_500_when_the_app_raises() -> None:
    engine = RecordingEngine()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise RuntimeError("boom")

    client = Client(RateLimitMiddleware(app, engine=engine))
    with pytest.raises(RuntimeError, match="boom"):
        client.get("/")
    assert engine.afters[0][1] == 500


def test_nothing_pending_skips_after_and_still_adds_headers() -> None:
    engine = RecordingEngine(pending=None)
    r = Client(RateLimitMiddleware(echo_app, engine=engine)).get("/")
    assert r.headers["RateLimit"] == '"test";r=999999;t=60'
    assert r.headers["X-App"] == "yes"
    r.close()
    assert engine.afters == []
