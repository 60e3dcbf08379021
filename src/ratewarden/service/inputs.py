"""What a client sends to the decision service, checked before the engine sees it.

Every mistake is a :class:`ClientError` with the offending ``field`` (a dotted path, or None for
the body as a whole) and a message naming the value; the HTTP layer answers 400
``{"error": ..., "field": ...}``. Nothing a client sends reaches the engine unchecked: a cost is
an integer (``true``, ``1.5``, ``NaN``, ``"3"`` and negative numbers are refused), keys and
names are bounded strings, headers are a flat object of strings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ratewarden.engine import RequestFacts

__all__ = ["MAX_COST", "MAX_KEY", "CheckKey", "ClientError", "parse_body", "parse_check", "parse_reset"]

MAX_KEY = 4096  # characters of a key
MAX_TEXT = 8192  # characters of a path, header value, user...
MAX_HEADERS = 200
MAX_COST = 2**53  # larger costs are refused (no limit holds them; JSON readers lose precision)
_CHECK_KEYS = frozenset({"rule", "key", "cost", "attrs"})
_FACT_KEYS = frozenset(
    {"method", "path", "ip", "headers", "user", "attrs", "query", "host", "scheme", "body", "content_type"}
)


class ClientError(ValueError):
    """A request the service refuses with 400: ``field`` names the part that is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class CheckKey:
    rule: str
    key: str
    cost: int = 1
    attrs: Mapping[str, str] = field(default_factory=dict)


def _reject_constant(name: str) -> Any:
    raise ClientError(f"{name} is not valid JSON", None)


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode  # built once: the hot path


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body (``NaN``/``Infinity`` are not JSON and are refused)."""
    try:
        text = raw.decode("utf-8")
        value = _decode(text)
    except ClientError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ClientError(f"the body is not valid JSON: {str(exc)[:200]}", None) from None
    if not isinstance(value, dict):
        raise ClientError(f"the body must be a JSON object, not {_tname(value)}", None)
    return value


def _tname(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _string(d: Mapping[str, Any], name: str, where: str, *, required: bool, limit: int = MAX_TEXT) -> str | None:
    v = d.get(name)
    if v is None:
        if required:
            raise ClientError(f"{where} is required", where)
        return None
    if not isinstance(v, str):
        raise ClientError(f"{where} must be a string, not {_tname(v)}", where)
    if len(v) > limit:
        raise ClientError(f"{where} is longer than {limit} characters", where)
    return v


def _unknown(d: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
    for k in d:
        if k not in allowed:
            raise ClientError(f"unknown field {k!r}; expected some of {', '.join(sorted(allowed))}", prefix + k)


def _strings(v: Any, where: str, limit: int = MAX_HEADERS) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ClientError(f"{where} must be an object of strings, not {_tname(v)}", where)
    if len(v) > limit:
        raise ClientError(f"{where} has more than {limit} entries", where)
    out: dict[str, str] = {}
    for k, x in v.items():
        if not isinstance(x, str) or len(x) > MAX_TEXT or len(k) > 256:
            raise ClientError(f"{where}[{k[:64]!r}] must be a string of at most {MAX_TEXT} characters", where)
        out[k] = x
    return out


def parse_cost(v: Any, where: str = "cost") -> int:
    """A cost: an integer from 0 to 2^53 (JSON ``1.0`` is a float and refused too)."""
    if v is None:
        return 1
    if type(v) is not int:
        if isinstance(v, float) and not math.isfinite(v):
            raise ClientError(f"{where} must be a finite integer", where)
        raise ClientError(f"{where} must be an integer >= 0, not {_tname(v)} ({str(v)[:40]})", where)
    if v < 0:
        raise ClientError(f"{where} must be >= 0, not {v}", where)
    if v > MAX_COST:
        raise ClientError(f"{where} is larger than {MAX_COST}", where)
    return v


def parse_check(body: Mapping[str, Any], rules: frozenset[str]) -> CheckKey | RequestFacts:
    """``{"rule", "key", "cost", "attrs"}`` or ``{"request": {...}}``."""
    if "request" in body:
        if len(body) != 1:
            extra = next(k for k in body if k != "request")
            raise ClientError("a check by request facts takes only 'request'", extra)
        return parse_facts(body["request"])
    _unknown(body, _CHECK_KEYS, "")
    rule = _string(body, "rule", "rule", required=True, limit=64)
    assert rule is not None
    if rule not in rules:
        raise ClientError(f"no rule named {rule!r}", "rule")
    key = _string(body, "key", "key", required=True, limit=MAX_KEY)
    assert key is not None
    if not key:
        raise ClientError("key is empty", "key")
    return CheckKey(rule, key, parse_cost(body.get("cost")), _strings(body.get("attrs"), "attrs", 32))


def parse_facts(r: Any) -> RequestFacts:
    if not isinstance(r, dict):
        raise ClientError(f"request must be an object, not {_tname(r)}", "request")
    _unknown(r, _FACT_KEYS, "request.")
    method = _string(r, "method", "request.method", required=False, limit=16) or "GET"
    path = _string(r, "path", "request.path", required=True)
    assert path is not None
    if not path.startswith("/"):
        raise ClientError(f"request.path must start with '/', not {path[:64]!r}", "request.path")
    ip = _string(r, "ip", "request.ip", required=False, limit=64)
    headers = {k.lower(): v for k, v in _strings(r.get("headers"), "request.headers").items()}
    user = _string(r, "user", "request.user", required=False, limit=MAX_KEY)
    attrs = _strings(r.get("attrs"), "request.attrs", 32)
    body = _string(r, "body", "request.body", required=False, limit=64 * 1024)
    scheme = _string(r, "scheme", "request.scheme", required=False, limit=8) or "http"
    if scheme not in ("http", "https", "ws", "wss"):
        raise ClientError(f"request.scheme must be http, https, ws or wss, not {scheme!r}", "request.scheme")
    return RequestFacts(
        method=method.upper(),
        path=path,
        client_ip=ip,
        headers=headers,
        query_string=_string(r, "query", "request.query", required=False) or "",
        host=_string(r, "host", "request.host", required=False, limit=256) or headers.get("host", ""),
        scheme=scheme,
        user=user,
        user_attrs=attrs,
        body=None if body is None else body.encode("utf-8", "surrogatepass"),
        content_type=_string(r, "content_type", "request.content_type", required=False, limit=256)
        or headers.get("content-type", ""),
    )


def parse_reset(body: Mapping[str, Any], names: frozenset[str]) -> tuple[str, str]:
    _unknown(body, frozenset({"rule", "key"}), "")
    rule = _string(body, "rule", "rule", required=True, limit=64)
    key = _string(body, "key", "key", required=True, limit=MAX_KEY)
    assert rule is not None and key is not None
    if rule not in names:
        raise ClientError(f"no rule or ban named {rule!r}", "rule")
    if not key:
        raise ClientError("key is empty", "key")
    return rule, key
