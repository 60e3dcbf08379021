"""How a request's cookies, query string and body are read for ``cookie:``, ``query:`` and
``body:`` keys: :class:`FieldReader` (Starlette's rules by default) and the parsers it uses.
Nothing here raises: an unreadable value is absent."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["AMBIGUOUS", "DEFAULT_READER", "FieldReader", "parse_cookies"]

_UNQUOTE = re.compile(r"\\(?:([0-3][0-7][0-7])|(.))")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_MAX_FIELDS = 1000
#: a field sent twice with different values where the framework's choice is unknown
AMBIGUOUS: Any = object()


def _unquote(value: str) -> str:
    """A cookie value as ``http.cookies`` unquotes it (``"a\\"b"`` -> ``a"b``)."""
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    return _UNQUOTE.sub(lambda m: chr(int(m[1], 8)) if m[1] else m[2], value[1:-1])


def _pairs_cookie(raw: str) -> list[tuple[str, str]]:
    """The ``(name, value)`` chunks of a ``Cookie`` header the way browsers, Django and Starlette
    read it: split on ``;``, a chunk without ``=`` is a value with an empty name, a malformed
    chunk never hides the chunks after it (``SimpleCookie`` stops at the first one)."""
    out: list[tuple[str, str]] = []
    for chunk in raw[:65536].split(";"):
        key, eq, val = chunk.partition("=")
        if not eq:
            key, val = "", chunk
        key, val = key.strip(), val.strip()
        if key or val:
            out.append((key, _unquote(val)))
    return out


def _pick(pairs: list[tuple[str, str]], duplicates: str) -> dict[str, Any]:
    """One value per name: the ``first`` or the ``last`` one, as the framework picks it, or
    :data:`AMBIGUOUS` (``refuse``) when the values differ and the framework is unknown."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k not in out or duplicates == "last":
            out[k] = v
        elif duplicates == "refuse" and out[k] != v:
            out[k] = AMBIGUOUS
    return out


def parse_cookies(raw: str, duplicates: str = "last") -> dict[str, Any]:
    """A ``Cookie`` header as a dict (see :func:`_pairs_cookie`); ``duplicates``: ``last``
    (Starlette, Django), ``first`` (Werkzeug/Flask) or ``refuse``."""
    return _pick(_pairs_cookie(raw), duplicates)


def _media_type(facts: Any) -> str:
    raw: str = facts.content_type or facts.headers.get("content-type", "")
    return raw.split(";", 1)[0].strip().lower()


def _codec(name: str) -> str:
    """The request's charset as Starlette takes it for a multipart body: Latin-1 if unknown."""
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "latin-1"


def _safe_decode(data: bytes, codec: str) -> str:
    """A form field's bytes as Starlette decodes them: in the request's charset, else Latin-1
    (never unreadable, so one bad field cannot turn the whole body into the fallback key)."""
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return data.decode("latin-1")


def _multipart_fields(facts: Any) -> list[tuple[str, str]] | None:
    """The text fields of a ``multipart/form-data`` body (files skipped), parsed by the standard
    library's MIME parser; None when it is not a well-formed multipart body."""
    from email.parser import BytesParser
    from email.policy import HTTP

    ctype: str = facts.content_type or facts.headers.get("content-type", "")
    try:
        head = b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n"
        msg = BytesParser(policy=HTTP).parsebytes(head + facts.body)
        if not msg.is_multipart() or msg.defects:
            return None
        charset = _codec(msg.get_content_charset() or "utf-8")
        out: list[tuple[str, str]] = []
        for part in msg.iter_parts():
            if part.get_content_disposition() != "form-data" or part.get_filename() is not None:
                continue
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                out.append((name, _safe_decode(payload, charset)))
            if len(out) > _MAX_FIELDS:
                return None
        return out
    except (ValueError, LookupError, TypeError):  # a bad charset, a malformed header
        return None


class FieldReader:
    """How the application's framework reads cookies, the query string and the body, so that
    ``cookie:``, ``query:`` and ``body:`` keys take the very value the handler will act on.

    This default follows Starlette (and FastAPI): a field or cookie sent twice is the *last*
    one; cookies are parsed leniently (Django's and Starlette's parser: a malformed cookie
    never hides the ones after it); an ``application/x-www-form-urlencoded`` or
    ``multipart/form-data`` body is a form (its text fields), every other body is JSON whatever
    its ``Content-Type`` says (``request.json()`` does not look at it), in any encoding
    ``json.loads`` detects (UTF-8/16/32, with or without a BOM). ``duplicates="first"``
    is Werkzeug's choice, ``"refuse"`` treats differing repeats as absent (a plain WSGI app
    whose framework is unknown). Adapters for Flask and Django pass readers that ask the
    framework itself. Nothing here raises: an unreadable value is absent."""

    def __init__(self, duplicates: str = "last") -> None:
        self.duplicates = duplicates

    def cookies(self, facts: Any) -> Mapping[str, Any]:
        return parse_cookies(facts.headers.get("cookie", ""), self.duplicates)

    def query(self, facts: Any) -> Mapping[str, Any]:
        try:
            pairs = parse_qsl(facts.query_string[:65536], keep_blank_values=True, max_num_fields=_MAX_FIELDS)
        except ValueError:
            return {}
        return _pick(pairs, self.duplicates)

    def body(self, facts: Any) -> tuple[str, Any] | None:
        """``("json", value)`` or ``("form", {name: value})``, or None (absent or unreadable)."""
        if facts.body is None or facts.body_truncated:
            return None
        mtype = _media_type(facts)
        if mtype == "multipart/form-data":
            pairs = _multipart_fields(facts)
            return None if pairs is None else ("form", _pick(pairs, self.duplicates))
        if mtype == "application/x-www-form-urlencoded":
            # as Starlette reads it: the bytes as Latin-1, then %-escapes as UTF-8 (an invalid
            # one replaced), so a byte that is not UTF-8 in any field never hides the others
            try:
                text = facts.body.decode("latin-1")
                pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
            except ValueError:
                return None
            return "form", _pick(pairs, self.duplicates)
        try:
            return "json", json.loads(facts.body)
        except (ValueError, RecursionError):  # UnicodeDecodeError included
            return None


DEFAULT_READER = FieldReader()
