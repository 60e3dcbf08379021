"""Automatic batching for the asyncio face of :class:`~ratewarden.storage.postgres.PostgresStore`.

On one event loop at most ``slots`` calls are in flight (each on a pooled connection); the
calls that arrive meanwhile are queued, and a slot that comes free sends the whole queue (up
to :data:`MERGE` requests) as ONE ``{S}batch(...)`` call: one round trip, one transaction, one
commit for all of them. The function takes every key's lock in sorted order and then runs the
requests one after the other, each all-or-nothing, a later one seeing what an earlier wrote:
batching changes no decision (the differential tests check it against the core applied
request by request), it shares round trips, commits and lock hand-offs. An error of the batch
(the database unreachable, a quota's clock skew) reaches every request in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["MERGE", "Batcher", "Request"]

#: at most this many queued requests go in one call
MERGE = 128

#: (op, lease, keys, wids, specs, costs, now): one request's arguments (now: None = the database's)
Request = tuple[str, str, list[str], list[str], list[str], list[int], int | None]
#: sends requests as one call, returns one flat reply per request
Send = Callable[[list[Request]], Awaitable[list[list[int]]]]


class Batcher:
    """At most ``slots`` calls in flight on one loop; the rest queued and sent together."""

    __slots__ = ("free", "loop", "queue", "send", "tasks")

    def __init__(self, send: Send, loop: asyncio.AbstractEventLoop, slots: int) -> None:
        self.send = send
        self.loop = loop
        self.free = slots
        self.queue: list[tuple[Request, asyncio.Future[list[int]]]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def call(self, req: Request) -> list[int]:
        if self.free > 0 and not self.queue:
            self.free -= 1
            try:
                return (await self.send([req]))[0]
            finally:
                self._next()
        fut: asyncio.Future[list[int]] = self.loop.create_future()
        self.queue.append((req, fut))
        return await fut

    def _next(self) -> None:
        """A slot came free: drain the queue with it, or give it back."""
        if self.queue:
            task = self.loop.create_task(self._drain())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            self.free += 1

    async def _drain(self) -> None:
        try:
            while self.queue:
                batch = self._take()
                try:
                    results: list[Any] = await self.send([r for r, _ in batch])
                except Exception as exc:  # the whole call failed: every waiter learns why
                    results = [exc] * len(batch)
                except BaseException:  # cancelled (loop shutting down): cancel every waiter
                    for _, fut in (*batch, *self.queue):
                        fut.cancel()
                    self.queue = []
                    raise
                for (_, fut), r in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(r, BaseException):
                        fut.set_exception(r)
                    else:
                        fut.set_result(r)
        finally:
            self.free += 1

    def _take(self) -> list[tuple[Request, asyncio.Future[list[int]]]]:
        """The next batch: up to MERGE queued requests that share one ``now`` (always, in
        production: the database's; an injected test clock may differ between requests)."""
        first = self.queue[0][0][6]
        n = 0
        for req, _ in self.queue[:MERGE]:
            if req[6] != first:
                break
            n += 1
        batch, self.queue = self.queue[:n], self.queue[n:]
        return batch
