"""Per-route limits: one rule for one route (the Flask and Django decorators, the FastAPI
dependency), through the same engine machinery as the policy file."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ratewarden.engine import Engine, RequestFacts
from ratewarden.errors import ConfigError


def rule_name(text: str) -> str:
    """``text`` as a valid rule name: other characters become ``_``, at most 64 of them."""
    import re

    return re.sub(r"[^A-Za-z0-9_.:/-]", "_", text).lstrip("_.:/-")[-64:] or "route"


class RouteLimit:
    """One rule for one route, through the same Engine as the policy file (keys, headers, bodies).

    ``limits``: ``"5/minute"`` or ``"5/minute;100/day"`` or a list; ``key``: a key spec of the
    policy file (``"ip"``, ``"user"``, ``"header:X-Api-Key"``, ``"body:email|lower"``...) or a
    callable ``request -> str | None`` (``None``: fall back to the client ip). ``base``: an engine
    whose settings (headers, response shape, store) the route's rule shares.
    """

    def __init__(
        self,
        limits: str | Iterable[str],
        key: str | Callable[[Any], object] = "ip",
        *,
        name: str | None = None,
        algorithm: str | None = None,
        cost: int = 1,
        shadow: bool = False,
        base: Engine | None = None,
        **options: Any,
    ) -> None:
        rates = [limits] if isinstance(limits, str) else list(limits)
        if not rates or not all(isinstance(r, str) for r in rates):
            raise ConfigError(f"limits must be a rate string or a list of them, not {limits!r}")
        if not (isinstance(key, str) or callable(key)):
            raise ConfigError(f"key must be a key spec string or a callable, not {key!r}")
        self.key_fn = None if isinstance(key, str) else key
        spec = key if isinstance(key, str) else "user"
        self.name = rule_name(name or f"route:{spec}:{';'.join(rates)}")
        rule: dict[str, Any] = {"name": self.name, "key": spec, "limits": rates, "cost": cost}
        if algorithm:
            rule["algorithm"] = algorithm
        if shadow:
            rule["shadow"] = True
        if self.key_fn is not None:
            rule["fallback"] = "ip"
        self.engine: Engine = Engine.for_rule(rule, base=base, **options)

    def prepare(self, facts: RequestFacts, request: Any) -> RequestFacts:
        """``facts`` for this rule: with a callable key, its value stands in for the identity."""
        if self.key_fn is None:
            return facts
        from dataclasses import replace

        value = self.key_fn(request)
        return replace(facts, user=None if value is None or value == "" else str(value), user_attrs={})
