"""Read envoyproxy/ratelimit's YAML configuration, so its users can switch with the file they have.

::

    domain: edge
    descriptors:
      - key: remote_address              # no value: each address has its own limit
        rate_limit: {unit: minute, requests_per_unit: 10}
      - key: path
        value: /login                    # a value: only this path
        descriptors:                     # nested: the request descriptor is [path, user]
          - key: user
            rate_limit: {unit: hour, requests_per_unit: 5}
            shadow_mode: true            # decided and counted, never denies
      - key: path
        value: /health
        rate_limit: {unlimited: true}

Each node with a ``rate_limit`` becomes one rule whose descriptor is the path of keys (and pinned
values) from the top; a node with neither a ``rate_limit`` nor nested descriptors is not limited
(as in envoyproxy/ratelimit); ``unit`` is second, minute, hour, day, week, month (30 days) or year (365
days). Any algorithm may be chosen (``--algorithm``; fixed-window, what envoyproxy/ratelimit
does, by default). ``replaces`` and ``requests_per_unit: 0`` are refused with the line that
uses them. A path is a file or a directory of ``*.yaml``/``*.yml`` files (one domain each).
Errors are :class:`~ratewarden.policy.reader.PolicyError` with file, line and reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ratewarden.core.algorithms import make_window
from ratewarden.core.rates import US, Rate
from ratewarden.errors import ConfigError
from ratewarden.policy.model import Descriptor, Match, Policy, Rule, Settings
from ratewarden.policy.reader import PolicyError, parse_key
from ratewarden.service.descriptors import Route

__all__ = ["ALGORITHMS", "load_envoy_config"]

ALGORITHMS = ("fixed-window", "sliding-window", "sliding-log", "gcra", "token-bucket")
UNITS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "month": 30 * 86400,
    "year": 365 * 86400,
}
_NODE_KEYS = ("key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric", "replaces", "name")
_LIMIT_KEYS = ("unit", "requests_per_unit", "unlimited", "name", "replaces")
_NAME_BAD = re.compile(r"[^A-Za-z0-9_.:/-]")
#: a method no HTTP request has: rules read from an Envoy file answer descriptors only
NO_HTTP = Match(methods=frozenset({"-"}))
_LINE = "__line__"


class _Loader(yaml.SafeLoader):
    """A safe loader that remembers each mapping's line."""


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k_node, v_node in node.value:
        k = loader.construct_object(k_node, deep=True)
        if k in d:
            raise PolicyError(str(loader.name), k_node.start_mark.line + 1, f"the key {k!r} appears twice")
        d[k] = loader.construct_object(v_node, deep=True)
    d[_LINE] = node.start_mark.line + 1
    return d


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


class _Reader:
    def __init__(self, file: str, algorithm: str) -> None:
        self.file = file
        self.algorithm = algorithm
        self.routes: list[Route] = []
        self.names: set[str] = set()

    def fail(self, line: int, reason: str) -> PolicyError:
        return PolicyError(self.file, line, reason)

    def domain(self, doc: Any) -> None:
        if not isinstance(doc, dict):
            raise self.fail(1, "the file must be a mapping with 'domain' and 'descriptors'")
        line = doc[_LINE]
        for k in doc:
            if k not in ("domain", "descriptors", _LINE):
                raise self.fail(line, f"unknown key {k!r} at the top; expected domain, descriptors")
        domain = doc.get("domain")
        if not isinstance(domain, str) or not domain:
            raise self.fail(line, "'domain' must be a non-empty string")
        self.nodes(domain, doc.get("descriptors") or [], (), line)

    def nodes(self, domain: str, nodes: Any, parents: tuple[tuple[str, str | None], ...], line: int) -> None:
        if not isinstance(nodes, list):
            raise self.fail(line, "'descriptors' must be a list")
        seen: set[tuple[str, str | None]] = set()
        for n in nodes:
            if not isinstance(n, dict):
                raise self.fail(line, "each descriptor must be a mapping with a 'key'")
            self.node(domain, n, parents, seen)

    def node(
        self, domain: str, n: Mapping[str, Any], parents: tuple[tuple[str, str | None], ...], seen: set[Any]
    ) -> None:
        line = int(n[_LINE])
        for k in n:
            if k not in (*_NODE_KEYS, _LINE):
                raise self.fail(line, f"unknown descriptor key {k!r}; expected one of {', '.join(_NODE_KEYS)}")
        key, value = n.get("key"), n.get("value")
        if not isinstance(key, str) or not key:
            raise self.fail(line, "a descriptor needs a non-empty string 'key'")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise self.fail(line, f"'value' of {key!r} must be a string")
        pin = None if value is None else str(value)
        if (key, pin) in seen:
            raise self.fail(line, f"the descriptor {key}{'' if pin is None else '=' + pin} appears twice at this level")
        seen.add((key, pin))
        if n.get("replaces"):
            raise self.fail(line, "'replaces' is not supported by ratewarden (every matched limit applies)")
        shadow = n.get("shadow_mode", False)
        if not isinstance(shadow, bool):
            raise self.fail(line, "'shadow_mode' must be true or false")
        path = (*parents, (key, pin))
        if "rate_limit" in n:
            self.limit(domain, path, n["rate_limit"], shadow, line)
        if "descriptors" in n:
            self.nodes(domain, n["descriptors"], path, line)
        if "rate_limit" not in n and not n.get("descriptors"):
            self.routes.append(Route(domain, path, None))  # neither a limit nor nested ones: not limited

    def limit(self, domain: str, path: tuple[tuple[str, str | None], ...], rl: Any, shadow: bool, line: int) -> None:
        if not isinstance(rl, dict):
            raise self.fail(line, "'rate_limit' must be a mapping with unit and requests_per_unit")
        line = int(rl[_LINE])
        for k in rl:
            if k not in (*_LIMIT_KEYS, _LINE):
                raise self.fail(line, f"unknown rate_limit key {k!r}; expected one of {', '.join(_LIMIT_KEYS)}")
        if rl.get("replaces"):
            raise self.fail(line, "'replaces' is not supported by ratewarden (every matched limit applies)")
        if rl.get("unlimited") is True:
            self.routes.append(Route(domain, path, None))
            return
        unit = str(rl.get("unit", "")).lower()
        if unit not in UNITS:
            raise self.fail(line, f"'unit' must be one of {', '.join(UNITS)}, not {rl.get('unit')!r}")
        n = rl.get("requests_per_unit")
        if type(n) is not int or n < 0:
            raise self.fail(line, f"'requests_per_unit' must be an integer >= 1, not {n!r}")
        if n == 0:
            raise self.fail(line, "'requests_per_unit: 0' (block everything) is not supported; use a blocklist")
        try:
            window = make_window(self.algorithm, Rate(n, UNITS[unit] * US))
        except ConfigError as exc:
            raise self.fail(line, str(exc)) from None
        name = self.name(domain, path, rl.get("name"))
        pins = tuple(e for e in path)
        rule = Rule(
            name=name,
            match=NO_HTTP,
            key=parse_key("user"),
            fallback=None,
            windows=(window,),
            algorithm=self.algorithm,
            shadow=shadow,
            line=line,
            descriptor=Descriptor(domain, pins),
        )
        self.routes.append(Route(domain, pins, rule))

    def name(self, domain: str, path: tuple[tuple[str, str | None], ...], given: Any) -> str:
        base = (
            str(given)
            if isinstance(given, str) and given
            else domain + ":" + ".".join(k if v is None else f"{k}_{v}" for k, v in path)
        )
        base = _NAME_BAD.sub("_", base)[:60]
        name, i = base, 2
        while name in self.names:
            name, i = f"{base}-{i}", i + 1
        self.names.add(name)
        return name


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [path]


def load_envoy_config(
    path: str | Path, *, algorithm: str = "fixed-window", storage: str = "memory://", on_store_error: str = "allow"
) -> tuple[Policy, list[Route]]:
    """A policy of descriptor-only rules, and every route (unlimited ones too), from the file(s)."""
    if algorithm not in ALGORITHMS:
        raise ConfigError(
            f"--algorithm for an Envoy configuration is one of {', '.join(ALGORITHMS)}, not {algorithm!r}"
        )
    p = Path(path)
    files = _files(p)
    if not files:
        raise PolicyError(str(p), 0, "no *.yaml or *.yml file in this directory")
    reader = _Reader(str(p), algorithm)
    domains: dict[str, str] = {}
    for f in files:
        reader.file = str(f)
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(str(f), 0, f"cannot read the Envoy configuration: {exc}") from None
        try:
            doc = yaml.load(text, Loader=_Loader)
        except PolicyError as exc:
            raise PolicyError(str(f), exc.line, exc.reason) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            what = " ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x)
            raise PolicyError(str(f), mark.line + 1 if mark else 0, f"not valid YAML: {what or exc}") from None
        reader.domain(doc)
        d = doc["domain"]
        if d in domains:
            raise PolicyError(str(f), doc[_LINE], f"the domain {d!r} is also defined in {domains[d]}")
        domains[d] = str(f)
    rules = tuple(r.rule for r in reader.routes if r.rule is not None)
    settings = Settings(storage=storage, algorithm=algorithm, on_store_error=on_store_error)
    return Policy(settings=settings, rules=rules, source=str(p)), reader.routes
