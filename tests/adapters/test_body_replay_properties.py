"""Property: whatever the body, its chunking and the cap, the app receives exactly the bytes the
client sent, and the engine sees the first ``cap`` bytes and whether there were more."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rw_recording import RecordingEngine

from ratewarden.asgi import RateLimitMiddleware as ASGILimit
from ratewarden.asgi import join_headers
from ratewarden.engine import RequestFacts
from ratewarden.wsgi import read_body

chunks = st.lists(st.binary(max_size=300), max_size=12)
caps = st.integers(min_value=0, max_value=2000)


@settings(max_examples=150, deadline=None)
@given(parts=chunks, cap=caps)
def test_asgi_body_replay(parts: list[bytes], cap: int) -> None:
    engine = RecordingEngine(body_paths=("/b",), body_limit=cap)
    received: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            received.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    if not messages:
        messages = [{"type": "http.request", "body": b"", "more_body": False}]
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    async def send(message: Any) -> None:
        return None

    scope = {"type": "http", "method": "POST", "path": "/b", "headers": [], "client": ("192.0.2.1", 1)}
    asyncio.run(ASGILimit(app, engine=engine)(scope, receive, send))
    body = b"".join(parts)
    assert b"".join(received) == body
    facts = engine.checked[0]
    assert facts.body == body[:cap]
    assert facts.body_truncated == (len(body) > cap)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=3000), cap=caps, read_sizes=st.lists(st.integers(1, 700), max_size=8))
def test_wsgi_body_replay(body: bytes, cap: int, read_sizes: list[int]) -> None:
    facts = RequestFacts(method="POST", path="/", client_ip=None)
    environ: dict[str, Any] = {"CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    read_body(facts, environ, cap)
    assert facts.body == (body[:cap] if body else b"")
    assert facts.body_truncated == (len(body) > cap)
    stream = environ["wsgi.input"]
    got = b"".join(stream.read(n) for n in read_sizes) + stream.read()
    assert got == body


@given(st.lists(st.tuples(st.sampled_from(["A", "a", "B", "Cookie", "cookie"]), st.text(max_size=5)), max_size=8))
def test_join_headers_keeps_every_value_in_order(pairs: list[tuple[str, str]]) -> None:
    joined = join_headers(pairs)
    for name in {n.lower() for n, _ in pairs}:
        values = [v for n, v in pairs if n.lower() == name]
        assert joined[name] == ("; " if name == "cookie" else ", ").join(values)
