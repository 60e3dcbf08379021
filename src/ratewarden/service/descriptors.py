"""Envoy descriptors -> rules: which rule answers a request descriptor, and under which key.

A rule answers descriptors when it has ``descriptor = { domain = "edge", entries = [...] }``.
A request descriptor (a list of ``(key, value)`` entries) matches a rule of its domain when its
keys are exactly the rule's entry keys, in the same order, and every pinned ``key=value`` of the
rule has that value. The rule's key is the values of the unpinned entries, joined by ``|`` (a
``|`` or ``\\`` inside a value is escaped with ``\\``), so ``["remote_address"]`` with
``10.0.0.1`` is the key ``10.0.0.1``: the same state as ``{"rule": ..., "key": "10.0.0.1"}``
over HTTP. When several rules match, the one with the most pinned entries wins (a value is
more specific than a wildcard, as in envoyproxy/ratelimit), then the first in the file. A
descriptor that matches no rule is not limited.

A route may also be *unlimited* (``rule is None``): envoyproxy/ratelimit's ``unlimited: true``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ratewarden.policy.model import Descriptor, Rule

__all__ = ["DescriptorIndex", "Route", "descriptor_key"]


@dataclass(frozen=True, slots=True)
class Route:
    domain: str
    entries: tuple[tuple[str, str | None], ...]
    rule: Rule | None  # None: unlimited

    @property
    def pinned(self) -> int:
        return sum(v is not None for _, v in self.entries)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("|", "\\|") if ("|" in v or "\\" in v) else v


def descriptor_key(route: Route, values: Sequence[str]) -> str:
    """The rule key of a matched descriptor: its unpinned values, escaped and joined by ``|``."""
    return "|".join(_escape(v) for (_, pin), v in zip(route.entries, values, strict=True) if pin is None)


class DescriptorIndex:
    """Routes by (domain, entry keys), most specific first."""

    def __init__(self, routes: Iterable[Route]) -> None:
        table: dict[tuple[str, tuple[str, ...]], list[Route]] = {}
        for r in routes:
            table.setdefault((r.domain, tuple(k for k, _ in r.entries)), []).append(r)
        for lst in table.values():
            lst.sort(key=lambda r: -r.pinned)  # stable: file order among equals
        self._table = table
        self.domains = frozenset(d for d, _ in table)

    @classmethod
    def of_rules(cls, rules: Iterable[Rule]) -> DescriptorIndex:
        return cls(Route(r.descriptor.domain, r.descriptor.entries, r) for r in rules if r.descriptor is not None)

    def __len__(self) -> int:
        return sum(len(v) for v in self._table.values())

    def match(self, domain: str, entries: Sequence[tuple[str, str]]) -> Route | None:
        candidates = self._table.get((domain, tuple(k for k, _ in entries)))
        if not candidates:
            return None
        for route in candidates:
            for (_, pin), (_, value) in zip(route.entries, entries, strict=True):
                if pin is not None and pin != value:
                    break
            else:
                return route
        return None


def describe(d: Descriptor) -> str:
    """``edge: remote_address, path=/login`` (logs, status)."""
    return d.domain + ": " + ", ".join(k if v is None else f"{k}={v}" for k, v in d.entries)
