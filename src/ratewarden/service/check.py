"""``POST /v1/check``: the service's hot path, as a plain ASGI endpoint.

It is the one route that carries the load, so it skips the framework's request and response
objects: the body is read from ``receive`` up to the cap (413 past it, before reading more),
checked (:mod:`ratewarden.service.inputs`: 400 ``{"error", "field"}``), decided, and the JSON
answer sent in two messages. On the memory store the decision is a direct call (it never
blocks); on the other stores it is awaited. Every other route goes through Starlette.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ratewarden.service.decide import key_json, request_json
from ratewarden.service.inputs import CheckKey, ClientError, parse_body, parse_check
from ratewarden.service.state import Service

__all__ = ["CheckEndpoint", "encode"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_JSON = (b"content-type", b"application/json")


def _outcome(allowed: bool, status_code: int) -> str:
    if allowed:
        return "allowed"
    return "unavailable" if status_code >= 500 else "denied"


class CheckEndpoint:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.too_large = encode({"error": f"the body is larger than {service.max_body} bytes", "field": None})

    async def decide(self, raw: bytes) -> tuple[int, str]:
        """The status and JSON text of the answer to a body."""
        service = self.service
        metrics = service.metrics
        record = service.record
        try:
            body = parse_body(raw)
            snap = service.snapshot
            parsed = parse_check(body, snap.rule_names)
        except ClientError as exc:
            return 400, encode({"error": exc.message, "field": exc.field})
        engine = snap.engine
        t0 = time.perf_counter()
        if isinstance(parsed, CheckKey):
            if snap.inline:
                v = engine.check_key(parsed.rule, parsed.key, parsed.cost, attrs=parsed.attrs)
            else:
                v = await engine.acheck_key(parsed.rule, parsed.key, parsed.cost, attrs=parsed.attrs)
            metrics.observe("http_key", time.perf_counter() - t0)
            record(parsed.rule, _outcome(v.allowed, v.status))
            return 200, encode(key_json(v, parsed.rule))
        v = engine.check(parsed) if snap.inline else await engine.acheck(parsed)
        if v.pending is not None:  # Allow2Ban counts every request (the service's answer is the response)
            await engine.aafter(parsed, v, v.status, {})
        metrics.observe("http_request", time.perf_counter() - t0)
        if v.allowed:  # counted once per rule that applied (several windows of a rule: one count)
            for name in {st.name if st.name in snap.rules else st.name.rsplit("-", 1)[0] for st in v.decisions}:
                record(name, "allowed")
        else:
            record(v.rule, _outcome(v.allowed, v.status))
        return 200, encode(request_json(v))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await self._send(send, 405, encode({"error": "use POST", "field": None}), [(b"allow", b"POST")])
            return
        cap = self.service.max_body
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > cap:
                    await self._send(send, 413, self.too_large)
                    return
                break
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                await self._send(send, 413, self.too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        status, text = await self.decide(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        await self._send(send, status, text)

    @staticmethod
    async def _send(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = text.encode("utf-8", "surrogatepass")
        headers = [_JSON, (b"content-length", str(len(body)).encode("ascii"))]
        if extra:
            headers += extra
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
