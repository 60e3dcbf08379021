"""A ``requests`` adapter that honours ``Retry-After`` and ``RateLimit`` on 429 and 503.

``session.mount("https://", RetryAdapter())`` (and ``"http://"``). Connection-level retries stay
with requests' own ``HTTPAdapter`` (``connect_retries=``); this adapter retries answers that say
"not now". A body that cannot be sent twice (a file or a generator) is never retried.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from ratewarden.client._retry import RetryPolicy

__all__ = ["RetryAdapter"]


class RetryAdapter(HTTPAdapter):
    """``RetryAdapter(max_retries=3, max_wait=60.0)``: the rules of
    :class:`~ratewarden.client.RetryTransport` for a ``requests.Session``.

    Keywords: ``retry_unsafe``, ``jitter``, ``wait_when_empty``, ``sleep``, ``clock``, ``random``
    as for ``RetryTransport``; ``connect_retries`` goes to ``HTTPAdapter(max_retries=...)``; the
    rest (``pool_connections``, ``pool_maxsize``, ``pool_block``) to ``HTTPAdapter``.
    ``adapter.policy.max_retries`` is this adapter's count (``adapter.max_retries`` is requests'
    connection-retry object).
    """

    def __init__(
        self,
        max_retries: int = 3,
        max_wait: float = 60.0,
        *,
        retry_unsafe: bool = False,
        jitter: float = 0.1,
        wait_when_empty: bool = False,
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], float] | None = None,
        random: Callable[[], float] | None = None,
        connect_retries: int = 0,
        **adapter_options: Any,
    ) -> None:
        self.policy = RetryPolicy(
            max_retries=max_retries,
            max_wait=max_wait,
            retry_unsafe=retry_unsafe,
            jitter=jitter,
            wait_when_empty=wait_when_empty,
            clock=clock or time.time,
            random=random or _random,
        )
        self._sleep = sleep or time.sleep
        super().__init__(max_retries=connect_retries, **adapter_options)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        policy = self.policy
        parts = urlsplit(request.url or "")
        origin = f"{parts.scheme}://{parts.hostname}:{parts.port or ''}"
        method = request.method or "GET"
        replayable = request.body is None or isinstance(request.body, bytes | str)
        slept = policy.wait_first(origin)
        if slept:
            self._sleep(slept)
        retries = 0
        while True:
            response = super().send(request, *args, **kwargs)
            headers: Mapping[str, str] = response.headers
            policy.observe(origin, headers)
            wait = policy.delay(method, response.status_code, headers, retries, slept) if replayable else None
            if wait is None:
                return response
            response.close()
            self._sleep(wait)
            slept += wait
            retries += 1


_random = random.random
