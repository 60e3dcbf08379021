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

import codecs
import contextlib
import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from ratewarden.policy.match import host_of, normalize_path, route_path
from ratewarden.policy.model import JWTConfig, KeySpec, Network, Policy

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

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_MAX_HOPS = 64  # never walk more hops than this
_SCAN = 16384  # characters of a proxy header read, from its right end
_FORWARDED_FOR = re.compile(r'(?i)(?:^|[;,\s])for\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)')


def parse_ip(text: str) -> IPAddress | None:
    """An address from one hop (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``), or None."""
    if len(text) > 80:
        return None
    return _parse_ip(text)


@lru_cache(maxsize=16384)
def _parse_ip(text: str) -> IPAddress | None:
    t = text.strip().strip('"')
    if not t or len(t) > 64:
        return None
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            return None
        t = t[1:end]
    elif t.count(":") == 1:
        t = t.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(t)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.scope_id is not None:  # a zone (``%eth0``) names a host's interface, never a client
            return ipaddress.IPv6Address(int(ip))
    return ip


def _elements_from_right(value: str, limit: int = _MAX_HOPS) -> list[str]:
    """The last ``limit`` comma-separated elements of a list header, split right to left with
    quoted strings kept whole. The right end is what the trusted proxies appended, so it is read
    first; whatever the client put on the left (padding, an unterminated quote) can only make
    the left-most elements malformed, never swallow a proxy's element."""
    out: list[str] = []
    end = len(value)
    quoted = False
    i = end - 1
    stop = max(0, end - _SCAN)  # never scan more than the last _SCAN characters
    while i >= stop and len(out) < limit:
        c = value[i]
        if c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            out.append(value[i + 1 : end])
            end = i
        i -= 1
    if len(out) < limit:
        # the left-most element: whole only if the scan reached the start with balanced quotes
        out.append(value[stop:end] if stop == 0 and not quoted else "")
    out.reverse()
    return out


def parse_forwarded(value: str) -> list[str]:
    """The ``for=`` value of each element of an RFC 7239 ``Forwarded`` header, left to right
    (raw; ``""`` for an element without a usable ``for=``), the last 64 elements at most."""
    hops: list[str] = []
    for element in _elements_from_right(value):
        m = _FORWARDED_FOR.search(element)
        hops.append(m.group(1).strip('"') if m else "")
    return hops


def _trusted(ip: IPAddress, proxies: tuple[Network, ...]) -> bool:
    return any(ip.version == n.version and ip in n for n in proxies)


def client_address(
    peer: str | None, headers: Mapping[str, str], proxies: tuple[Network, ...], header: str
) -> IPAddress | None:
    """The client address: the right-most untrusted hop, believing headers only via ``proxies``."""
    ip = parse_ip(peer) if peer else None
    if ip is None or not proxies or not _trusted(ip, proxies):
        return ip
    raw = headers.get(header, "")
    if not raw:
        return ip
    hops = parse_forwarded(raw) if header == "forwarded" else _elements_from_right(raw)
    for hop in reversed(hops):
        h = parse_ip(hop)
        if h is None:
            return ip  # garbage: stay at the last trusted hop, never mint a key from it
        ip = h
        if not _trusted(h, proxies):
            return h
    return ip


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

    _UNSET: Any = object()

    def __init__(self, facts: Any, policy: Policy, clock: Callable[[], float]) -> None:
        self.facts = facts
        self.policy = policy
        self.clock = clock
        self.method = (facts.method or "GET").upper()[:32]
        self.path = route_path(facts.path or "/")  # as the app's router sees it
        self._norm: str | None = None
        self._host: str | None = None
        self._ipkey: str | None = None
        self._ip: Any = self._UNSET
        self._cookies: dict[str, Any] | None = None
        self._query: dict[str, Any] | None = None
        self._body: Any = self._UNSET
        self._claims: Any = self._UNSET

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
