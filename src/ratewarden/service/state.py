"""The running service's state: one immutable snapshot (engine, rules, descriptor index), swapped
whole on reload.

A request reads ``service.snapshot`` once and uses that snapshot to the end, so a reload never
mixes two policies in one decision. :meth:`Service.reload` builds the new snapshot completely
(file read, validated, engine built) before the swap; if anything fails, the error is logged
as ``file:line: reason``, counted in ``ratewarden_reloads_total{result="error"}``, and the old
snapshot keeps serving. The store is kept across reloads while its URL is unchanged, so
counters in the memory store survive a reload.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ratewarden.dashboard import Dashboard
from ratewarden.engine import Engine
from ratewarden.errors import RatewardenError
from ratewarden.metrics import Metrics
from ratewarden.policy.keys import _secret, store_value
from ratewarden.policy.load import load_policy
from ratewarden.policy.model import Policy, Rule
from ratewarden.service.descriptors import DescriptorIndex, Route
from ratewarden.service.envoy_config import load_envoy_config

__all__ = ["Service", "Snapshot"]

log = logging.getLogger("ratewarden.service")


@dataclass(frozen=True, slots=True)
class Snapshot:
    engine: Engine
    rules: Mapping[str, Rule]
    rule_names: frozenset[str]
    reset_names: frozenset[str]  # rules and bans
    index: DescriptorIndex
    source: str
    inline: bool  # a store that never blocks (memory): decide with a direct call


class Service:
    """Where the policy comes from, the current snapshot, metrics and the admin token.

    ``policy``: a TOML policy file (or TOML text, or a loaded Policy); or ``envoy_config``: an
    envoyproxy/ratelimit YAML file or directory, with ``algorithm``. ``storage`` (URL or store)
    beats the file. ``clock`` is for tests.
    """

    def __init__(
        self,
        policy: Any = None,
        *,
        envoy_config: str | Path | None = None,
        algorithm: str = "fixed-window",
        storage: Any = None,
        clock: Callable[[], float] | None = None,
        metrics: Metrics | None = None,
        admin_token: str | None = None,
        max_body: int = 64 * 1024,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if (policy is None) == (envoy_config is None):
            raise RatewardenError("give exactly one of a policy file or an Envoy configuration")
        self.policy_source = policy
        self.envoy_config = envoy_config
        self.algorithm = algorithm
        self.storage = storage
        self.clock = clock
        self.env = os.environ if env is None else env
        self.metrics = metrics if metrics is not None else Metrics(_own_registry())
        self.admin_token = admin_token
        self.max_body = max_body
        self.reloads = 0
        self.reload_errors = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._detach: Callable[[], None] | None = None
        #: the live dashboard shown by the app (``create_app`` sets it): see :meth:`record`
        self.dashboard: Dashboard | None = None
        self._detach_dashboard: Callable[[], None] | None = None
        self.snapshot = self._build(None)

    @property
    def path(self) -> Path | None:
        """The file (or directory) to watch, if the policy came from one."""
        src = self.envoy_config if self.envoy_config is not None else self.policy_source
        if isinstance(src, str) and "\n" in src:
            return None
        return Path(src) if isinstance(src, str | os.PathLike) else None

    def _load(self) -> tuple[Policy, list[Route] | None]:
        if self.envoy_config is not None:
            storage = self.env.get("RATEWARDEN_STORAGE") or (self.storage if isinstance(self.storage, str) else None)
            policy, routes = load_envoy_config(
                self.envoy_config,
                algorithm=self.algorithm,
                storage=storage or "memory://",
                on_store_error=self.env.get("RATEWARDEN_ON_STORE_ERROR", "allow"),
            )
            return policy, routes
        if isinstance(self.policy_source, Policy):
            return self.policy_source, None
        src = self.policy_source
        if isinstance(src, str) and "\n" in src:
            from ratewarden.policy.load import loads_policy

            return loads_policy(src, env=self.env), None
        return load_policy(src, env=self.env), None

    def _build(self, old: Snapshot | None) -> Snapshot:
        policy, routes = self._load()
        storage = self.storage
        if old is not None and (storage is not None or policy.settings.storage == old.engine.policy.settings.storage):
            storage = old.engine.store  # same store: its counters carry over
        engine = Engine(policy, storage=storage, clock=self.clock, env=self.env)
        rules = {r.name: r for r in policy.rules}
        index = DescriptorIndex(routes) if routes is not None else DescriptorIndex.of_rules(policy.rules)
        names = frozenset(rules)
        inline = engine.runner.inline
        return Snapshot(engine, rules, names, names | {b.name for b in policy.bans}, index, policy.source, inline)

    def attach_metrics(self) -> None:
        """Follow the current engine's events (store errors) and its memory store's size, with
        the metrics and the dashboard (which count decisions through :meth:`record` only)."""
        if self._detach is not None:
            self._detach()
        self._detach = self.metrics.attach(self.snapshot.engine, decisions=False)
        if self._detach_dashboard is not None:
            self._detach_dashboard()
            self._detach_dashboard = None
        if self.dashboard is not None:
            self._detach_dashboard = self.dashboard.attach(self.snapshot.engine, decisions=False)

    def record(self, rule: str | None, outcome: str, denied_key: str | None = None) -> None:
        """Count one decision, once, where everything that shows decisions reads it: the
        Prometheus counter ``ratewarden_decisions_total{rule,outcome}`` and the dashboard's
        per-second series. ``outcome``: allowed, denied, shadow, unavailable. ``denied_key``:
        the key of a denial the engine raised no event for (Envoy's descriptor values), shown
        in the dashboard's top denied keys as ``h:`` and its HMAC, like the keys in the
        engine's events (descriptor values may be addresses or user ids)."""
        self.metrics.decision(rule, outcome)
        dashboard = self.dashboard
        if dashboard is not None:
            if denied_key is not None:
                s = self.snapshot.engine.policy.settings
                denied_key = store_value("descriptor", denied_key, _secret(s.key_secret, s.key_prefix))
            dashboard.record_decision(
                rule or "(none)", outcome == "allowed", shadow=outcome == "shadow", denied_key=denied_key
            )

    def reload(self) -> bool:
        """Swap in the policy as the file says now; keep the old one if the file is broken."""
        with self._lock:
            try:
                new = self._build(self.snapshot)
            except Exception as exc:  # a broken file, or a store that cannot be opened
                self.reload_errors += 1
                self.last_error = str(exc)
                self.metrics.reloads.labels("error").inc()
                log.error(
                    "ratewarden: reload failed, the previous policy keeps serving: %s",
                    exc,
                    extra={"rw_event": "reload_error", "reason": str(exc)},
                )
                if self.dashboard is not None:
                    self.dashboard.record_reload(False, f"the previous policy keeps serving: {exc}")
                return False
            old = self.snapshot
            self.snapshot = new
            self.reloads += 1
            self.last_error = None
            self.metrics.reloads.labels("ok").inc()
            if self._detach is not None:
                self.attach_metrics()
            if new.engine.store is not old.engine.store:
                old.engine.close()
            log.info(
                "ratewarden: policy reloaded from %s (%d rules, %d descriptors)",
                new.source,
                len(new.rules),
                len(new.index),
                extra={"rw_event": "reload", "rules": len(new.rules)},
            )
            if self.dashboard is not None:
                self.dashboard.record_reload(
                    True, f"reloaded {new.source}: {len(new.rules)} rules, {len(new.index)} descriptors"
                )
            return True

    async def healthy(self, timeout: float = 1.0) -> bool:
        """True when the store answers a read (a peek that changes nothing) within ``timeout``."""
        exc = await self.snapshot.engine.runner.answers(timeout)
        if exc is not None:
            log.warning("ratewarden: health check failed: %r", exc)
            return False
        return True

    def close(self) -> None:
        self.snapshot.engine.close()


def _own_registry() -> Any:
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()
