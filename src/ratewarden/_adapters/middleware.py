"""The ASGI middleware itself, :class:`RateLimitMiddleware` (public as
``ratewarden.asgi.RateLimitMiddleware``, and as ``ratewarden.fastapi.RateLimitMiddleware`` for the
app-wide policy of a FastAPI app): the behaviour is described in :mod:`ratewarden.asgi`."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from ratewarden._adapters.common import USER_ATTRS, LazyHeaders, build_engine, join_headers
from ratewarden._adapters.scope import Scope, scope_facts, scope_user
from ratewarden.engine import Engine, RequestFacts, Verdict
from ratewarden.http.headers import RATE_LIMIT_FIELDS, merge_headers

log = logging.getLogger("ratewarden")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


#: encoded header names, and the encoded values of the ``RateLimit-Policy`` field (the same few
#: strings on every response: one value per route of the policy); both bounded
_NAMES: dict[str, bytes] = {}
_POLICIES: dict[str, bytes] = {}
_CACHE_MAX = 512


def _latin1(pairs: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    if type(pairs) is list and len(pairs) == 2:  # the usual verdict: the two draft fields, in this order
        (n1, v1), (n2, v2) = pairs
        if n1 == "RateLimit-Policy" and n2 == "RateLimit":
            policy = _POLICIES.get(v1)
            if policy is not None:
                return [(b"ratelimit-policy", policy), (b"ratelimit", v2.encode("latin-1", "replace"))]
    out: list[tuple[bytes, bytes]] = []
    for n, v in pairs:
        name = _NAMES.get(n)
        if name is None:
            name = n.lower().encode("latin-1", "replace")
            if len(_NAMES) < _CACHE_MAX:
                _NAMES[n] = name
        if n == "RateLimit-Policy":
            value = _POLICIES.get(v)
            if value is None:
                value = v.encode("latin-1", "replace")
                if len(_POLICIES) < _CACHE_MAX:
                    _POLICIES[v] = value
        else:
            value = v.encode("latin-1", "replace")
        out.append((name, value))
    return out


_RATE_LIMIT_NAMES = frozenset(n.encode() for n in RATE_LIMIT_FIELDS)


def _with_headers(
    raw: Iterable[tuple[bytes, bytes]], extra: list[tuple[bytes, bytes]], headers: list[tuple[str, str]]
) -> list[tuple[bytes, bytes]]:
    """The app's response headers plus the verdict's; when the app's response already carries
    rate-limit fields (a per-route limit, e.g. the FastAPI dependency), the two sets are merged
    (one legacy value, the most restrictive; the draft lists joined)."""
    pairs = raw if type(raw) is list else list(raw)
    names = _RATE_LIMIT_NAMES
    for n, _ in pairs:  # the usual case: the app set no rate-limit field (no decoding, no copy but one)
        if (n.lower() if type(n) is bytes else bytes(n).lower()) in names:
            break
    else:
        return [*pairs, *extra]
    mine = [
        (bytes(n).decode("latin-1"), bytes(v).decode("latin-1"))
        for n, v in pairs
        if bytes(n).lower() in _RATE_LIMIT_NAMES
    ]
    rest = [(n, v) for n, v in pairs if bytes(n).lower() not in _RATE_LIMIT_NAMES]
    return [*rest, *_latin1(merge_headers(mine, headers))]


def _decode_pairs(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Response headers for ``after()``: lower-cased, repeats joined (:func:`join_headers`)."""
    out = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in raw}
    if len(out) == len(raw):  # the usual case: no repeated header
        return out
    return join_headers((bytes(n).decode("latin-1"), bytes(v).decode("latin-1")) for n, v in raw)


class RateLimitMiddleware:
    """``RateLimitMiddleware(app, policy="ratewarden.toml", **options)``.

    ``options``: ``engine=`` an already built :class:`~ratewarden.engine.Engine` (shared with
    other adapters), ``user_getter=`` a callable ``scope -> user`` (default: ``scope["user"]``,
    then ``scope["state"]["user"]``), ``websocket_messages=True`` to check every websocket
    message, ``user_attrs=`` the identity attributes passed to the engine; every other keyword
    (``clock=``, ``storage=``, ``on_event=``...) goes to ``Engine(policy, ...)``.
    """

    def __init__(
        self,
        app: ASGIApp,
        policy: Any = "ratewarden.toml",
        *,
        engine: Engine | None = None,
        user_getter: Callable[[Scope], object] | None = None,
        websocket_messages: bool = False,
        user_attrs: Iterable[str] = USER_ATTRS,
        **options: Any,
    ) -> None:
        self.app = app
        self.engine = build_engine(policy, engine, options)
        self.user_getter = user_getter
        self.websocket_messages = websocket_messages
        self.user_attrs = tuple(user_attrs)
        #: an Engine on a store whose calls never block (memory): its ``acheck`` runs ``check``
        #: (the same code, the same result), so the HTTP path calls ``check`` (a coroutine less)
        #: (held as that very engine: one replaced later is called through ``acheck``)
        inline = type(self.engine) is Engine and bool(getattr(self.engine, "_inline", False))
        self._sync: Engine | None = self.engine if inline else None
        #: that engine again when, besides, ``exempt`` and ``needs_body`` are False for every
        #: request (the engine says so: no exempt path, no rule or ban keyed on the body): the
        #: HTTP path goes straight to ``check`` (held as that engine, like ``_sync``)
        plain = inline and bool(getattr(self.engine, "_check_only", False))
        self._plain: Engine | None = self.engine if plain else None

    # -- facts --------------------------------------------------------------------------------

    def _user(self, scope: Scope) -> object:
        return scope_user(scope) if self.user_getter is None else self.user_getter(scope)

    def facts(self, scope: Scope) -> RequestFacts:
        return scope_facts(scope, self._user(scope), self.user_attrs)

    # -- entry point --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        # the HTTP path, inline here (a coroutine less per request)
        engine = self.engine
        getter = self.user_getter
        facts = scope_facts(scope, scope_user(scope) if getter is None else getter(scope), self.user_attrs)
        if engine is self._plain:  # nothing exempt, no body read: the verdict alone
            verdict = engine.check(facts)
        else:
            if engine.exempt(facts):
                await self.app(scope, receive, send)
                return
            if engine.needs_body(facts):
                receive = await _read_body(facts, receive, engine.body_limit)
            verdict = engine.check(facts) if engine is self._sync else await engine.acheck(facts)
        if not verdict.allowed:
            await _send_denial(send, verdict)
            await self._after(facts, verdict, verdict.status, join_headers(verdict.headers))
            return
        if verdict.pending is None and not verdict.headers:  # nothing to add, nothing to do after
            await self.app(scope, receive, send)
            return
        extra = _latin1(verdict.headers)
        started: list[Message] = []

        # a plain function handing back the server's own awaitable: awaiting it is awaiting the
        # server's send, with no coroutine of ours per message (two per response)
        def send_with_headers(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start" and not started:
                message["headers"] = _with_headers(message.get("headers", ()), extra, verdict.headers)
                started.append(message)
            return send(message)

        if verdict.pending is None:  # after() would be a no-op (engine contract): skip it
            await self.app(scope, receive, send_with_headers)
            return
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if started:
                status = int(started[0]["status"])
                raw = started[0]["headers"]
                headers: Mapping[str, str] = LazyHeaders(lambda: _decode_pairs(raw))
            else:  # the app raised before responding: the server answers 500
                status, headers = 500, {}
            await self._after(facts, verdict, status, headers)

    async def _after(self, facts: RequestFacts, verdict: Verdict, status: int, headers: Mapping[str, str]) -> None:
        try:
            await self.engine.aafter(facts, verdict, status, headers)
        except Exception:  # the response is out; an engine failure here must not reach the server
            log.exception("ratewarden: after() failed for %s %s", facts.method, facts.path)

    # -- websocket ----------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine = self.engine
        facts = self.facts(scope)
        if engine.exempt(facts):
            await self.app(scope, receive, send)
            return
        verdict = await engine.acheck(facts)
        if not verdict.allowed:
            message = await receive()  # websocket.connect
            if message["type"] == "websocket.connect":
                await _deny_websocket(scope, send, verdict)
            await self._after(facts, verdict, verdict.status, join_headers(verdict.headers))
            return
        if self.websocket_messages:
            receive = self._limit_messages(facts, receive, send)
        try:
            await self.app(scope, receive, send)
        finally:
            await self._after(facts, verdict, 101, {})

    def _limit_messages(self, facts: RequestFacts, receive: Receive, send: Send) -> Receive:
        from dataclasses import replace

        message_facts = replace(facts, method="MESSAGE")
        engine = self.engine

        async def checked() -> Message:
            message = await receive()
            if message["type"] != "websocket.receive" or engine.exempt(message_facts):
                return message
            verdict = await engine.acheck(message_facts)
            if verdict.allowed:
                return message
            await self._after(message_facts, verdict, verdict.status, join_headers(verdict.headers))
            reason = "rate limited"
            if verdict.retry_after > 0:
                reason = f"rate limited; retry after {_whole_seconds(verdict.retry_after)} s"
            await send({"type": "websocket.close", "code": 1008, "reason": reason})
            return {"type": "websocket.disconnect", "code": 1008, "reason": reason}

        return checked


def _whole_seconds(seconds: float) -> int:
    whole = int(seconds)
    return whole + 1 if whole < seconds else max(whole, 1)


async def _read_body(facts: RequestFacts, receive: Receive, limit: int) -> Receive:
    """Read at most ``limit`` bytes of the body into ``facts``; return a ``receive`` that replays
    every message taken (then continues with the real one), so the app sees the body unchanged."""
    taken: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    truncated = False
    while True:
        message = await receive()
        taken.append(message)
        if message["type"] != "http.request":
            break  # http.disconnect: replay it too
        chunk = bytes(message.get("body", b""))
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            truncated = True
            break
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    facts.body = body[:limit]
    facts.body_truncated = truncated
    pending = deque(taken)

    async def replay() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replay


def _denial_headers(verdict: Verdict, body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", verdict.content_type.encode("latin-1", "replace")),
        (b"content-length", str(len(body)).encode()),
        *_latin1(verdict.headers),
    ]


async def _send_denial(send: Send, verdict: Verdict, prefix: str = "http.") -> None:
    body = verdict.body or b""
    await send({"type": prefix + "response.start", "status": verdict.status, "headers": _denial_headers(verdict, body)})
    await send({"type": prefix + "response.body", "body": body})


async def _deny_websocket(scope: Scope, send: Send, verdict: Verdict) -> None:
    extensions = scope.get("extensions") or {}
    if "websocket.http.response" in extensions:
        await _send_denial(send, verdict, prefix="websocket.http.")
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": "rate limited"})
