"""Events: every throttle, ban, block, shadow denial and store failure, as one structured record.

Each :class:`Event` is logged on the ``"ratewarden"`` logger (``extra`` carries ``rw_event``,
``rule``, ``key``, ``client_ip``, ``method``, ``path``, ``user``, ``retry_after``, ``status``)
and passed to every subscribed callback. A callback that raises is logged and ignored: the
host application never sees an exception from an event hook.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

__all__ = ["Event", "EventBus", "EventKind"]

log = logging.getLogger("ratewarden")

EventKind = Literal["throttle", "ban", "banned", "block", "shadow", "store_error", "error"]

_LEVELS: dict[str, int] = {
    "throttle": logging.INFO,
    "ban": logging.WARNING,
    "banned": logging.INFO,
    "block": logging.INFO,
    "shadow": logging.INFO,
    "store_error": logging.WARNING,
    "error": logging.ERROR,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One thing worth knowing about a request.

    ``kind``: ``throttle`` (429), ``ban`` (a key was just banned), ``banned`` (a request refused
    because its key is banned), ``block`` (blocklist), ``shadow`` (a shadow rule would have
    denied), ``store_error`` (the store failed; ``on_store_error`` decided), ``error`` (an
    internal error; the request was decided by ``on_store_error``).
    """

    kind: EventKind
    rule: str | None
    key: str | None
    client_ip: str | None
    method: str
    path: str
    user: str | None
    retry_after: float | None = None
    status: int | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class EventBus:
    """Fan-out to the logger and to subscribers; counts events by ``(kind, rule)``."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Event], object]] = []
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str | None]] = Counter()

    def subscribe(self, callback: Callable[[Event], object]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: Event) -> None:
        with self._lock:
            self.counts[event.kind, event.rule] += 1
            subscribers = list(self._subscribers)
        level = _LEVELS.get(event.kind, logging.INFO)
        if log.isEnabledFor(level):
            log.log(
                level,
                "ratewarden %s rule=%s client=%s %s %s retry_after=%s",
                event.kind,
                event.rule,
                event.client_ip,
                event.method,
                event.path,
                event.retry_after,
                extra={
                    "rw_event": event.kind,
                    "rule": event.rule,
                    "key": event.key,
                    "client_ip": event.client_ip,
                    "method": event.method,
                    "path": event.path,
                    "user": event.user,
                    "retry_after": event.retry_after,
                    "status": event.status,
                },
            )
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("ratewarden: an event callback raised; ignored")
