"""Exception types. Every error ratewarden raises derives from :class:`RatewardenError`."""

from __future__ import annotations

__all__ = ["ConfigError", "RateParseError", "RatewardenError", "RequestError", "StoreError", "UnknownRuleError"]


class RatewardenError(Exception):
    """Base class of every ratewarden error."""


class RateParseError(RatewardenError, ValueError):
    """A rate string (``"10/minute"``) or a duration could not be parsed; the message quotes it."""


class ConfigError(RatewardenError, ValueError):
    """A bad argument or setting: unknown algorithm, bad storage URL, bad parameter."""


class StoreError(RatewardenError):
    """The store could not be reached or answered with an error (all backends raise this)."""


class RequestError(RatewardenError, ValueError):
    """A caller's request to the engine is malformed (a bad cost, key, attribute or rule name).

    ``field`` names the part at fault (``"cost"``, ``"key"``, ``"attrs"``, ``"rule"``) and
    ``reason`` says why, quoting the value: the decision service answers 400
    ``{"error": reason, "field": field}``. Nothing is counted and nothing is admitted.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(reason)

    def __str__(self) -> str:
        return self.reason


class UnknownRuleError(RequestError, KeyError):
    """No rule has the name asked for (also a :class:`KeyError`, as a lookup that failed)."""

    def __init__(self, name: object) -> None:
        super().__init__("rule", f"no rule named {name!r}")
