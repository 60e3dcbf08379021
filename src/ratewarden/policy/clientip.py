"""The client's address: the socket peer, or, behind trusted proxies, the right-most untrusted
hop of ``X-Forwarded-For`` or ``Forwarded``. A malformed hop stops the walk at the last good
trusted hop, so garbage a client sends can never mint a new key."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from functools import lru_cache

from ratewarden.policy.model import Network

__all__ = ["IPAddress", "client_address", "parse_forwarded", "parse_ip"]

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
