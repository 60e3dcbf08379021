"""Matching requests to rules: path patterns, methods, hosts.

Path patterns: ``/api/v1/auth/login`` (exact), ``/generate*`` (``*`` matches any characters,
``/`` included), ``/users/{id}/posts`` (``{name}`` matches one non-empty segment). Paths are
normalised before matching (repeated slashes collapsed, ``.``/``..`` segments resolved), so
``//api/./v1/../v1/auth/login`` cannot slip past a rule written for ``/api/v1/auth/login``.
Host patterns are lower-case, compared without the port, ``*`` allowed (``*.example.com``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from ratewarden.policy.model import Match

__all__ = ["compile_pattern", "host_of", "matches", "normalize_path", "path_matches"]

_PARAM = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def normalize_path(path: str) -> str:
    """``//a/./b/../c`` -> ``/a/c``; never raises, always starts with ``/``."""
    if "?" in path:
        path = path.split("?", 1)[0]
    if "//" not in path and "/." not in path and path.startswith("/"):
        return path
    out: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    trailing = path.endswith("/") and bool(out)
    return "/" + "/".join(out) + ("/" if trailing else "")


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A path or host pattern as an anchored regular expression."""
    out: list[str] = []
    pos = 0
    for m in _PARAM.finditer(pattern):
        out.append(_glob(pattern[pos : m.start()]))
        out.append("[^/]+")
        pos = m.end()
    out.append(_glob(pattern[pos:]))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _glob(text: str) -> str:
    return ".*".join(re.escape(part) for part in text.split("*"))


def path_matches(patterns: Iterable[str], path: str) -> bool:
    for p in patterns:
        if "*" not in p and "{" not in p:
            if p == path:
                return True
        elif compile_pattern(p).match(path):
            return True
    return False


def host_of(host: str) -> str:
    """``Example.COM:8080`` -> ``example.com``; ``[::1]:80`` -> ``[::1]``."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def matches(match: Match, method: str, path: str, host: str, scheme: str) -> bool:
    """``path`` is already normalised; ``host`` already passed through :func:`host_of`."""
    if match.methods and method.upper() not in match.methods:
        return False
    if match.schemes and scheme not in match.schemes:
        return False
    if match.paths and not path_matches(match.paths, path):
        return False
    return not (match.hosts and not any(compile_pattern(h).match(host) for h in match.hosts))
