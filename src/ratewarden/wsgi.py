"""A WSGI middleware: ``RateLimitMiddleware(wsgi_app, policy="ratewarden.toml")``.

The environ becomes :class:`~ratewarden.engine.RequestFacts` (``HTTP_*`` keys back to
lower-case header names, ``SCRIPT_NAME + PATH_INFO`` decoded as UTF-8 with undecodable bytes
replaced, ``REMOTE_ADDR`` as ``client_ip``, the identity from ``user_getter(environ)`` or
``environ["ratewarden.user"]`` or ``REMOTE_USER``). ``wsgi.input`` is read only when a rule needs
the body, at most ``Engine.body_limit`` bytes, and replaced by a stream that yields exactly the
same bytes. A denial is answered with the verdict; an allowed response gets the verdict's headers
through a wrapped ``start_response``, and ``Engine.after`` runs when the server closes the
response iterable (PEP 3333), with the status and headers the app sent.

Flask and Django share :func:`environ_facts` and :func:`read_body` through
:mod:`ratewarden._adapters` (they are importable here as they always were).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from ratewarden._adapters.common import USER_ATTRS, LazyHeaders, build_engine, join_headers
from ratewarden._adapters.environ import (
    Environ,
    environ_facts,
    environ_headers,  # noqa: F401 (importable here as before)
    read_body,
)
from ratewarden.engine import RequestFacts
from ratewarden.policy.keys import FieldReader

if TYPE_CHECKING:
    from ratewarden.engine import Engine, Verdict

__all__ = ["RateLimitMiddleware", "denial_status_line", "environ_facts", "read_body"]

log = logging.getLogger("ratewarden")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

#: the framework behind a plain WSGI app is unknown (Werkzeug keeps the first of repeated fields
#: and cookies, Django the last): a field or cookie sent twice with different values is absent
_READER = FieldReader("refuse")


def denial_status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Rate Limited"


class _Closing:
    """The app's response iterable; ``close()`` closes it and then runs ``on_close`` once."""

    def __init__(self, result: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._result = result
        self._on_close: Callable[[], None] | None = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()


class RateLimitMiddleware:
    """``RateLimitMiddleware(wsgi_app, policy="ratewarden.toml", **options)``.

    ``options``: ``engine=`` a shared :class:`~ratewarden.engine.Engine`, ``user_getter=`` a
    callable ``environ -> user``; every other keyword (``clock=``, ``storage=``...) goes to
    ``Engine(policy, ...)``.
    """

    def __init__(
        self,
        app: WSGIApp,
        policy: Any = "ratewarden.toml",
        *,
        engine: Engine | None = None,
        user_getter: Callable[[Environ], object] | None = None,
        user_attrs: Iterable[str] = USER_ATTRS,
        **options: Any,
    ) -> None:
        self.app = app
        self.engine = build_engine(policy, engine, options)
        self.user_getter = user_getter
        self.user_attrs = tuple(user_attrs)

    def _user(self, environ: Environ) -> object:
        if self.user_getter is not None:
            return self.user_getter(environ)
        return environ.get("ratewarden.user") or environ.get("REMOTE_USER")

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        engine = self.engine
        facts = environ_facts(environ, self._user(environ), self.user_attrs)
        facts.reader = _READER
        if engine.exempt(facts):
            return self.app(environ, start_response)
        if engine.needs_body(facts):
            read_body(facts, environ, engine.body_limit)
        verdict = engine.check(facts)
        if not verdict.allowed:
            body = verdict.body or b""
            headers = [("Content-Type", verdict.content_type), ("Content-Length", str(len(body))), *verdict.headers]
            start_response(denial_status_line(verdict.status), headers)
            self._after(facts, verdict, verdict.status, join_headers(verdict.headers))
            return [body]
        if verdict.pending is None:  # after() would be a no-op (engine contract): no close hook
            if not verdict.headers:
                return self.app(environ, start_response)
            extra = verdict.headers

            def start_plain(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                return start_response(status, [*headers, *extra], exc_info)

            return self.app(environ, start_plain)
        sent: list[tuple[int, list[tuple[str, str]]]] = []

        def start_with_headers(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            try:
                code = int(status.split(None, 1)[0])
            except (ValueError, IndexError):
                code = 500
            sent[:] = [(code, list(headers))]
            return start_response(status, [*headers, *verdict.headers], exc_info)

        try:
            result = self.app(environ, start_with_headers)
        except BaseException:
            self._after(facts, verdict, 500, {})
            raise

        def on_close() -> None:
            status, headers = sent[0] if sent else (500, [])
            self._after(facts, verdict, status, LazyHeaders(lambda: join_headers(headers)))

        return _Closing(result, on_close)

    def _after(self, facts: RequestFacts, verdict: Verdict, status: int, headers: Mapping[str, str]) -> None:
        try:
            self.engine.after(facts, verdict, status, headers)
        except Exception:
            log.exception("ratewarden: after() failed for %s %s", facts.method, facts.path)
