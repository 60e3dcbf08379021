"""The facts of an ASGI ``http`` or ``websocket`` scope (the ASGI middleware and the FastAPI
dependency build the same :class:`~ratewarden.engine.RequestFacts`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from ratewarden._adapters.common import USER_ATTRS, identity_of, safe_text
from ratewarden.engine import RequestFacts

Scope = MutableMapping[str, Any]


#: request headers whose repeated lines are one list: X-Forwarded-For and Forwarded (a proxy may
#: add its own line; the walk from the right must see every hop) and Cookie (Starlette reads
#: every Cookie line)
_LIST_HEADERS = {"x-forwarded-for": ", ", "forwarded": ", ", "cookie": "; "}


#: decoded, lower-cased header names (the same few on every request; bounded)
_NAMES: dict[bytes, str] = {}
_NAMES_MAX = 512


def request_headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers as the app's framework hands them to the handler: lower-cased names and,
    for a header sent on several lines, the *first* line (Starlette's ``request.headers[name]``,
    which FastAPI's ``Header()`` parameters read too), so a second ``X-Api-Key`` or
    ``Authorization`` line can neither mint a key nor hide the one the app acts on. The list
    headers (``X-Forwarded-For``, ``Forwarded``, ``Cookie``) keep every line, joined."""
    out: dict[str, str] = {}
    names = _NAMES
    for n, v in raw:
        key = names.get(n) if type(n) is bytes else None  # a bytearray is not hashable
        if key is None:
            key = bytes(n).decode("latin-1").lower()
            if type(n) is bytes and len(names) < _NAMES_MAX:
                names[n] = key
        out[key] = v.decode("latin-1")
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
        path if type(path := scope.get("path")) is str and path.isascii() else scope_path(scope),
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
