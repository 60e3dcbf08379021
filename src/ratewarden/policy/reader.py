"""Reading typed values out of a parsed TOML policy, each failure located (file, line, reason)."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from ratewarden.core.rates import PERIOD_MAX, US, parse_duration
from ratewarden.errors import ConfigError, RateParseError
from ratewarden.policy.lines import LineIndex
from ratewarden.policy.model import (
    KeyPart,
    KeySpec,
    Match,
    Network,
)

__all__ = ["HEADER_NAME_RE", "KEY_KINDS", "KeyPath", "PolicyError", "Reader", "did_you_mean", "parse_key", "show_value"]

T = TypeVar("T")

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
    """A policy that cannot be loaded: ``file``, ``line`` (0 when unknown) and ``reason``.

    A load reports every independent mistake of the file at once, as a compiler does: the error
    raised is the first one (by line) and ``errors`` holds them all, itself included; ``str()``
    gives one ``file:line: reason`` line per mistake.
    """

    def __init__(self, file: str, line: int, reason: str) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        self.errors: tuple[PolicyError, ...] = (self,)
        super().__init__(self.location())

    def location(self) -> str:
        """``file:line: reason`` (``file: reason`` when the line is not known)."""
        return f"{self.file}:{self.line}: {self.reason}" if self.line else f"{self.file}: {self.reason}"

    def __str__(self) -> str:
        return "\n".join(e.location() for e in self.errors)

    @classmethod
    def of(cls, errors: list[PolicyError]) -> PolicyError:
        """One error carrying every mistake, ordered by line (those without a line first)."""
        ordered = sorted(errors, key=lambda e: e.line)
        first = ordered[0]
        first.errors = tuple(ordered)
        return first


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
        #: the mistakes found so far; the load goes on past each independent one
        self.errors: list[PolicyError] = []

    def fail(self, path: KeyPath, reason: str) -> NoReturn:
        raise PolicyError(self.source, self.lines.line(path), reason)

    def report(self, path: KeyPath, reason: str) -> None:
        """Record a mistake and go on (the load fails at the end, with every mistake)."""
        self.errors.append(PolicyError(self.source, self.lines.line(path), reason))

    def attempt(self, read: Callable[[], T]) -> T | None:
        """``read()``, or None when it failed: its :class:`PolicyError` is recorded and the load
        goes on with the parts that do not depend on this one."""
        try:
            return read()
        except PolicyError as exc:
            self.errors.extend(exc.errors)
            return None

    # -- top level ---------------------------------------------------------------------------
    def known(self, table: Mapping[str, Any], path: KeyPath, allowed: tuple[str, ...], what: str) -> set[str]:
        """Report every key of ``table`` that is not ``allowed`` (with the nearest allowed one);
        the allowed keys suggested, so that a misspelt required key is not also "missing"."""
        meant: set[str] = set()
        for k in table:
            if k not in allowed:
                close = difflib.get_close_matches(k, allowed, n=1, cutoff=0.6)
                meant.update(close)
                self.report(
                    (*path, k), f"unknown key {k!r} in {what};{did_you_mean(k, allowed)} allowed: {', '.join(allowed)}"
                )
        return meant

    def table(self, raw: Mapping[str, Any], path: KeyPath, where: KeyPath | None = None) -> dict[str, Any]:
        v = raw.get(str(path[-1]), {})
        if not isinstance(v, dict):
            self.fail(path, f"{'.'.join(str(p) for p in (where or path))} must be a table")
        return v

    def unique(self, items: list[Any], what: str) -> None:
        """Report every ``[[what]]`` whose ``name`` an earlier one already has."""
        seen: set[str] = set()
        for i, item in enumerate(items):
            n = item.get("name") if isinstance(item, dict) else None
            if not isinstance(n, str):
                continue
            if n in seen:
                self.report((what, i, "name"), f"two {what}s are named {n!r}; names must be unique")
            seen.add(n)

    def string(self, t: Mapping[str, Any], path: KeyPath, default: str | None = None) -> str:
        v = t.get(str(path[-1]), default)
        if v is None:
            self.fail(path[:-1], f"missing required key {path[-1]!r}")
        if not isinstance(v, str):
            shown = _tname(v) if isinstance(v, list | dict) else f"{_tname(v)} ({show_value(v)})"
            self.fail(path, f"{path[-1]!r} must be a string, not {shown}")
        return v

    def choice(self, t: Mapping[str, Any], path: KeyPath, choices: tuple[str, ...], default: str) -> str:
        v = self.string(t, path, default)
        if v not in choices:
            self.fail(
                path,
                f"{path[-1]!r} must be one of {', '.join(repr(c) for c in choices)}, not {show_value(v)};"
                f"{did_you_mean(v, choices)}".rstrip(";"),
            )
        return v

    def integer(self, t: Mapping[str, Any], path: KeyPath, default: int, lo: int, hi: int) -> int:
        v = t.get(str(path[-1]), default)
        if type(v) is not int or not lo <= v <= hi:
            self.fail(path, f"{path[-1]!r} must be an integer from {lo:,} to {hi:,}, not {show_value(v)}")
        return v

    def seconds(self, t: Mapping[str, Any], path: KeyPath, default: float, *, zero: bool = False) -> float:
        """A finite number of seconds, above 0 (or >= 0 with ``zero``), at most ten years."""
        v = t.get(str(path[-1]), default)
        number = not isinstance(v, bool) and isinstance(v, int | float)
        if not number or not (v >= 0 if zero else v > 0) or not v <= PERIOD_MAX / US:  # NaN fails both
            least = ">= 0" if zero else "above 0"
            self.fail(
                path, f"{path[-1]!r} must be a number of seconds {least} and at most 10 years, not {show_value(v)}"
            )
        return float(v)

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
        v = t[str(path[-1])]
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            self.fail(
                path, f"{path[-1]!r} must be a duration such as '1 hour' or a number of seconds, not {show_value(v)}"
            )
        try:
            return parse_duration(v)
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
                bad = (
                    next((x for x in st if type(x) is not int or not 100 <= x <= 599), st)
                    if isinstance(st, list)
                    else st
                )
                self.fail(
                    (*mp, "status"), f"'status' must be a list of HTTP status codes (100 to 599), not {show_value(bad)}"
                )
            codes = st
        return Match(
            paths=self.paths(m, (*mp, "path")),
            methods=frozenset(methods),
            hosts=tuple(h.lower() for h in self.strings(m, (*mp, "host"))),
            schemes=frozenset(schemes),
            statuses=frozenset(codes),
        )

    # -- sections ----------------------------------------------------------------------------


def did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    """`` did you mean 'limits'?`` when a choice is close to ``word`` (difflib), else ``""``."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" did you mean {close[0]!r}?" if close else ""


def show_value(v: Any) -> str:
    """A value as an error message quotes it: the type for the wrong kind, a huge number by size."""
    if isinstance(v, bool | list | dict) or not isinstance(v, int | float | str):
        return f"{_tname(v)} ({v!r:.40})" if not isinstance(v, list | dict) else _tname(v)
    if type(v) is int and abs(v) >= 10**15:
        return f"a {len(str(abs(v)))}-digit number"
    return f"{v!r:.60}"


def _tname(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", list: "a list", dict: "a table"}.get(
        type(v), type(v).__name__
    )
