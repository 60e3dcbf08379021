"""A merged async batch of many multi-window calls on a healthy Redis: every call is decided by
Redis, none takes the fallback (the merged reads must not exceed what one Lua ``unpack`` takes)."""

from __future__ import annotations

import asyncio
import collections

from ratewarden import AsyncLimiter


async def test_a_merged_batch_of_many_windows_never_turns_a_healthy_store_into_a_fallback(
    redis_url: str, redis_prefix: str
) -> None:
    limiter = AsyncLimiter(redis_url, key_prefix=redis_prefix, on_store_error="local")
    try:
        await limiter.hit("warm", "1/hour")  # the connection is up before the burst
        rates = [f"{100 + i}/{1 + i} hours" for i in range(70)]
        decisions = await asyncio.gather(*[limiter.hit(f"k{i}", rates) for i in range(128)])
        reasons = collections.Counter(str(d.reason) for d in decisions)
        assert reasons == {"None": 128}
    finally:
        await limiter.aclose()
