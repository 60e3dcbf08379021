"""Helpers shared by the engine tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ratewarden.engine import Engine, RequestFacts

#: the ``make`` fixture: ``make(policy, **engine_keywords) -> Engine`` (closed after the test)
MakeEngine = Callable[..., Engine]


def req(path: str = "/", ip: str | None = "198.51.100.7", method: str = "GET", **kw: Any) -> RequestFacts:
    return RequestFacts(method=method, path=path, client_ip=ip, **kw)


def header(verdict: Any, name: str) -> str | None:
    for k, v in verdict.headers:
        if k.lower() == name.lower():
            return str(v)
    return None
