"""Clients that take "not now" for an answer: wait what the server said, then try again.

* :class:`RetryTransport` / :class:`AsyncRetryTransport`: httpx transports
  (``httpx.Client(transport=RetryTransport())``);
* :class:`RetryAdapter`: a ``requests`` adapter (``session.mount("https://", RetryAdapter())``);
* :class:`RetryPolicy`: the rules they share (when, how long, how often), no I/O.

The httpx and requests classes are imported on first use, so ``ratewarden.client`` needs only
the library you use (``pip install 'ratewarden[client]'`` brings both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ratewarden.client._retry import RateLimitItem, RetryPolicy, parse_rate_limit, parse_retry_after

if TYPE_CHECKING:
    from ratewarden.client._httpx import AsyncRetryTransport, RetryTransport
    from ratewarden.client._requests import RetryAdapter

__all__ = [
    "AsyncRetryTransport",
    "RateLimitItem",
    "RetryAdapter",
    "RetryPolicy",
    "RetryTransport",
    "parse_rate_limit",
    "parse_retry_after",
]


def __getattr__(name: str) -> Any:
    if name in ("RetryTransport", "AsyncRetryTransport"):
        from ratewarden.client import _httpx

        return getattr(_httpx, name)
    if name == "RetryAdapter":
        from ratewarden.client import _requests

        return _requests.RetryAdapter
    raise AttributeError(f"module 'ratewarden.client' has no attribute {name!r}")
