"""Automatic pipelining for the asyncio face of :class:`~ratewarden.storage.redis.RedisStore`.

On one event loop, one round trip is in flight at a time; the script calls that arrive while
it is out are queued and then sent together, and each waiter gets its own reply or error.
Standalone and Sentinel: the queued calls are merged into one script call (the script runs
the requests one after the other, each all-or-nothing, a later one seeing what an earlier one
wrote), sent as one write on one pooled connection. Cluster (keys in many slots): a redis-py
pipeline of one EVALSHA per call. The script is atomic on the server either way, so batching
changes no decision; it only shares round trips and server work.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from ratewarden.errors import StoreError
from ratewarden.storage.redis._lua import SCRIPT, SHA, Codec, resp_evalsha

__all__ = ["MERGE", "Batcher"]

#: at most this many queued calls are merged into one script call ...
MERGE = 128
#: ... and at most this many keys (windows) in all, unless one call alone has more: the time
#: Redis spends in one script call stays small (see docs/redis.md, "Work per call")
MERGE_KEYS = 192


def _reusable(conn: Any) -> bool:
    """Whether a kept connection can carry the next call as it is: connected, its server has
    not closed it, and nothing is waiting in it unread (redis-py's asyncio connection reads
    through an :class:`asyncio.StreamReader`, which the loop feeds as bytes and EOF arrive)."""
    reader = getattr(conn, "_reader", None)
    if not isinstance(reader, asyncio.StreamReader):
        return False
    return not reader.at_eof() and reader.exception() is None and not getattr(reader, "_buffer", True)


class Batcher:
    """Automatic pipelining on one event loop: one round trip in flight, the rest queued."""

    __slots__ = ("busy", "client", "conn", "loop", "pool", "queue", "tasks")

    def __init__(self, client: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        #: standalone and Sentinel: raw RESP on a pooled connection; Cluster (no pool): redis-py
        self.pool: Any = getattr(client, "connection_pool", None)
        #: the pooled connection this batcher keeps between round trips (see :meth:`_send`)
        self.conn: Any = None
        self.loop = loop
        self.busy = False
        self.queue: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def call(self, keys: list[str], args: list[Any]) -> Any:
        if self.busy:
            fut: asyncio.Future[Any] = self.loop.create_future()
            self.queue.append((keys, args, fut))
            return await fut
        self.busy = True
        try:
            return await self._one(keys, args)
        finally:
            if self.queue:
                task = self.loop.create_task(self._drain())
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            else:
                self.busy = False

    async def _one(self, keys: list[str], args: list[Any]) -> Any:
        if self.pool is None:
            try:
                return await self.client.execute_command("EVALSHA", SHA, len(keys), *keys, *args)
            except NoScriptError:
                return await self.client.execute_command("EVAL", SCRIPT, len(keys), *keys, *args)
        return (await self._raw([(keys, args)]))[0]

    async def _raw(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Send ``calls`` as one write on one pooled connection; one reply (or error) each.
        Calls with the same ``now`` (always, in production) are merged, up to :data:`MERGE` calls
        and :data:`MERGE_KEYS` keys at a time, into one script call that runs them one after the
        other: one ``TIME`` and one script setup for the lot. An error reply then reaches every call of that group."""
        groups: list[list[tuple[list[str], list[Any]]]] = [[c] for c in calls]
        if len(calls) > 1 and all(a[0] == calls[0][1][0] for _, a in calls):
            groups = []
            size = 0
            for c in calls:
                if not groups or len(groups[-1]) >= MERGE or size + len(c[0]) > MERGE_KEYS:
                    groups.append([])
                    size = 0
                groups[-1].append(c)
                size += len(c[0])
        replies = await self._send([Codec.merge(g) if len(g) > 1 else g[0] for g in groups])
        results: list[Any] = []
        for g, r in zip(groups, replies, strict=True):
            if len(g) == 1 or isinstance(r, BaseException):
                results += [r] * len(g)
                continue
            if not isinstance(r, list) or len(r) != 4 * sum(len(k) for k, _ in g):
                results += [StoreError(f"unexpected reply from the ratewarden script: {r!r:.200}")] * len(g)
                continue
            pos = 0
            for k, _ in g:
                results.append(r[pos : pos + 4 * len(k)])
                pos += 4 * len(k)
        if len(calls) == 1 and isinstance(results[0], BaseException):
            raise results[0]
        return results

    async def _send(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """One write of ``calls`` (EVALSHA each) on one pooled connection; a reply or error each.

        The connection is checked out of the pool once and kept between round trips: a batcher
        has one round trip in flight at a time, so it never needs two, and the pool's checkout
        per call (its lock and bookkeeping, and a poll of the socket that costs a turn of the
        event loop) was a third of a lone caller's client work (docs/redis.md, "One caller
        alone"). What that poll finds (a server that closed the connection, bytes nobody asked
        for) the kept connection's stream already shows without a turn of the loop:
        :func:`_reusable` looks, and a connection that fails it is replaced through the pool's
        own checkout, which reconnects. On any error or cancellation mid-call the connection is
        disconnected and given back, never reused with a reply unread. The pool still owns it:
        closing the client disconnects it.
        """
        conn = self.conn
        if conn is not None and not _reusable(conn):
            self.conn = None
            await self._drop(conn)
            conn = None
        if conn is None:
            conn = await self.pool.get_connection()
            if _reusable(conn):  # (a redis-py whose connection shows no stream: one per call, as before)
                self.conn = conn
        try:
            # check_health: a connection idle for a while is PINGed first, and the PING (never the
            # script) retried once on a fresh connection (RedisStore's options)
            await conn.check_health()
            data = b"".join(resp_evalsha(k, a) for k, a in calls)
            writer = getattr(conn, "_writer", None)
            if isinstance(writer, asyncio.StreamWriter) and not writer.is_closing():
                # What send_packed_command does, less its asyncio.wait_for around the write (on
                # Python 3.11 a task and two more turns of the loop per call): one call is in
                # flight at a time, so the buffer holds at most one and is never drained; a
                # server that stops reading shows as the reply's timeout, which disconnects.
                writer.write(data)
            else:
                await conn.send_packed_command([data], check_health=False)
            results: list[Any] = []
            for _ in calls:
                try:
                    results.append(await conn.read_response())
                except ResponseError as exc:  # a whole reply was read: the connection is fine
                    results.append(exc)
            for i, r in enumerate(results):
                if isinstance(r, NoScriptError):  # a flushed or restarted server: send the text once
                    k, a = calls[i]
                    await conn.send_packed_command(
                        conn.pack_command("EVAL", SCRIPT, len(k), *k, *a), check_health=False
                    )
                    try:
                        results[i] = await conn.read_response()
                    except ResponseError as exc:
                        results[i] = exc
        except BaseException:
            if self.conn is conn:
                self.conn = None
            await self._drop(conn)  # unread replies may be pending: never reuse it
            raise
        if self.conn is not conn:
            await self.pool.release(conn)
        return results

    async def _drop(self, conn: Any) -> None:
        try:
            await conn.disconnect(nowait=True)
        finally:
            await self.pool.release(conn)

    async def close(self) -> None:
        """Give the kept connection back to the pool (the client's close then disconnects it)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            await self.pool.release(conn)

    async def _drain(self) -> None:
        try:
            while self.queue:
                batch, self.queue = self.queue, []
                try:
                    results = await self._pipeline(batch)
                except Exception as exc:  # the whole round trip failed: every waiter learns why
                    results = [exc] * len(batch)
                except BaseException:  # cancelled (loop shutting down): cancel every waiter
                    for _, _, fut in (*batch, *self.queue):
                        fut.cancel()
                    self.queue = []
                    raise
                for (_, _, fut), r in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(r, BaseException):
                        fut.set_exception(r)
                    else:
                        fut.set_result(r)
                if not self.queue:
                    # Let the waiters just woken run first: those that call again at once (a
                    # loop of hits) join the next write, instead of the first of them taking a
                    # lone round trip while the others queue behind it (measured: every other
                    # script call carried one request, 50 tasks on one key).
                    try:
                        await asyncio.sleep(0)
                    except BaseException:
                        for _, _, fut in self.queue:
                            fut.cancel()
                        self.queue = []
                        raise
        finally:
            self.busy = False

    async def _pipeline(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> list[Any]:
        if len(batch) == 1:
            keys, args, _ = batch[0]
            try:
                return [await self._one(keys, args)]
            except Exception as exc:
                return [exc]
        if self.pool is not None:
            return await self._raw([(k, a) for k, a, _ in batch])
        pipe = self.client.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipe.execute_command("EVALSHA", SHA, len(keys), *keys, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        for i, r in enumerate(results):
            if isinstance(r, NoScriptError):
                keys, args, _ = batch[i]
                try:
                    results[i] = await self.client.execute_command("EVAL", SCRIPT, len(keys), *keys, *args)
                except Exception as exc:
                    results[i] = exc
        return results
