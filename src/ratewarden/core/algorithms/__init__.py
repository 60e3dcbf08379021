"""The algorithms, by their contract names (docs/design.md#algorithms)."""

from __future__ import annotations

from typing import Any

from ratewarden.core.algorithms.base import NEVER, Outcome, Window, ceil_div
from ratewarden.core.algorithms.concurrency import Concurrency
from ratewarden.core.algorithms.fixed_window import FixedWindow
from ratewarden.core.algorithms.gcra import GCRA
from ratewarden.core.algorithms.quota import Quota
from ratewarden.core.algorithms.sliding_log import SlidingLog
from ratewarden.core.algorithms.sliding_window import SlidingWindow
from ratewarden.core.algorithms.token_bucket import TokenBucket
from ratewarden.core.rates import Rate
from ratewarden.errors import ConfigError

__all__ = [
    "ALGORITHMS",
    "NEVER",
    "Concurrency",
    "FixedWindow",
    "GCRA",
    "Outcome",
    "Quota",
    "SlidingLog",
    "SlidingWindow",
    "TokenBucket",
    "Window",
    "ceil_div",
    "make_window",
]

ALGORITHMS: dict[str, type[Window]] = {
    cls.name: cls for cls in (FixedWindow, SlidingWindow, SlidingLog, GCRA, TokenBucket, Concurrency, Quota)
}

_PARAMS: dict[str, frozenset[str]] = {
    "gcra": frozenset({"burst"}),
    "token-bucket": frozenset({"burst"}),
    "quota": frozenset({"tz", "reset"}),
}


def make_window(algorithm: str, rate: Rate, **params: Any) -> Window:
    """Bind ``algorithm`` (a contract name) to ``rate`` with its parameters."""
    try:
        cls = ALGORITHMS[algorithm]
    except KeyError:
        raise ConfigError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(sorted(ALGORITHMS))}") from None
    allowed = _PARAMS.get(algorithm, frozenset())
    unknown = set(params) - allowed
    if unknown:
        raise ConfigError(
            f"algorithm {algorithm!r} takes no parameter {', '.join(sorted(unknown))}"
            + (f" (it takes {', '.join(sorted(allowed))})" if allowed else "")
        )
    return cls(rate, **params)
