"""The loaded policy: immutable dataclasses, built by :mod:`ratewarden.policy.load`.

Nothing here does I/O. Windows (an algorithm bound to a rate) are compiled at load time, once
per rule and per tier, so the request path only looks them up.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ratewarden.core.algorithms.base import Window

__all__ = [
    "Ban",
    "CostSpec",
    "Descriptor",
    "JWTConfig",
    "KeySpec",
    "Match",
    "Network",
    "Policy",
    "ResponseConfig",
    "Rule",
    "Safelist",
    "Blocklist",
    "Settings",
    "Tiers",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
HeadersMode = Literal["draft", "legacy", "both", "none"]


@dataclass(frozen=True, slots=True)
class Match:
    """Which requests a rule applies to. Empty tuples match everything."""

    paths: tuple[str, ...] = ()
    methods: frozenset[str] = frozenset()
    hosts: tuple[str, ...] = ()
    schemes: frozenset[str] = frozenset()
    statuses: frozenset[int] = frozenset()  # bans only: the response statuses that count


@dataclass(frozen=True, slots=True)
class KeyPart:
    """One source of a key: ``kind`` is ip, user, session, header, cookie, jwt, query, body."""

    kind: str
    name: str = ""
    filters: tuple[str, ...] = ()

    def __str__(self) -> str:
        base = f"{self.kind}:{self.name}" if self.name else self.kind
        return "|".join((base, *self.filters))


@dataclass(frozen=True, slots=True)
class KeySpec:
    """``"body:email|lower"``, ``"ip+header:X-Api-Key"``: every part must be present."""

    parts: tuple[KeyPart, ...]
    text: str

    @property
    def needs_body(self) -> bool:
        return any(p.kind == "body" for p in self.parts)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class CostSpec:
    """``constant`` units, or read from a request header, or charged after the response."""

    source: Literal["constant", "header", "response_header"] = "constant"
    value: int = 1
    header: str = ""  # lower-case

    @property
    def after_response(self) -> bool:
        return self.source == "response_header"


@dataclass(frozen=True, slots=True)
class Tiers:
    """Limits per role or plan. ``attr``: the identity attribute or verified JWT claim read.

    ``mode == "multiply"``: ``factors`` scale every limit (0 means no budget at all);
    ``mode == "replace"``: ``windows`` holds the tier's own compiled windows.
    """

    attr: str
    mode: Literal["multiply", "replace"]
    factors: Mapping[str, float] = field(default_factory=dict)
    windows: Mapping[str, tuple[Window, ...]] = field(default_factory=dict)
    default: str | None = None  # tier used when the attribute is missing or unknown


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An Envoy rate-limit descriptor the rule answers (the decision service's gRPC side):
    ``entries`` are ``(key, value)`` in order, ``value`` None when the request supplies it (the
    unpinned values, joined by ``|``, are the rule's key), else the value that must be equal."""

    domain: str
    entries: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    match: Match
    key: KeySpec
    fallback: KeySpec | None  # None: the rule does not apply when the key is missing ("skip")
    windows: tuple[Window, ...]
    algorithm: str
    cost: CostSpec = CostSpec()
    tiers: Tiers | None = None
    shadow: bool = False
    exempt: tuple[str, ...] = ()
    on_store_error: str = "allow"
    line: int = 0
    #: a body over body_limit, when the key reads the body: "fallback" (the fallback key) or "deny" (413)
    on_oversize_body: Literal["fallback", "deny"] = "fallback"
    descriptor: Descriptor | None = None

    @property
    def limits_text(self) -> str:
        return "; ".join(str(w.rate) for w in self.windows)


@dataclass(frozen=True, slots=True)
class Ban:
    """Fail2Ban (``mode == "fail2ban"``: count responses whose status is in ``match.statuses``) or
    Allow2Ban (``mode == "allow2ban"``: count every matching request). ``max`` counted within
    ``counter`` bans the key for ``ban`` (a one-unit sliding log of ``ban_for``)."""

    name: str
    match: Match
    key: KeySpec
    fallback: KeySpec | None
    mode: Literal["fail2ban", "allow2ban"]
    max: int
    within_us: int
    ban_for_us: int
    counter: Window
    ban: Window
    shadow: bool = False
    line: int = 0


@dataclass(frozen=True, slots=True)
class Safelist:
    networks: tuple[Network, ...] = ()
    secret_header: str = ""  # lower-case header name
    secret: str = ""  # the shared secret (from the environment)
    paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Blocklist:
    networks: tuple[Network, ...] = ()
    paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JWTConfig:
    """How ``jwt:CLAIM`` keys verify a token. Exactly one key source is set."""

    algorithms: tuple[str, ...]
    secret: str = ""
    public_key: str = ""
    jwks: Mapping[str, Any] = field(default_factory=dict)  # kid -> PyJWK
    header: str = "authorization"
    cookie: str = ""
    audience: str | tuple[str, ...] | None = None  # a token must name one of them
    issuer: str | None = None
    leeway: float = 0.0
    max_length: int = 8192


#: the variables a response body may use (``[response] body = { field = "variable" }``)
BODY_VARIABLES = frozenset(
    {"code", "message", "retry_after", "retry_after_exact", "rule", "limit", "remaining", "reset", "reset_after"}
)


@dataclass(frozen=True, slots=True)
class ResponseConfig:
    status: int = 429
    code: str = "rate_limited"
    message: str = "Too many requests; retry in {retry_after} seconds."
    ban_code: str = "banned"
    ban_message: str = "This client is banned; retry in {retry_after} seconds."
    block_code: str = "blocked"
    block_message: str = "Access denied."
    unavailable_code: str = "unavailable"
    unavailable_message: str = "The rate limiter is unavailable; retry shortly."
    body: Mapping[str, str] = field(
        default_factory=lambda: {
            "error": "code",
            "message": "message",
            "retry_after": "retry_after",
            "rule": "rule",
            "limit": "limit",
            "remaining": "remaining",
            "reset": "reset",
        }
    )


@dataclass(frozen=True, slots=True)
class Settings:
    storage: str = "memory://"
    headers: HeadersMode = "draft"
    legacy_reset: Literal["seconds", "epoch"] = "seconds"
    on_store_error: str = "allow"
    store_error_status: int = 503
    store_error_retry_after: float = 1.0
    trusted_proxies: tuple[Network, ...] = ()
    proxy_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    ipv6_prefix: int = 64
    ipv4_prefix: int = 32
    algorithm: str = "gcra"
    key_prefix: str = "rw:"
    body_limit: int = 64 * 1024
    session_cookie: str = "session"
    exempt: tuple[str, ...] = ()
    max_key_length: int = 256
    #: the HMAC key of stored key values ("" : derived from key_prefix; see policy.keys)
    key_secret: str = ""
    #: key kinds whose values are stored readable (never session, cookie, header, jwt)
    readable_keys: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Policy:
    settings: Settings
    rules: tuple[Rule, ...]
    bans: tuple[Ban, ...] = ()
    safelist: Safelist = Safelist()
    blocklist: Blocklist = Blocklist()
    jwt: JWTConfig | None = None
    response: ResponseConfig = ResponseConfig()
    source: str = "<string>"
    profile: str | None = None

    @property
    def needs_body(self) -> bool:
        return any(r.key.needs_body or (r.fallback is not None and r.fallback.needs_body) for r in self.rules) or any(
            b.key.needs_body for b in self.bans
        )
