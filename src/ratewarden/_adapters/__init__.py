"""What the adapters share, so that no adapter imports another.

``ratewarden.asgi``, ``ratewarden.wsgi``, ``ratewarden.flask``, ``ratewarden.django`` and
``ratewarden.fastapi`` each import the engine, this package, the HTTP and policy helpers and their
own framework, never each other. This package imports the engine, ``ratewarden.http`` and
``ratewarden.policy`` and no adapter (both checked by ``lint-imports``).

* :mod:`~ratewarden._adapters.common`: the engine an adapter uses, the identity of a user
  object, header joining, :class:`LazyHeaders`;
* :mod:`~ratewarden._adapters.scope`: the facts of an ASGI scope;
* :mod:`~ratewarden._adapters.environ`: the facts of a WSGI environ and the body of ``wsgi.input``;
* :mod:`~ratewarden._adapters.routes`: per-route limits (:class:`RouteLimit`);
* :mod:`~ratewarden._adapters.middleware`: the ASGI middleware (public in ``ratewarden.asgi`` and
  ``ratewarden.fastapi``).
"""

from __future__ import annotations

from ratewarden._adapters.common import USER_ATTRS, LazyHeaders, build_engine, identity_of, join_headers, safe_text
from ratewarden._adapters.environ import environ_facts, environ_headers, read_body
from ratewarden._adapters.middleware import RateLimitMiddleware
from ratewarden._adapters.routes import RouteLimit, rule_name
from ratewarden._adapters.scope import request_headers, scope_facts, scope_path, scope_user

__all__ = [
    "USER_ATTRS",
    "LazyHeaders",
    "RateLimitMiddleware",
    "RouteLimit",
    "build_engine",
    "environ_facts",
    "environ_headers",
    "identity_of",
    "join_headers",
    "read_body",
    "request_headers",
    "rule_name",
    "safe_text",
    "scope_facts",
    "scope_path",
    "scope_user",
]
