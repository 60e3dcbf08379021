"""Exception types. Every error ratewarden raises derives from :class:`RatewardenError`."""

from __future__ import annotations

__all__ = ["ConfigError", "RateParseError", "RatewardenError", "StoreError"]


class RatewardenError(Exception):
    """Base class of every ratewarden error."""


class RateParseError(RatewardenError, ValueError):
    """A rate string (``"10/minute"``) or a duration could not be parsed; the message quotes it."""


class ConfigError(RatewardenError, ValueError):
    """A bad argument or setting: unknown algorithm, bad storage URL, bad parameter."""


class StoreError(RatewardenError):
    """The store could not be reached or answered with an error (all backends raise this)."""
