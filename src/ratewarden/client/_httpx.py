"""httpx transports that honour ``Retry-After`` and ``RateLimit`` on 429 and 503.

``httpx.Client(transport=RetryTransport())`` and ``httpx.AsyncClient(transport=AsyncRetryTransport())``;
wrap another transport with ``RetryTransport(httpx.HTTPTransport(retries=2))``. A request body is
read into memory before the first send when the request may be retried, so that it can be sent again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import httpx

from ratewarden.client._retry import RetryPolicy

__all__ = ["AsyncRetryTransport", "RetryTransport"]


def _origin(request: httpx.Request) -> str:
    url = request.url
    return f"{url.scheme}://{url.host}:{url.port or ''}"


def _policy(
    max_retries: int,
    max_wait: float,
    retry_unsafe: bool,
    jitter: float,
    wait_when_empty: bool,
    clock: Callable[[], float] | None,
    rng: Callable[[], float] | None,
) -> RetryPolicy:
    return RetryPolicy(
        max_retries=max_retries,
        max_wait=max_wait,
        retry_unsafe=retry_unsafe,
        jitter=jitter,
        wait_when_empty=wait_when_empty,
        clock=clock or time.time,
        random=rng or random.random,
    )


class RetryTransport(httpx.BaseTransport):
    """``RetryTransport(transport=None, *, max_retries=3, max_wait=60.0, retry_unsafe=False)``.

    Also: ``jitter`` (fraction of the wait added at random, default 0.1, at most 1 s),
    ``wait_when_empty`` (wait up front when the last ``RateLimit`` said ``r=0``), and for tests
    ``sleep``, ``clock`` (epoch seconds) and ``random``. When the retries or the ``max_wait``
    budget run out, the last response (a 429) is returned, never an exception.
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        max_retries: int = 3,
        max_wait: float = 60.0,
        retry_unsafe: bool = False,
        jitter: float = 0.1,
        wait_when_empty: bool = False,
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], float] | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.transport = transport if transport is not None else httpx.HTTPTransport()
        self.policy = _policy(max_retries, max_wait, retry_unsafe, jitter, wait_when_empty, clock, random)
        self._sleep = sleep or time.sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        policy = self.policy
        origin = _origin(request)
        if policy.may_retry(request.method):
            request.read()  # a body that can be sent again
        slept = policy.wait_first(origin)
        if slept:
            self._sleep(slept)
        retries = 0
        while True:
            response = self.transport.handle_request(request)
            policy.observe(origin, response.headers)
            wait = policy.delay(request.method, response.status_code, response.headers, retries, slept)
            if wait is None:
                return response
            response.close()
            self._sleep(wait)
            slept += wait
            retries += 1

    def close(self) -> None:
        self.transport.close()


class AsyncRetryTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`RetryTransport` for ``httpx.AsyncClient`` (``sleep`` is awaited)."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        max_retries: int = 3,
        max_wait: float = 60.0,
        retry_unsafe: bool = False,
        jitter: float = 0.1,
        wait_when_empty: bool = False,
        sleep: Callable[[float], Awaitable[object]] | None = None,
        clock: Callable[[], float] | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        self.policy = _policy(max_retries, max_wait, retry_unsafe, jitter, wait_when_empty, clock, random)
        self._sleep = sleep or asyncio.sleep

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        policy = self.policy
        origin = _origin(request)
        if policy.may_retry(request.method):
            await request.aread()
        slept = policy.wait_first(origin)
        if slept:
            await self._sleep(slept)
        retries = 0
        while True:
            response = await self.transport.handle_async_request(request)
            policy.observe(origin, response.headers)
            wait = policy.delay(request.method, response.status_code, response.headers, retries, slept)
            if wait is None:
                return response
            await response.aclose()
            await self._sleep(wait)
            slept += wait
            retries += 1

    async def aclose(self) -> None:
        await self.transport.aclose()
