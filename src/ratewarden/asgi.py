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

The middleware and the helpers below live in :mod:`ratewarden._adapters` (shared with the other
adapters, which never import this module); they are importable here as they always were.
"""

from __future__ import annotations

# USER_ATTRS, safe_text, request_headers and scope_path: importable here as before the move,
# though not among the public names of __all__
from ratewarden._adapters.common import (  # noqa: F401
    USER_ATTRS,
    LazyHeaders,
    build_engine,
    identity_of,
    join_headers,
    safe_text,
)
from ratewarden._adapters.middleware import RateLimitMiddleware
from ratewarden._adapters.routes import RouteLimit, rule_name
from ratewarden._adapters.scope import request_headers, scope_facts, scope_path, scope_user  # noqa: F401

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
