"""Reading typed values out of a parsed TOML policy, each failure located (file, line, reason)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from ratewarden.core.rates import parse_duration
from ratewarden.errors import ConfigError, RateParseError
from ratewarden.policy.lines import LineIndex
from ratewarden.policy.model import (
    KeyPart,
    KeySpec,
    Match,
    Network,
)

__all__ = ["HEADER_NAME_RE", "KEY_KINDS", "KeyPath", "PolicyError", "Reader", "parse_key"]

#: where a value sits in the document: ("rule", 0, "limits")
KeyPath = tuple[str | int, ...]

MATCH_KEYS = ("path", "methods", "host", "scheme")
KEY_KINDS = ("ip", "user", "session", "header", "cookie", "jwt", "query", "body")
_NAMED_KINDS = ("header", "cookie", "jwt", "query", "body")
_FILTERS = ("lower", "upper", "strip")
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
#: the HTTP methods, and ``MESSAGE``: a websocket message checked by the ASGI middleware with
#: ``websocket_messages=True`` (the connect itself is a ``GET``)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "MESSAGE"})


class PolicyError(ConfigError):
    """A policy that cannot be loaded: ``file``, ``line`` (0 when unknown) and ``reason``."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        super().__init__(f"{file}:{line}: {reason}" if line else f"{file}: {reason}")


def parse_key(text: str) -> KeySpec:
    """``"body:email|lower"``, ``"ip+header:X-Api-Key"`` -> :class:`KeySpec`. Raises ConfigError."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("a key is a non-empty string such as 'ip', 'user' or 'header:X-Api-Key'")
    parts: list[KeyPart] = []
    for raw in text.split("+"):
        base, *filters = [s.strip() for s in raw.split("|")]
        kind, sep, name = base.partition(":")
        kind = kind.strip().lower()
        name = name.strip()
        if kind not in KEY_KINDS:
            raise ConfigError(f"unknown key source {kind!r} in {text!r}; use one of {', '.join(KEY_KINDS)}")
        if kind in _NAMED_KINDS and not name:
            raise ConfigError(f"the key source {kind!r} needs a name, e.g. '{kind}:NAME' (in {text!r})")
        if kind not in _NAMED_KINDS and sep:
            raise ConfigError(f"the key source {kind!r} takes no name (in {text!r})")
        if kind in ("header",):
            if not HEADER_NAME_RE.match(name):
                raise ConfigError(f"{name!r} is not a valid header name (in {text!r})")
            name = name.lower()
        for f in filters:
            if f not in _FILTERS:
                raise ConfigError(f"unknown key filter {f!r} in {text!r}; use one of {', '.join(_FILTERS)}")
        parts.append(KeyPart(kind, name, tuple(filters)))
    return KeySpec(tuple(parts), text.strip())


class Reader:
    """Typed accessors over raw TOML tables; every failure raises :class:`PolicyError`."""

    def __init__(self, source: str, lines: LineIndex, env: Mapping[str, str], base_dir: Path) -> None:
        self.source = source
        self.lines = lines
        self.env = env
        self.base_dir = base_dir

    def fail(self, path: KeyPath, reason: str) -> NoReturn:
        raise PolicyError(self.source, self.lines.line(path), reason)

    # -- top level ---------------------------------------------------------------------------
    def known(self, table: Mapping[str, Any], path: KeyPath, allowed: tuple[str, ...], what: str) -> None:
        for k in table:
            if k not in allowed:
                self.fail((*path, k), f"unknown key {k!r} in {what}; allowed: {', '.join(allowed)}")

    def table(self, raw: Mapping[str, Any], path: KeyPath, where: KeyPath | None = None) -> dict[str, Any]:
        v = raw.get(str(path[-1]), {})
        if not isinstance(v, dict):
            self.fail(path, f"{'.'.join(str(p) for p in (where or path))} must be a table")
        return v

    def unique(self, names: list[str], what: str) -> None:
        seen: set[str] = set()
        for i, n in enumerate(names):
            if n in seen:
                self.fail((what, i, "name"), f"two {what}s are named {n!r}; names must be unique")
            seen.add(n)

    def string(self, t: Mapping[str, Any], path: KeyPath, default: str | None = None) -> str:
        v = t.get(str(path[-1]), default)
        if v is None:
            self.fail(path[:-1], f"missing required key {path[-1]!r}")
        if not isinstance(v, str):
            self.fail(path, f"{path[-1]!r} must be a string, not {_tname(v)}")
        return v

    def choice(self, t: Mapping[str, Any], path: KeyPath, choices: tuple[str, ...], default: str) -> str:
        v = self.string(t, path, default)
        if v not in choices:
            self.fail(path, f"{path[-1]!r} must be one of {', '.join(repr(c) for c in choices)}, not {v!r}")
        return v

    def integer(self, t: Mapping[str, Any], path: KeyPath, default: int, lo: int, hi: int) -> int:
        v = t.get(str(path[-1]), default)
        if type(v) is not int or not lo <= v <= hi:
            self.fail(path, f"{path[-1]!r} must be an integer from {lo} to {hi}, not {v!r}")
        return v

    def boolean(self, t: Mapping[str, Any], path: KeyPath, default: bool = False) -> bool:
        v = t.get(str(path[-1]), default)
        if not isinstance(v, bool):
            self.fail(path, f"{path[-1]!r} must be true or false, not {v!r}")
        return v

    def strings(self, t: Mapping[str, Any], path: KeyPath, *, allow_single: bool = True) -> tuple[str, ...]:
        v = t.get(str(path[-1]), [])
        if isinstance(v, str) and allow_single:
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self.fail(path, f"{path[-1]!r} must be a list of strings")
        return tuple(v)

    def duration(self, t: Mapping[str, Any], path: KeyPath) -> int:
        if path[-1] not in t:
            self.fail(path[:-1], f"missing required key {path[-1]!r}")
        try:
            return parse_duration(t[str(path[-1])])
        except RateParseError as exc:
            self.fail(path, f"bad duration for {path[-1]!r}: {exc}")

    def networks(self, t: Mapping[str, Any], path: KeyPath) -> tuple[Network, ...]:
        out: list[Network] = []
        for i, s in enumerate(self.strings(t, path)):
            try:
                out.append(ipaddress.ip_network(s.strip(), strict=True))
            except ValueError as exc:
                self.fail((*path, i), f"bad IP address or CIDR {s!r}: {exc}")
        return tuple(out)

    def paths(self, t: Mapping[str, Any], path: KeyPath) -> tuple[str, ...]:
        pats = self.strings(t, path)
        for p in pats:
            if not p.startswith(("/", "*")):
                self.fail(path, f"a path pattern starts with '/' or '*', not {p!r}")
        return pats

    def key(self, t: Mapping[str, Any], path: KeyPath, default: str) -> KeySpec:
        text = self.string(t, path, default)
        try:
            return parse_key(text)
        except ConfigError as exc:
            self.fail(path, str(exc))

    def fallback(self, t: Mapping[str, Any], path: KeyPath) -> KeySpec | None:
        text = self.string(t, path, "ip")
        if text in ("skip", "none"):
            return None
        try:
            return parse_key(text)
        except ConfigError as exc:
            self.fail(path, f"bad fallback: {exc} (or use 'skip')")

    def match(self, t: Mapping[str, Any], path: KeyPath, *, statuses: bool = False) -> Match:
        m = t.get("match", {})
        mp = (*path, "match")
        if not isinstance(m, dict):
            self.fail(mp, '\'match\' must be a table, e.g. { path = "/login", methods = ["POST"] }')
        self.known(m, mp, (*MATCH_KEYS, "status") if statuses else MATCH_KEYS, "match")
        methods = [x.upper() for x in self.strings(m, (*mp, "methods"))]
        for x in methods:
            if x not in _METHODS:
                self.fail((*mp, "methods"), f"unknown HTTP method {x!r}")
        schemes = self.strings(m, (*mp, "scheme"))
        for s in schemes:
            if s not in ("http", "https", "ws", "wss"):
                self.fail((*mp, "scheme"), f"scheme must be http, https, ws or wss, not {s!r}")
        codes: list[int] = []
        if statuses and "status" in m:
            st = m["status"]
            st = [st] if isinstance(st, int) else st
            if not isinstance(st, list) or not all(type(x) is int and 100 <= x <= 599 for x in st):
                self.fail((*mp, "status"), f"'status' must be a list of HTTP status codes, not {m['status']!r}")
            codes = st
        return Match(
            paths=self.paths(m, (*mp, "path")),
            methods=frozenset(methods),
            hosts=tuple(h.lower() for h in self.strings(m, (*mp, "host"))),
            schemes=frozenset(schemes),
            statuses=frozenset(codes),
        )

    # -- sections ----------------------------------------------------------------------------


def _tname(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", list: "a list", dict: "a table"}.get(
        type(v), type(v).__name__
    )
