"""Key extraction: from a request's facts to the string a rule counts under.

Everything a client sends is untrusted here: nothing raises, and a missing or malformed value
is *absent* (the rule's fallback key applies), never a fresh bucket an attacker can rotate.

* ``ip``: the socket peer, unless it is a trusted proxy; then ``X-Forwarded-For`` (or
  ``Forwarded``) is walked from the right, skipping trusted hops, and the first untrusted hop is
  the client. A malformed hop stops the walk at the last good trusted hop (the proxy), so garbage
  can never mint a new key. IPv6 clients are keyed by their ``/ipv6_prefix`` network (64 by
  default); IPv4-mapped IPv6 addresses count as IPv4.
* ``user`` (the identity the adapter found), ``session`` (the session cookie), ``header:NAME``,
  ``cookie:NAME``, ``query:NAME``, ``body:FIELD`` (JSON, dotted paths allowed, or a form),
  ``jwt:CLAIM`` (only from a token whose signature, expiry and not-before verify).
* Filters: ``|lower``, ``|upper``, ``|strip``. Parts joined by ``+`` must all be present.
* A value longer than ``max_key_length`` is replaced by its SHA-256, so a 1 MiB header costs
  one hash and never becomes a 1 MiB store key.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from ratewarden.policy.clientip import IPAddress, client_address, parse_forwarded, parse_ip
from ratewarden.policy.fields import DEFAULT_READER, FieldReader, parse_cookies
from ratewarden.policy.match import host_of, normalize_path, route_path
from ratewarden.policy.model import JWTConfig, KeySpec, Policy

__all__ = [
    "FieldReader",
    "RequestContext",
    "client_address",
    "parse_cookies",
    "parse_forwarded",
    "store_value",
    "stored_key",
    "verify_jwt",
]


@lru_cache(maxsize=16384)
def ip_key(ip: IPAddress | None, v4_prefix: int, v6_prefix: int) -> str:
    if ip is None:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if v6_prefix >= 128:
            return str(ip)
        return str(ipaddress.IPv6Network((int(ip) >> (128 - v6_prefix) << (128 - v6_prefix), v6_prefix)))
    if v4_prefix >= 32:
        return str(ip)
    return str(ipaddress.IPv4Network((int(ip) >> (32 - v4_prefix) << (32 - v4_prefix), v4_prefix)))


@lru_cache(maxsize=64)
def _secret(key_secret: str, key_prefix: str) -> bytes:
    """The HMAC key of stored key values: ``key_secret`` when set; else one derived from
    ``key_prefix`` alone, so that every server sharing a store derives the same key (a random
    per-process key would give each server its own buckets: limits multiplied by the servers)."""
    if key_secret:
        return hashlib.sha256(b"ratewarden key_secret\0" + key_secret.encode("utf-8", "surrogatepass")).digest()
    return hashlib.sha256(b"ratewarden default key\0" + key_prefix.encode("utf-8", "surrogatepass")).digest()


@lru_cache(maxsize=4096)  # the same few keys on most requests (bounded: a flood only evicts)
def store_value(source: str, value: str, secret: bytes) -> str:
    """``value`` of key source ``source`` (``"session"``, ``"header:x-api-key"``...) as it is
    stored: ``h:`` and 32 hex digits of HMAC-SHA256 (128 bits), so a dump of the store or of the
    events shows no session id, API key, token subject or e-mail address."""
    msg = source.encode() + b"=" + value.encode("utf-8", "surrogatepass")
    return "h:" + hmac.digest(secret, msg, "sha256")[:16].hex()


def stored_key(settings: Any, key: str) -> str:
    """A key as an admin writes it (``"session=abc"``, ``"ip=198.51.100.7"``) as it is stored
    (``"session=h:..."``): parts already hashed, and kinds in ``readable_keys``, are kept."""
    secret = _secret(settings.key_secret, settings.key_prefix)
    out: list[str] = []
    for part in key.split("+"):
        source, eq, value = part.partition("=")
        kind = source.split(":", 1)[0]
        if kind == "header":
            source = source.lower()  # header names are stored lower-case
        if eq and value and not value.startswith("h:") and kind not in settings.readable_keys:
            value = store_value(source, value, secret)
        out.append(f"{source}{eq}{value}")
    return "+".join(out)


@lru_cache(maxsize=16384)
def _hashed_ip(key: str, secret: bytes) -> str:
    return "ip=" + store_value("ip", key[3:], secret)


@lru_cache(maxsize=16384)
def _peer_key(peer: str, v4_prefix: int, v6_prefix: int) -> str:
    """``"ip=..."`` of a socket peer's text when no proxy is trusted (a cache keyed by the string:
    hashing an ``ipaddress`` object costs more than the lookup)."""
    return "ip=" + ip_key(parse_ip(peer) if peer else None, v4_prefix, v6_prefix)


#: tokens whose signature verified: token -> (config, claims); bounded, oldest dropped first.
#: ``exp``/``nbf`` are checked on every use against the caller's clock, never cached.
_VERIFIED: dict[str, tuple[JWTConfig, dict[str, Any]]] = {}
_VERIFIED_MAX = 1024


def verify_jwt(token: str, cfg: JWTConfig, now: float) -> dict[str, Any] | None:
    """The claims of a token that verifies (signature, ``exp``/``nbf`` against ``now``,
    audience, issuer), else None. Never raises."""
    if not token or len(token) > cfg.max_length:
        return None
    hit = _VERIFIED.get(token)
    if hit is not None and hit[0] is cfg:
        claims = hit[1]
    else:
        verified = _verify_signature(token, cfg)
        if verified is None:
            return None
        claims = verified
        if len(_VERIFIED) >= _VERIFIED_MAX:
            with contextlib.suppress(KeyError, StopIteration, RuntimeError):  # a racing thread
                del _VERIFIED[next(iter(_VERIFIED))]
        _VERIFIED[token] = (cfg, claims)
    exp = claims.get("exp")
    if exp is not None and (not isinstance(exp, int | float) or isinstance(exp, bool) or now >= exp + cfg.leeway):
        return None
    nbf = claims.get("nbf")
    if nbf is not None and (not isinstance(nbf, int | float) or isinstance(nbf, bool) or now + cfg.leeway < nbf):
        return None
    return claims


def _verify_signature(token: str, cfg: JWTConfig) -> dict[str, Any] | None:
    import jwt

    try:
        if cfg.jwks:
            kid = jwt.get_unverified_header(token).get("kid")
            jwk = cfg.jwks.get(kid) if isinstance(kid, str) else None
            if jwk is None and len(cfg.jwks) == 1 and kid is None:
                jwk = next(iter(cfg.jwks.values()))
            if jwk is None:
                return None
            key: Any = jwk.key
        else:
            key = cfg.secret or cfg.public_key
        claims: Any = jwt.decode(
            token,
            key,
            algorithms=list(cfg.algorithms),
            audience=cfg.audience,
            issuer=cfg.issuer,
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": bool(cfg.audience)},
        )
    except Exception:  # any malformed or forged token is anonymous
        return None
    return claims if isinstance(claims, dict) else None


def _encodable(v: str) -> bool:
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(v: Any) -> str | None:
    """A field's value: a non-empty string, else absent (missing, empty or ambiguous)."""
    return v if isinstance(v, str) and v else None


def _scalar(v: Any) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str | int | float):
        s = str(v)
        return s if s else None
    return None


_UNSET: Any = object()


class RequestContext:
    """The facts of one request with everything derived from them computed at most once."""

    __slots__ = (
        "_body",
        "_claims",
        "_cookies",
        "_host",
        "_ip",
        "_ipkey",
        "_norm",
        "_query",
        "clock",
        "facts",
        "method",
        "path",
        "policy",
    )

    _UNSET: Any = _UNSET

    def __init__(self, facts: Any, policy: Policy, clock: Callable[[], float]) -> None:
        self.facts = facts
        self.policy = policy
        self.clock = clock
        self.method = (facts.method or "GET").upper()[:32]
        path = facts.path or "/"
        # as the app's router sees it (route_path, inline for the usual path: no query, a leading /)
        self.path = path if path[0] == "/" and "?" not in path else route_path(path)
        self._norm: str | None = None
        self._host: str | None = None
        self._ipkey: str | None = None
        self._cookies: dict[str, Any] | None = None
        self._query: dict[str, Any] | None = None
        self._ip = self._body = self._claims = _UNSET

    @property
    def norm_path(self) -> str:
        """The path with dot segments resolved and repeated slashes collapsed (worked out only
        when a route is matched for the first time, or a list or exempt path is checked)."""
        n = self._norm
        if n is None:
            n = self._norm = normalize_path(self.path)
        return n

    @property
    def host(self) -> str:
        if self._host is None:
            self._host = host_of(self.facts.host or "")
        return self._host

    # -- sources -------------------------------------------------------------------------------

    @property
    def ip(self) -> IPAddress | None:
        if self._ip is self._UNSET:
            s = self.policy.settings
            self._ip = client_address(self.facts.client_ip, self.facts.headers, s.trusted_proxies, s.proxy_header)
        return self._ip  # type: ignore[no-any-return]

    @property
    def client_ip(self) -> str | None:
        ip = self.ip
        return None if ip is None else str(ip)

    def header(self, name: str) -> str | None:
        v = self.facts.headers.get(name)
        return v if v else None

    @property
    def reader(self) -> FieldReader:
        r = getattr(self.facts, "reader", None)
        return DEFAULT_READER if r is None else r

    def cookie(self, name: str) -> str | None:
        if self._cookies is None:
            try:
                self._cookies = dict(self.reader.cookies(self.facts))
            except Exception:  # a framework's parser failing on client input: absent
                self._cookies = {}
        return _text(self._cookies.get(name))

    def query(self, name: str) -> str | None:
        if self._query is None:
            try:
                self._query = dict(self.reader.query(self.facts))
            except Exception:
                self._query = {}
        return _text(self._query.get(name))

    def body_field(self, name: str) -> str | None:
        """``body:FIELD``: in JSON a dotted name is a path (``user.email`` is ``{"user":
        {"email": ...}}``, never a literal ``"user.email"`` key beside it: the handler reads
        the nested one); in a form it is the field's name."""
        if self._body is self._UNSET:
            self._body = None
            if not self.oversize():
                try:
                    self._body = self.reader.body(self.facts)
                except Exception:
                    self._body = None
        if self._body is None:
            return None
        kind, node = self._body
        if kind == "form":
            found = _text(node.get(name)) if isinstance(node, Mapping) else None
            if found is not None:
                return found
            # a JSON body sent with a form type: a handler that reads JSON (Starlette's
            # ``request.json()``, a Django view's ``json.loads(request.body)``) ignores the type
            try:
                node = json.loads(self.facts.body)
            except (ValueError, RecursionError, TypeError):
                return None
        for part in name.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return _scalar(node)

    def oversize(self) -> bool:
        """The body was larger than ``body_limit``: no ``body:`` key can be read from it."""
        f = self.facts
        return bool(f.body_truncated) or (f.body is not None and len(f.body) > self.policy.settings.body_limit)

    @property
    def claims(self) -> dict[str, Any] | None:
        """The verified JWT claims, or None (no token, no key configured, or it did not verify)."""
        if self._claims is self._UNSET:
            self._claims = None
            cfg = self.policy.jwt
            if cfg is not None:
                token = ""
                if cfg.cookie:
                    token = self.cookie(cfg.cookie) or ""
                if not token:
                    raw = self.facts.headers.get(cfg.header, "")
                    if cfg.header == "authorization":
                        scheme, _, rest = raw.strip().partition(" ")
                        token = rest.strip() if scheme.lower() == "bearer" else ""
                    else:
                        token = raw.strip()
                if token:
                    self._claims = verify_jwt(token, cfg, self.clock())
        return self._claims  # type: ignore[no-any-return]

    def attr(self, name: str) -> str | None:
        """An identity attribute: ``user_attrs[name]``, else the verified JWT claim ``name``."""
        v = self.facts.user_attrs.get(name) if self.facts.user_attrs else None
        if v is None and self.claims is not None:
            v = self.claims.get(name)
        return None if v is None else _scalar(v)

    # -- keys ----------------------------------------------------------------------------------

    def part(self, kind: str, name: str) -> str | None:
        if kind == "ip":
            s = self.policy.settings
            return ip_key(self.ip, s.ipv4_prefix, s.ipv6_prefix)
        if kind == "user":
            u = self.facts.user
            return str(u) if u else None
        if kind == "session":
            return self.cookie(self.policy.settings.session_cookie)
        if kind == "header":
            return self.header(name)
        if kind == "cookie":
            return self.cookie(name)
        if kind == "query":
            return self.query(name)
        if kind == "body":
            return self.body_field(name)
        if kind == "jwt":
            c = self.claims
            return None if c is None else _scalar(c.get(name))
        return None

    def ip_key(self) -> str:
        """``"ip=<address or prefix>"`` (``"ip=h:<hmac>"`` unless ``readable_keys`` lists
        ``ip``): the key of ``key = "ip"`` (the fast path)."""
        k = self._ipkey
        if k is None:
            s = self.policy.settings
            if not s.trusted_proxies and self._ip is self._UNSET:  # the peer alone decides: by its text
                k = _peer_key(self.facts.client_ip or "", s.ipv4_prefix, s.ipv6_prefix)
            else:
                k = "ip=" + ip_key(self.ip, s.ipv4_prefix, s.ipv6_prefix)
            if "ip" not in s.readable_keys:
                k = _hashed_ip(k, _secret(s.key_secret, s.key_prefix))
            elif len(k) > s.max_key_length + 3:  # an IPv6 /128 under a small max_key_length: as key() does
                k = "ip=sha256:" + hashlib.sha256(k[3:].encode()).hexdigest()
            self._ipkey = k
        return k

    def key(self, spec: KeySpec) -> str | None:
        """``"kind=value"`` (parts joined by ``+``), or None when any part is missing."""
        if spec.text == "ip":
            return self.ip_key()
        out: list[str] = []
        s = self.policy.settings
        limit = s.max_key_length
        for p in spec.parts:
            v = self.part(p.kind, p.name)
            if v is None:
                return None
            for flt in p.filters:
                v = v.lower() if flt == "lower" else v.upper() if flt == "upper" else v.strip()
            if not v:
                return None
            source = f"{p.kind}{':' + p.name if p.name else ''}"
            if p.kind not in s.readable_keys:
                v = store_value(source, v, _secret(s.key_secret, s.key_prefix))
            elif len(v) > limit or not v.isprintable() or not _encodable(v):
                v = "sha256:" + hashlib.sha256(v.encode("utf-8", "surrogatepass")).hexdigest()
            out.append(f"{source}={v}")
        return "+".join(out)

    def key_or_fallback(self, key: KeySpec, fallback: KeySpec | None) -> str | None:
        k = self.key(key)
        if k is None and fallback is not None:
            k = self.key(fallback)
        return k
