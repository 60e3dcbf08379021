"""A pure ASGI middleware: ``RateLimitMiddleware(app, policy="ratewarden.toml")``.

Usable directly around any ASGI app, or as ``Middleware(RateLimitMiddleware, policy=...)`` in
Starlette and FastAPI. It is a thin translation layer over :class:`ratewarden.engine.Engine`:

* the ASGI scope becomes :class:`~ratewarden.engine.RequestFacts` (header names lower-cased,
  a repeated header's first line as Starlette hands it to the handler, X-Forwarded-For,
  Forwarded and Cookie lines joined; the path decoded without ever raising, the socket peer as
  ``client_ip``, the identity an outer middleware put in ``scope["user"]`` or
  ``scope["state"]["user"]`` (Starlette's ``request.state.user``));
* the body is read only when a rule needs it (``Engine.needs_body``), at most
  ``Engine.body_limit`` bytes, and replayed to the app unchanged by wrapping ``receive``;
* a denial is sent as the verdict's status, headers and body; an allowed response gets the
  verdict's headers added by wrapping ``send``; after the app finished (or the denial was sent),
  ``Engine.aafter`` gets the response status and headers (bans, costs charged after the response);
* websocket connections are checked on connect (a denial is an HTTP 429/403 response through the
  ``websocket.http.response`` extension when the server offers it, else a close with code 1008)
  and, with ``websocket_messages=True``, every received message is checked as a request whose
  method is ``"MESSAGE"`` (a denial closes the connection with 1008); lifespan and other scope
  types pass straight through.

Place it *inside* your authentication middleware so that the identity is already set.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from ratewarden.engine import Engine, RequestFacts, Verdict
from ratewarden.errors import ConfigError
from ratewarden.http.headers import RATE_LIMIT_FIELDS, merge_headers

__all__ = [
    "LazyHeaders",
    "RateLimitMiddleware",
    "RouteLimit",
    "build_engine",
    "identity_of",
    "join_headers",
    "rule_name",
    "scope_facts",
    "scope_user",
]

log = logging.getLogger("ratewarden")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: identity attributes handed to the engine as ``user_attrs`` (tiers read e.g. ``role``)
USER_ATTRS = ("role", "plan", "tier", "roles", "groups", "scopes")
_ID_NAMES = ("identity", "id", "pk", "user_id", "sub", "username", "email")
_SCALARS = (str, int, float, bool)


# -- shared by every adapter ---------------------------------------------------------------------


def build_engine(policy: Any, engine: Engine | None, options: Mapping[str, Any]) -> Engine:
    """The engine an adapter uses: ``engine`` if given (shared), else ``Engine(policy, **options)``."""
    if engine is not None:
        if options:
            raise ConfigError(f"pass either engine= or engine options ({', '.join(sorted(options))}), not both")
        return engine
    return Engine(policy, **options)


def _attr(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # a property that raises (Starlette's BaseUser.identity) is no identity
        return None


def identity_of(user: object, attrs: Iterable[str] = USER_ATTRS) -> tuple[str | None, dict[str, Any]]:
    """The identity string and attributes of whatever the app put on the request as its user.

    ``None``, an empty string and any object with ``is_authenticated`` false are anonymous.
    A mapping (e.g. JWT claims) gives its ``id``/``sub``/... entry and all its scalar entries;
    an object its ``identity``/``id``/``pk``/``username``... attribute and ``attrs``.
    """
    if user is None or user == "":
        return None, {}
    if isinstance(user, str):
        return user, {}
    if isinstance(user, _SCALARS):
        return str(user), {}
    if isinstance(user, Mapping):
        found = {str(k): v for k, v in user.items() if isinstance(v, (*_SCALARS, list, tuple))}
        for name in _ID_NAMES:
            value = found.get(name)
            if value is not None and value != "":
                return str(value), found
        return None, found
    if _attr(user, "is_authenticated") is False:
        return None, {}
    kinds = (*_SCALARS, list, tuple)
    extra = {name: v for name in attrs if isinstance(v := _attr(user, name), kinds)}  # no managers, methods
    for name in _ID_NAMES:
        value = _attr(user, name)
        if value is not None and value != "" and not callable(value):
            return str(value), extra
    return None, extra


def join_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased names; repeated headers joined by ``", "`` (``cookie`` by ``"; "``)."""
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key in out:
            out[key] = out[key] + ("; " if key == "cookie" else ", ") + value
        else:
            out[key] = value
    return out


def safe_text(text: str) -> str:
    """``text`` with lone surrogates (undecodable bytes) replaced, so it always encodes as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


# -- ASGI ----------------------------------------------------------------------------------------


#: encoded header names, and the encoded values of the ``RateLimit-Policy`` field (the same few
#: strings on every response: one value per route of the policy); both bounded
_NAMES: dict[str, bytes] = {}
_POLICIES: dict[str, bytes] = {}
_CACHE_MAX = 512


def _latin1(pairs: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
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


#: request headers whose repeated lines are one list: X-Forwarded-For and Forwarded (a proxy may
#: add its own line; the walk from the right must see every hop) and Cookie (Starlette reads
#: every Cookie line)
_LIST_HEADERS = {"x-forwarded-for": ", ", "forwarded": ", ", "cookie": "; "}


def request_headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers as the app's framework hands them to the handler: lower-cased names and,
    for a header sent on several lines, the *first* line (Starlette's ``request.headers[name]``,
    which FastAPI's ``Header()`` parameters read too), so a second ``X-Api-Key`` or
    ``Authorization`` line can neither mint a key nor hide the one the app acts on. The list
    headers (``X-Forwarded-For``, ``Forwarded``, ``Cookie``) keep every line, joined."""
    out = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in raw}
    if len(out) == len(raw):  # the usual case: no repeated header
        return out
    out = {}
    for n, v in raw:
        key = bytes(n).decode("latin-1").lower()
        value = bytes(v).decode("latin-1")
        if key not in out:
            out[key] = value
        elif key in _LIST_HEADERS:
            out[key] = out[key] + _LIST_HEADERS[key] + value
    return out


class LazyHeaders(Mapping[str, str]):
    """Response headers for ``after()``, built (lower-cased, joined) only if the engine reads them:
    most requests have no cost charged after the response, and then nothing is decoded."""

    __slots__ = ("_decoded", "_make")

    def __init__(self, make: Callable[[], dict[str, str]]) -> None:
        self._make = make
        self._decoded: dict[str, str] | None = None

    def _map(self) -> dict[str, str]:
        if self._decoded is None:
            self._decoded = self._make()
        return self._decoded

    def __getitem__(self, key: str) -> str:
        return self._map()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map())

    def __len__(self) -> int:
        return len(self._map())


def scope_path(scope: Scope) -> str:
    """The decoded path (``root_path`` not included); undecodable bytes become U+FFFD."""
    path = scope.get("path")
    if isinstance(path, str):
        return path if path.isascii() else safe_text(path)
    raw = scope.get("raw_path") or b"/"
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(bytes(raw)).decode("utf-8", "replace")


def scope_user(scope: Scope) -> object:
    """The user an outer middleware put on the request: ``scope["user"]`` (Starlette's
    AuthenticationMiddleware), else ``scope["state"]["user"]`` (``request.state.user``)."""
    if "user" in scope:
        return scope["user"]
    state = scope.get("state")
    if state is None:
        return None
    if type(state) is dict:  # the usual case; isinstance against the Mapping ABC costs more
        return state.get("user")
    if isinstance(state, Mapping):
        return state.get("user")
    return None


def scope_facts(scope: Scope, user: object, user_attrs: Iterable[str] = USER_ATTRS) -> RequestFacts:
    """RequestFacts of an ASGI ``http`` or ``websocket`` scope (used by the FastAPI dependency too)."""
    headers = request_headers(scope.get("headers") or ())
    client = scope.get("client")
    identity, attrs = (None, {}) if user is None else identity_of(user, user_attrs)
    query = scope.get("query_string")
    method = scope.get("method")
    scheme = scope.get("scheme")
    return RequestFacts(  # positional: the keyword form of a dataclass __init__ costs twice as much
        method.upper() if type(method) is str and method else str(method or "GET").upper(),
        scope_path(scope),
        str(client[0]) if client else None,
        headers,
        bytes(query).decode("latin-1") if query else "",
        headers.get("host", ""),
        scheme if type(scheme) is str and scheme else str(scheme or ("ws" if scope["type"] == "websocket" else "http")),
        identity,
        attrs,
        None,
        False,
        headers.get("content-type", ""),
    )


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

    # -- facts --------------------------------------------------------------------------------

    def _user(self, scope: Scope) -> object:
        return scope_user(scope) if self.user_getter is None else self.user_getter(scope)

    def facts(self, scope: Scope) -> RequestFacts:
        return scope_facts(scope, self._user(scope), self.user_attrs)

    # -- entry point --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine = self.engine
        facts = self.facts(scope)
        if engine.exempt(facts):
            await self.app(scope, receive, send)
            return
        if engine.needs_body(facts):
            receive = await _read_body(facts, receive, engine.body_limit)
        verdict = await engine.acheck(facts)
        if not verdict.allowed:
            await _send_denial(send, verdict)
            await self._after(facts, verdict, verdict.status, join_headers(verdict.headers))
            return
        if verdict.pending is None and not verdict.headers:  # nothing to add, nothing to do after
            await self.app(scope, receive, send)
            return
        extra = _latin1(verdict.headers)
        started: list[Message] = []

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and not started:
                message["headers"] = _with_headers(message.get("headers", ()), extra, verdict.headers)
                started.append(message)
            await send(message)

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


# -- per-route limits (Flask/Django decorators, the FastAPI dependency) -------------------------


def rule_name(text: str) -> str:
    """``text`` as a valid rule name: other characters become ``_``, at most 64 of them."""
    import re

    return re.sub(r"[^A-Za-z0-9_.:/-]", "_", text).lstrip("_.:/-")[-64:] or "route"


class RouteLimit:
    """One rule for one route, through the same Engine as the policy file (keys, headers, bodies).

    ``limits``: ``"5/minute"`` or ``"5/minute;100/day"`` or a list; ``key``: a key spec of the
    policy file (``"ip"``, ``"user"``, ``"header:X-Api-Key"``, ``"body:email|lower"``...) or a
    callable ``request -> str | None`` (``None``: fall back to the client ip). ``base``: an engine
    whose settings (headers, response shape, store) the route's rule shares.
    """

    def __init__(
        self,
        limits: str | Iterable[str],
        key: str | Callable[[Any], object] = "ip",
        *,
        name: str | None = None,
        algorithm: str | None = None,
        cost: int = 1,
        shadow: bool = False,
        base: Engine | None = None,
        **options: Any,
    ) -> None:
        rates = [limits] if isinstance(limits, str) else list(limits)
        if not rates or not all(isinstance(r, str) for r in rates):
            raise ConfigError(f"limits must be a rate string or a list of them, not {limits!r}")
        if not (isinstance(key, str) or callable(key)):
            raise ConfigError(f"key must be a key spec string or a callable, not {key!r}")
        self.key_fn = None if isinstance(key, str) else key
        spec = key if isinstance(key, str) else "user"
        self.name = rule_name(name or f"route:{spec}:{';'.join(rates)}")
        rule: dict[str, Any] = {"name": self.name, "key": spec, "limits": rates, "cost": cost}
        if algorithm:
            rule["algorithm"] = algorithm
        if shadow:
            rule["shadow"] = True
        if self.key_fn is not None:
            rule["fallback"] = "ip"
        self.engine: Engine = Engine.for_rule(rule, base=base, **options)

    def prepare(self, facts: RequestFacts, request: Any) -> RequestFacts:
        """``facts`` for this rule: with a callable key, its value stands in for the identity."""
        if self.key_fn is None:
            return facts
        from dataclasses import replace

        value = self.key_fn(request)
        return replace(facts, user=None if value is None or value == "" else str(value), user_attrs={})
