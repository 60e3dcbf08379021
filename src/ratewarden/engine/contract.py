"""The request/verdict contract between the engine and its adapters.

Adapters (ASGI, WSGI, Flask, Django, the decision service) translate their request into
:class:`RequestFacts`, call :meth:`Engine.check` (or ``acheck``), apply the :class:`Verdict`
(either send ``verdict.status``/``headers``/``body`` as the response, or add
``verdict.headers`` to the app's response), and after the app responded call
:meth:`Engine.after` (or ``aafter``) with the status and response headers, which feeds
Fail2Ban counters and charges costs known only after the response.

INTERFACE CONTRACT (adapters rely on it; extend, don't change):

* ``RequestFacts`` fields below; header names lower-case; ``body`` is filled by the adapter
  only when :meth:`Engine.needs_body` says so, read up to ``Engine.body_limit`` bytes (the
  adapter hands the full body on to the app unchanged);
* ``Verdict.allowed``; ``Verdict.status`` (200 allowed, 429 throttled, 403 blocked/banned,
  503 store failure under a fail-closed rule that asks for it); ``Verdict.headers`` a list of
  ``(name, value)`` to put on the response whatever it is (rate-limit headers, and
  ``Retry-After`` on a denial); ``Verdict.body`` bytes (JSON) for a denial, else ``None``;
  ``Verdict.content_type``;
* ``Engine.check``/``acheck`` never raise for anything a client sends;
* ``Engine.exempt(facts)`` is cheap and True for paths that are never counted.

Additions (this module): call ``after``/``aafter`` for denied requests too (with
``status=verdict.status``): Allow2Ban counts every request, and it is a no-op when there is
nothing to do (``verdict.pending is None``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["EngineLike", "RequestFacts", "Verdict"]


@dataclass(slots=True)
class RequestFacts:
    """What the engine may know about a request, in plain Python types."""

    method: str
    path: str  # decoded; undecodable bytes replaced (never raises)
    client_ip: str | None  # the socket peer, before any proxy header is believed
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names; a repeat as the app sees it
    query_string: str = ""
    host: str = ""
    scheme: str = "http"  # "http", "https", "ws", "wss"
    user: str | None = None  # the identity the app put on the request (adapter-specific)
    user_attrs: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"role": "OWNER"}
    body: bytes | None = None  # only when Engine.needs_body(facts); at most Engine.body_limit
    body_truncated: bool = False  # True when the body was larger than the cap
    content_type: str = ""
    #: how the app's framework reads cookies, the query and the body (a
    #: :class:`~ratewarden.policy.keys.FieldReader`); None: Starlette's rules
    reader: Any = None


@dataclass(slots=True)
class Verdict:
    allowed: bool
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    content_type: str = "application/json"
    #: seconds until the same request would pass: 0 when allowed (and for a blocklist denial,
    #: which no wait cures); ``math.inf`` when it never can (a cost above the limit, a zero tier)
    retry_after: float = 0.0
    rule: str | None = None
    decisions: list[Any] = field(default_factory=list)
    # engine-private state carried from check() to after()
    pending: Any = None


@runtime_checkable
class EngineLike(Protocol):
    """What the adapters (ASGI, WSGI, Flask, Django, FastAPI) call on an engine, and all they
    may call: :class:`~ratewarden.engine.Engine` satisfies it, and so does any stand-in (the
    contract above says what each call must do)."""

    body_limit: int

    def exempt(self, facts: RequestFacts) -> bool: ...

    def needs_body(self, facts: RequestFacts) -> bool: ...

    def check(self, facts: RequestFacts) -> Verdict: ...

    async def acheck(self, facts: RequestFacts) -> Verdict: ...

    def after(self, facts: RequestFacts, verdict: Verdict, status: int, headers: Mapping[str, str]) -> None: ...

    async def aafter(self, facts: RequestFacts, verdict: Verdict, status: int, headers: Mapping[str, str]) -> None: ...
