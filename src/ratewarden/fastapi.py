"""FastAPI: a per-route dependency, ``Depends(RateLimit("10/minute", key="user"))``.

For an app-wide policy use the ASGI middleware (``app.add_middleware(RateLimitMiddleware,
policy=...)``; ``ratewarden.fastapi.RateLimitMiddleware`` is the very class of :mod:`ratewarden.asgi`,
both re-exported from :mod:`ratewarden._adapters`). ``RateLimit`` adds one rule to the routes that depend
on it, through the same engine machinery (keys, headers, response bodies):

* allowed: the rate-limit headers are set on the response (FastAPI merges the ``Response``
  parameter's headers into what the endpoint returns);
* denied: :class:`RateLimitExceeded` (a Starlette ``HTTPException``) carries the verdict; call
  :func:`install` once (``install(app)``) to answer it with the verdict's exact status, headers
  and configured JSON body; without it FastAPI answers ``{"detail": <the same body>}``.

The identity is ``request.state.user`` or ``scope["user"]`` (Starlette's AuthenticationMiddleware),
as in the ASGI middleware. After the endpoint returned, ``Engine.aafter`` runs with the status
set on the ``Response`` parameter (200 by default): the final status of the response is known only
to the middleware, so bans and costs charged after the response belong in the policy file.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException
from starlette.responses import Response as StarletteResponse

from ratewarden._adapters import USER_ATTRS, RateLimitMiddleware, RouteLimit, join_headers, scope_facts, scope_user
from ratewarden.engine import RequestFacts
from ratewarden.http.headers import RATE_LIMIT_FIELDS, merge_headers

if TYPE_CHECKING:
    from ratewarden.engine import Engine, Verdict

__all__ = ["RateLimit", "RateLimitExceeded", "RateLimitMiddleware", "install", "request_facts"]


class RateLimitExceeded(HTTPException):
    """A denial by a :class:`RateLimit` dependency; ``verdict`` has status, headers and body."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        try:
            detail: Any = json.loads(verdict.body or b"null")
        except ValueError:
            detail = (verdict.body or b"").decode("utf-8", "replace")
        super().__init__(status_code=verdict.status, detail=detail, headers=dict(verdict.headers))


async def _handler(request: Request, exc: Exception) -> StarletteResponse:
    if not isinstance(exc, RateLimitExceeded):  # pragma: no cover - registered for this class only
        raise exc
    v = exc.verdict
    return StarletteResponse(v.body or b"", status_code=v.status, headers=dict(v.headers), media_type=v.content_type)


def install(app: FastAPI) -> None:
    """Answer :class:`RateLimitExceeded` with the verdict itself (the configured body shape)."""
    app.add_exception_handler(RateLimitExceeded, _handler)


def request_facts(request: Request, user_attrs: Iterable[str] = USER_ATTRS) -> RequestFacts:
    """The same facts the ASGI middleware builds (identity from ``scope["user"]`` or ``request.state.user``)."""
    return scope_facts(request.scope, scope_user(request.scope), user_attrs)


class RateLimit:
    """``Depends(RateLimit("10/minute", key="user"))``; ``key``: a key spec of the policy file or
    a callable ``request -> str | None`` (None falls back to the client ip). ``engine=`` shares a
    policy engine's settings and store; other keywords (``clock=``, ``storage=``) go to the
    rule's own engine. ``body:`` keys are not available here (FastAPI owns the body)."""

    def __init__(
        self,
        limits: str | Iterable[str],
        key: str | Callable[[Request], object] = "ip",
        *,
        name: str | None = None,
        algorithm: str | None = None,
        cost: int = 1,
        shadow: bool = False,
        engine: Engine | None = None,
        **options: Any,
    ) -> None:
        self.route = RouteLimit(
            limits, key, name=name, algorithm=algorithm, cost=cost, shadow=shadow, base=engine, **options
        )

    @property
    def engine(self) -> Engine:
        return self.route.engine

    async def __call__(self, request: Request, response: Response) -> AsyncIterator[None]:
        engine = self.route.engine
        facts = self.route.prepare(request_facts(request), request)
        if engine.exempt(facts):
            yield
            return
        if engine.needs_body(facts):
            facts.body, facts.body_truncated = b"", True
        verdict = await engine.acheck(facts)
        if not verdict.allowed:
            await engine.aafter(facts, verdict, verdict.status, join_headers(verdict.headers))
            raise RateLimitExceeded(verdict)
        existing = [(k, v) for k, v in response.headers.items() if k in RATE_LIMIT_FIELDS]  # another RateLimit
        for name in {k for k, _ in existing}:
            del response.headers[name]
        for name, value in merge_headers(existing, verdict.headers) if existing else verdict.headers:
            response.headers.append(name, value)
        yield
        status = response.status_code or 200
        await engine.aafter(facts, verdict, status, join_headers(response.headers.items()))
