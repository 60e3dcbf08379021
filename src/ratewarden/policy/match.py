"""Matching requests to rules: path patterns, methods, hosts.

Path patterns: ``/api/v1/auth/login`` (exact), ``/generate*`` (``*`` matches any characters,
``/`` included), ``/users/{id}/posts`` (``{name}`` matches one non-empty segment).

A request's path is matched the way the application's router sees it, and also normalised:

* as the router sees it (:func:`route_path`): decoded, ``.``/``..`` segments and repeated
  slashes kept. Starlette, Flask/Werkzeug and Django all route ``/users/%2e%2e/posts`` (and
  ``/users/../posts`` when no proxy resolved it) to the ``/users/{id}/posts`` handler with
  ``id == ".."``; a rule written for that route must count it;
* normalised (:func:`normalize_path`: repeated slashes collapsed, dot segments resolved), for
  servers and proxies that resolve them before the app sees the path.

A rule or ban counts the request when *either* form matches; a path is exempt (never counted)
only when *both* forms are, so no spelling of a path counts less than the route it runs.

Methods: ``HEAD`` is matched as ``GET`` (every framework runs the ``GET`` handler for it)
unless the rule lists ``HEAD`` itself. Host patterns are lower-case, compared without the port,
``*`` allowed (``*.example.com``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from ratewarden.policy.model import Match

__all__ = [
    "compile_pattern",
    "host_of",
    "matches",
    "method_matches",
    "normalize_path",
    "path_matches",
    "route_path",
    "exempt_path",
]

_PARAM = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def route_path(path: str) -> str:
    """The path as a router matches it: the query removed, always starting with ``/``; dot
    segments and repeated slashes are kept (the routers of Starlette, Flask and Django keep them)."""
    if "?" in path:
        path = path.split("?", 1)[0]
    return path if path.startswith("/") else "/" + path


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


def method_matches(methods: frozenset[str], method: str) -> bool:
    """``HEAD`` counts as ``GET`` unless ``methods`` lists ``HEAD`` (frameworks run the GET
    handler for a HEAD request, so a GET-only rule must count it)."""
    if not methods or method in methods:
        return True
    return method == "HEAD" and "GET" in methods


def matches(match: Match, method: str, path: str, host: str, scheme: str, norm_path: str | None = None) -> bool:
    """``path``: as the router sees it (:func:`route_path`); ``norm_path``: its normalised form
    when it differs (either matching is a match); ``host`` already passed through :func:`host_of`."""
    if match.methods and not method_matches(match.methods, method.upper()):
        return False
    if match.schemes and scheme not in match.schemes:
        return False
    if (
        match.paths
        and not path_matches(match.paths, path)
        and (norm_path is None or norm_path == path or not path_matches(match.paths, norm_path))
    ):
        return False
    return not (match.hosts and not any(compile_pattern(h).match(host) for h in match.hosts))


def exempt_path(patterns: Iterable[str], path: str, norm_path: str) -> bool:
    """True when the path is exempt however it is read: as the router sees it and normalised."""
    return path_matches(patterns, path) and (norm_path == path or path_matches(patterns, norm_path))
