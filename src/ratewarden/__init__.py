"""ratewarden: exact, fast rate limiting for Python apps and as a decision service."""

from __future__ import annotations

from ratewarden.clock import FakeClock
from ratewarden.core.algorithms import ALGORITHMS
from ratewarden.core.decision import Decision
from ratewarden.core.rates import Rate, parse_rate, parse_rates
from ratewarden.errors import ConfigError, RateParseError, RatewardenError, StoreError
from ratewarden.limiter import AsyncLimiter, Limiter

__all__ = [
    "ALGORITHMS",
    "AsyncLimiter",
    "ConfigError",
    "Decision",
    "FakeClock",
    "Limiter",
    "Rate",
    "RateParseError",
    "RatewardenError",
    "StoreError",
    "parse_rate",
    "parse_rates",
]

__version__ = "0.1.0"
