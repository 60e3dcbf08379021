"""Prometheus metrics for the decision service and, as an opt-in, for the embedded middleware.

The decision service records every decision itself (:meth:`Metrics.decision`). An app that
embeds ratewarden and already exposes ``/metrics`` attaches the same metrics to its engine::

    from ratewarden.metrics import Metrics
    metrics = Metrics()                     # registers on prometheus_client's default REGISTRY
    metrics.attach(engine)                  # the middleware's engine: e.g. middleware.engine

Attached to an engine, metrics follow its events: denials by rule (``outcome="denied"``), shadow
denials (``"shadow"``), bans, blocks and store errors. Admitted requests raise no event in the
engine, so an embedding app counts denials, not admissions (the service counts both).

Names: ``ratewarden_decisions_total{rule,outcome}``, ``ratewarden_store_errors_total``,
``ratewarden_decision_seconds{api}`` (histogram), ``ratewarden_memory_keys`` (keys held by the
memory store), ``ratewarden_reloads_total{result}``, ``ratewarden_events_total{kind}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ratewarden.events import Event
from ratewarden.storage.memory import MemoryStore

__all__ = ["Metrics"]

#: seconds; a decision on the memory store takes tens of microseconds, one on Redis about a round trip
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

_EVENT_OUTCOME = {"throttle": "denied", "shadow": "shadow", "banned": "banned", "block": "blocked"}


class Metrics:
    """The ratewarden metrics on one registry (the default registry unless one is given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = DEFAULT_REGISTRY if registry is None else registry
        self.registry = reg
        self.decisions = Counter(
            "ratewarden_decisions", "Decisions by rule and outcome", ["rule", "outcome"], registry=reg
        )
        self.store_errors = Counter(
            "ratewarden_store_errors", "Store calls that failed (on_store_error decided)", registry=reg
        )
        self.latency = Histogram(
            "ratewarden_decision_seconds", "Time to decide, by API", ["api"], buckets=BUCKETS, registry=reg
        )
        self.memory_keys = Gauge("ratewarden_memory_keys", "Keys held by the memory store", registry=reg)
        self.reloads = Counter("ratewarden_reloads", "Policy reloads by result", ["result"], registry=reg)
        self.events = Counter("ratewarden_events", "Engine events by kind", ["kind"], registry=reg)
        self._children: dict[tuple[str, str], Any] = {}
        self._latency: dict[str, Any] = {}
        self._keys_source: Callable[[], int] = lambda: 0
        self.memory_keys.set_function(lambda: float(self._keys_source()))

    def decision(self, rule: str | None, outcome: str) -> None:
        """Count one decision (``outcome``: allowed, denied, shadow, unavailable, ...)."""
        k = (rule or "", outcome)
        child = self._children.get(k)
        if child is None:
            child = self._children[k] = self.decisions.labels(rule or "", outcome)
        child.inc()

    def observe(self, api: str, seconds: float) -> None:
        h = self._latency.get(api)
        if h is None:
            h = self._latency[api] = self.latency.labels(api)
        h.observe(seconds)

    def count_keys(self, source: Callable[[], int]) -> None:
        """Read the memory store's key count from ``source`` at each scrape."""
        self._keys_source = source

    def on_event(self, event: Event) -> None:
        """An engine event callback (see :meth:`attach`)."""
        self.events.labels(event.kind).inc()
        if event.kind == "store_error":
            self.store_errors.inc()
            return
        outcome = _EVENT_OUTCOME.get(event.kind)
        if outcome is not None:
            self.decision(event.rule, outcome)

    def attach(self, engine: Any, *, decisions: bool = True) -> Callable[[], None]:
        """Follow ``engine``'s events; also count the keys of its store when it is the memory
        store. ``decisions=False``: count store errors and events only (the service counts its
        decisions itself). Returns a function that detaches."""
        store = engine.store
        if isinstance(store, MemoryStore):  # the gauge of the in-process store's size
            self.count_keys(lambda: len(store))
        callback: Callable[[Event], object] = self.on_event if decisions else self._errors_only
        unsubscribe: Callable[[], None] = engine.events.subscribe(callback)
        return unsubscribe

    def _errors_only(self, event: Event) -> None:
        self.events.labels(event.kind).inc()
        if event.kind == "store_error":
            self.store_errors.inc()
