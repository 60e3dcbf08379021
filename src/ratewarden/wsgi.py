"""A WSGI middleware: ``RateLimitMiddleware(wsgi_app, policy="ratewarden.toml")``.

The environ becomes :class:`~ratewarden.engine.RequestFacts` (``HTTP_*`` keys back to
lower-case header names, ``SCRIPT_NAME + PATH_INFO`` decoded as UTF-8 with undecodable bytes
replaced, ``REMOTE_ADDR`` as ``client_ip``, the identity from ``user_getter(environ)`` or
``environ["ratewarden.user"]`` or ``REMOTE_USER``). ``wsgi.input`` is read only when a rule needs
the body, at most ``Engine.body_limit`` bytes, and replaced by a stream that yields exactly the
same bytes. A denial is answered with the verdict; an allowed response gets the verdict's headers
through a wrapped ``start_response``, and ``Engine.after`` runs when the server closes the
response iterable (PEP 3333), with the status and headers the app sent.

Flask and Django reuse :func:`environ_facts` and :func:`read_body`.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from ratewarden.asgi import USER_ATTRS, LazyHeaders, build_engine, identity_of, join_headers
from ratewarden.engine import RequestFacts
from ratewarden.policy.keys import FieldReader

if TYPE_CHECKING:
    from ratewarden.engine import Engine, Verdict

__all__ = ["RateLimitMiddleware", "denial_status_line", "environ_facts", "read_body"]

log = logging.getLogger("ratewarden")

Environ = MutableMapping[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_UNPREFIXED = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}


def _utf8(native: str) -> str:
    """A PEP 3333 native string (bytes as latin-1) decoded as UTF-8, never raising."""
    try:
        raw = native.encode("latin-1")
    except UnicodeEncodeError:  # a server that already decoded it
        return native.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def environ_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """Lower-case header names; two environ keys naming one header (``HTTP_CONTENT_TYPE`` and
    ``CONTENT_TYPE``) are joined as :func:`~ratewarden.asgi.join_headers` joins repeats."""
    out: dict[str, str] = {}
    for name, value in environ.items():
        if name.startswith("HTTP_"):
            key = _HEADER_NAMES.get(name)
            if key is None:
                key = name[5:].replace("_", "-").lower()
                if len(_HEADER_NAMES) < 512:
                    _HEADER_NAMES[name] = key
        elif name in _UNPREFIXED and value:
            key = _UNPREFIXED[name].lower()
        else:
            continue
        v = value if type(value) is str else str(value)
        if key in out:
            out[key] = out[key] + ("; " if key == "cookie" else ", ") + v
        else:
            out[key] = v
    return out


#: ``HTTP_X_CLIENT_ID`` -> ``x-client-id`` (the same few names on every request; bounded)
_HEADER_NAMES: dict[str, str] = {}


def environ_facts(
    environ: Mapping[str, Any], user: object = None, user_attrs: Iterable[str] = USER_ATTRS, path: str | None = None
) -> RequestFacts:
    """RequestFacts from a WSGI environ (also Django's ``request.META``)."""
    headers = environ_headers(environ)
    identity, attrs = identity_of(user, user_attrs)
    if path is None:
        path = _utf8(str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))) or "/"
    return RequestFacts(  # positional: the keyword form of a dataclass __init__ costs twice as much
        str(environ.get("REQUEST_METHOD") or "GET").upper(),
        path,
        str(environ["REMOTE_ADDR"]) if environ.get("REMOTE_ADDR") else None,
        headers,
        str(environ.get("QUERY_STRING", "")),
        headers.get("host", "") or str(environ.get("SERVER_NAME", "")),
        str(environ.get("wsgi.url_scheme", "http")),
        identity,
        attrs,
        None,
        False,
        headers.get("content-type", ""),
    )


#: the framework behind a plain WSGI app is unknown (Werkzeug keeps the first of repeated fields
#: and cookies, Django the last): a field or cookie sent twice with different values is absent
_READER = FieldReader("refuse")


class _Replay(io.RawIOBase):
    """The bytes already read, then the rest of the original stream."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = len(buffer)
        if self._head:
            n = min(want, len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        if self._rest is None:
            return 0
        chunk = self._rest.read(want)
        if not chunk:
            return 0
        buffer[: len(chunk)] = chunk
        return len(chunk)


def read_body(facts: RequestFacts, environ: Environ, limit: int) -> None:
    """Put at most ``limit`` bytes of the body into ``facts`` and replace ``wsgi.input`` with a
    stream giving the app exactly the same bytes (a BytesIO when the whole body was read)."""
    stream = environ.get("wsgi.input")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    length = max(length, 0)
    if stream is None or (length == 0 and not environ.get("wsgi.input_terminated")):
        facts.body = b""
        return
    want = limit + 1 if length == 0 else min(length, limit + 1)
    head = _read_exactly(stream, want)
    facts.body = head[:limit]
    facts.body_truncated = len(head) > limit
    if facts.body_truncated:
        environ["wsgi.input"] = io.BufferedReader(_Replay(head, stream))
    else:
        environ["wsgi.input"] = io.BytesIO(head)


def _read_exactly(stream: Any, n: int) -> bytes:
    parts: list[bytes] = []
    while n > 0:
        chunk = stream.read(n)
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


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
