"""The facts of a WSGI environ (also Django's ``request.META``) and the body read from
``wsgi.input``: shared by the WSGI middleware, the Flask extension and the Django middleware."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from ratewarden._adapters.common import USER_ATTRS, identity_of
from ratewarden.engine import RequestFacts

Environ = MutableMapping[str, Any]

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
    ``CONTENT_TYPE``) are joined as :func:`~ratewarden._adapters.join_headers` joins repeats."""
    out: dict[str, str] = {}
    names = _HEADER_NAMES
    for name, value in environ.items():
        key = names.get(name)  # one look-up per environ key, header or not (the same keys every time)
        if key is None:
            if name in _UNPREFIXED:  # never cached: counted only when not empty
                if not value:
                    continue
                key = _UNPREFIXED[name]
            else:
                key = name[5:].replace("_", "-").lower() if name.startswith("HTTP_") else _SKIP
                if len(names) < 512:
                    names[name] = key
                if key is _SKIP:
                    continue
        elif key is _SKIP:
            continue
        v = value if type(value) is str else str(value)
        if key in out:
            out[key] = out[key] + ("; " if key == "cookie" else ", ") + v
        else:
            out[key] = v
    return out


#: ``HTTP_X_CLIENT_ID`` -> ``x-client-id``, and ``_SKIP`` for an environ key that names no
#: header (``wsgi.input``, ``REQUEST_METHOD``...): the same few keys on every request; bounded
_HEADER_NAMES: dict[str, str] = {}
_SKIP = "\0not a header"  # compared by identity: no computed name is this very object


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
