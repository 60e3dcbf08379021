"""The framework-free engine: request facts -> matched rules -> one store call -> verdict.

Adapters (ASGI, WSGI, Flask, Django, the decision service) translate their request into
:class:`RequestFacts`, call :meth:`Engine.check` (or ``acheck``), apply the :class:`Verdict`
(either send ``verdict.status``/``headers``/``body`` as the response, or add
``verdict.headers`` to the app's response), and after the app responded call
:meth:`Engine.after` (or ``aafter``) with the status and response headers, which feeds
Fail2Ban counters and charges costs known only after the response.

The contract adapters rely on (:class:`RequestFacts`, :class:`Verdict`, :class:`EngineLike`) is
in :mod:`ratewarden.engine.contract`; the parts of :class:`Engine`: :mod:`~ratewarden.engine.routes`
(rule matching, the route cache), :mod:`~ratewarden.engine.flows` (the flows and their drivers),
:mod:`~ratewarden.engine.verdicts` (headers, bodies, events).

``Engine(policy)`` takes a path to a TOML file
(``str`` or ``os.PathLike``), TOML text (a ``str`` containing a newline), or a loaded
:class:`~ratewarden.policy.model.Policy`; keywords: ``storage`` (URL or store instance; beats
the file and ``RATEWARDEN_STORAGE``), ``clock`` (seconds, for tests), ``on_event`` (a callback
given every :class:`~ratewarden.events.Event`), ``profile`` and ``env`` (see
:mod:`ratewarden.policy.load`), ``max_keys`` (memory store bound).

Order of evaluation (docs/policy.md): exempt paths, safelist, blocklist, then one
all-or-nothing store call holding every matching ban (checked at cost 0) and every matching
throttle rule's windows; shadow rules get a second call of their own and never deny. The
logic is written once, as generators that yield store calls; :meth:`check` and :meth:`acheck`
only differ in how they run those calls.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ratewarden.core.rates import LIMIT_MAX
from ratewarden.engine.contract import EngineLike, RequestFacts, Verdict
from ratewarden.engine.flows import _Call as _Call
from ratewarden.engine.flows import _Flows
from ratewarden.engine.flows import _Result as _Result
from ratewarden.engine.routes import ROUTE_CACHE_SIZE as ROUTE_CACHE_SIZE
from ratewarden.engine.routes import ROUTE_KEY_MAX as ROUTE_KEY_MAX
from ratewarden.engine.routes import _Plan, _Route
from ratewarden.errors import RequestError, UnknownRuleError
from ratewarden.events import Event, EventBus
from ratewarden.limiter import AsyncLimiter, Limiter
from ratewarden.policy.load import load_policy, loads_policy, rule_policy
from ratewarden.policy.model import Policy, Rule
from ratewarden.runner import Runner
from ratewarden.storage import open_store
from ratewarden.storage.base import Store, check_store
from ratewarden.storage.memory import MemoryStore

__all__ = ["Engine", "EngineLike", "RequestFacts", "Verdict"]
log = logging.getLogger("ratewarden")


def _is_text(policy: str) -> bool:
    return "\n" in policy


class Engine(_Flows):
    """One policy, one store, and the request-to-verdict logic (see the module docstring)."""

    body_limit: int = 64 * 1024

    def __init__(
        self,
        policy: Any,
        *,
        storage: Any = None,
        clock: Callable[[], float] | None = None,
        on_event: Callable[[Event], object] | None = None,
        profile: str | None = None,
        env: Mapping[str, str] | None = None,
        max_keys: int | None = None,
    ) -> None:
        if isinstance(policy, Policy):
            self.policy = policy
        elif isinstance(policy, str) and _is_text(policy):
            self.policy = loads_policy(policy, profile=profile, env=env)
        elif isinstance(policy, str | os.PathLike):
            self.policy = load_policy(policy, profile=profile, env=env)
        else:
            raise TypeError(f"policy must be a file path, TOML text or a Policy, not {type(policy).__name__}")
        s = self.policy.settings
        self._clock: Callable[[], float] = clock or time.time
        self._fake_clock = clock
        given = storage if storage is not None else s.storage
        if isinstance(given, str):
            store: Store = open_store(given, clock=clock, max_keys=max_keys, key_prefix=s.key_prefix)
        else:
            store = check_store(given)
        self.store: Store = store
        self.events = EventBus()
        if on_event is not None:
            self.events.subscribe(on_event)
        self.body_limit = s.body_limit
        # The in-process fallback of the rules with on_store_error="local", built here rather
        # than at the first failure: threads failing at once must all count in this one store.
        local = s.on_store_error == "local" or any(r.on_store_error == "local" for r in self.policy.rules)
        #: every store call of this engine (its flows, and the decision service) goes through it
        self.runner = Runner(
            store,
            mode=s.on_store_error,
            local=MemoryStore(clock=clock) if local else None,
            deny_retry_after=s.store_error_retry_after,
        )
        #: a store whose sync calls never block (memory): the async path calls it directly
        self._inline = self.runner.inline
        self._limiters: tuple[Limiter, AsyncLimiter] | None = None
        self._needs_body = self.policy.needs_body
        #: exempt() and needs_body() are False for every request (no exempt path, no rule or ban
        #: keyed on the body) and the store never blocks: an adapter may go straight to check()
        self._check_only = self._inline and not s.exempt and not self._needs_body
        p = self.policy
        self._has_lists = bool(
            p.safelist.networks
            or p.safelist.paths
            or p.safelist.secret_header
            or p.blocklist.networks
            or p.blocklist.paths
        )
        self._plans = [_Plan.of(r) for r in p.rules]
        self._oversize_deny = any(r.on_oversize_body == "deny" for r in p.rules)
        self._routes: dict[tuple[str, str, str, str], _Route] = {}
        self._draft = s.headers == "draft"
        self._by_host = any(r.match.hosts for r in p.rules) or any(b.match.hosts for b in p.bans)
        self._by_scheme = any(r.match.schemes for r in p.rules) or any(b.match.schemes for b in p.bans)

    @property
    def store_errors(self) -> int:
        """Failures of the store seen so far (every one, not once per outage)."""
        return self.runner.store_errors

    @property
    def limiter(self) -> Limiter:
        """A :class:`~ratewarden.Limiter` on this engine's store and settings (for ``@limit``-style
        use), built on first use; closing the engine closes the store it shares."""
        return self._shared_limiters()[0]

    @property
    def async_limiter(self) -> AsyncLimiter:
        """The :class:`~ratewarden.AsyncLimiter` twin of :attr:`limiter`."""
        return self._shared_limiters()[1]

    def _shared_limiters(self) -> tuple[Limiter, AsyncLimiter]:
        if self._limiters is None:
            s = self.policy.settings
            kw: dict[str, Any] = {
                "on_store_error": s.on_store_error,
                "key_prefix": s.key_prefix,
                "clock": self._fake_clock,
            }
            self._limiters = (Limiter(self.store, **kw), AsyncLimiter(self.store, **kw))
        return self._limiters

    @classmethod
    def for_rule(cls, rule: Rule | Mapping[str, Any], *, base: Engine | None = None, **options: Any) -> Engine:
        """An engine for one route's rule, e.g. for ``@limit`` decorators: ``rule`` is a
        :class:`~ratewarden.policy.model.Rule` or its spec as values, the keys of a ``[[rule]]``
        (``{"name": "login", "limits": ["5/minute"], "key": "ip"}``), validated by the policy
        file's own parsers (no TOML text is written or read; a profile never applies).

        With ``base``, it shares the base engine's settings (headers, proxies, store, default
        algorithm, response shape, JWT key, safelist), its clock and its event subscribers; bans
        and the blocklist stay with the base engine (so nothing is counted twice). Without, the
        default settings and the ``RATEWARDEN_*`` setting overrides apply. ``options`` go to
        ``Engine`` (``env``: the environment to read instead of ``os.environ``).
        """
        env = options.pop("env", None)
        options.pop("profile", None)  # a profile overrides a file's rules by name: none here
        policy = rule_policy(rule, base=None if base is None else base.policy, env=env)
        if base is None:
            return cls(policy, **options)
        options.setdefault("storage", base.store)
        options.setdefault("clock", base._fake_clock)
        engine = cls(policy, **options)
        engine.events = base.events
        return engine

    # -- public entry points ------------------------------------------------------------------

    def check(self, facts: RequestFacts) -> Verdict:
        """Decide a request (consuming its cost if admitted). Never raises."""
        try:
            return self._decide(facts, "hit")
        except Exception as exc:
            return self._internal_error(facts, exc)

    async def acheck(self, facts: RequestFacts) -> Verdict:
        try:
            if self._inline:  # a store that never blocks (memory): the sync path, one coroutine less
                return self._decide(facts, "hit")
            return await self._adecide(facts, "hit")
        except Exception as exc:
            return self._internal_error(facts, exc)

    def after(self, facts: RequestFacts, verdict: Verdict, status: int, headers: Mapping[str, str]) -> None:
        """Feed the response back: charge after-response costs, count Fail2Ban/Allow2Ban."""
        if verdict.pending is None:
            return
        try:
            self._drive(self._after_flow(verdict.pending, verdict, status, headers))
        except Exception as exc:
            log.exception("ratewarden: internal error in after(); ignored")
            self._emit("error", verdict.pending.ctx, None, None, detail=repr(exc))

    async def aafter(self, facts: RequestFacts, verdict: Verdict, status: int, headers: Mapping[str, str]) -> None:
        if verdict.pending is None:
            return
        try:
            await self._adrive(self._after_flow(verdict.pending, verdict, status, headers))
        except Exception as exc:
            log.exception("ratewarden: internal error in aafter(); ignored")
            self._emit("error", verdict.pending.ctx, None, None, detail=repr(exc))

    def peek(self, facts: RequestFacts) -> Verdict:
        """The verdict :meth:`check` would give now, consuming nothing and emitting no event
        (a status view: ``verdict.decisions`` holds every window that applies, with its
        remaining units and reset time)."""
        try:
            result = self._decide(facts, "peek")
            result.pending = None  # nothing to feed back
            return result
        except Exception as exc:
            return self._internal_error(facts, exc)

    async def apeek(self, facts: RequestFacts) -> Verdict:
        try:
            result = await self._adecide(facts, "peek")
            result.pending = None
            return result
        except Exception as exc:
            return self._internal_error(facts, exc)

    def check_key(self, rule: str, key: str, cost: int = 1, *, attrs: Mapping[str, Any] | None = None) -> Verdict:
        """Decide one named rule for a key the caller chose (the decision service's
        ``{"rule": ..., "key": ..., "cost": ...}``), with the rule's limits, tiers (from ``attrs``),
        headers and body; the match, key source, bans and lists are skipped.

        Bad input is the caller's error, never an admission: :class:`~ratewarden.errors.RequestError`
        (its ``field`` names ``"rule"``, ``"key"``, ``"cost"`` or ``"attrs"``) for a cost that is
        not an integer >= 0, a key that is not a non-empty string of at most ``max_key_length``
        characters, attributes that are not a mapping; :class:`~ratewarden.errors.UnknownRuleError`
        (also a ``KeyError``) for an unknown rule name. Never raises otherwise."""
        plan, key, cost, attrs = self._key_request(rule, key, cost, attrs)
        try:
            result: Verdict = self._drive(self._key_flow(plan, key, cost, attrs))
            return result
        except Exception as exc:
            return self._internal_error(RequestFacts("", "", None), exc)

    async def acheck_key(
        self, rule: str, key: str, cost: int = 1, *, attrs: Mapping[str, Any] | None = None
    ) -> Verdict:
        plan, key, cost, attrs = self._key_request(rule, key, cost, attrs)
        try:
            result: Verdict = await self._adrive(self._key_flow(plan, key, cost, attrs))
            return result
        except Exception as exc:
            return self._internal_error(RequestFacts("", "", None), exc)

    def _key_request(
        self, rule: object, key: object, cost: object, attrs: object
    ) -> tuple[_Plan, str, int, Mapping[str, Any]]:
        """The arguments of :meth:`check_key`, validated (see there)."""
        plan = self._plan(rule)
        if type(key) is not str:
            raise RequestError("key", f"the key must be a string, not {_kind(key)}")
        if not key.strip():
            raise RequestError("key", f"the key must not be empty, not {key!r}")
        limit = self.policy.settings.max_key_length
        if len(key) > limit:
            raise RequestError("key", f"the key is {len(key)} characters long; at most {limit} (max_key_length)")
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError("key", f"the key is not valid Unicode text: {key!r}") from None
        if type(cost) is not int or cost < 0:
            raise RequestError("cost", f"the cost must be an integer >= 0, not {cost!r:.60}")
        if attrs is None:
            attrs = {}
        elif not isinstance(attrs, Mapping):
            raise RequestError("attrs", f"attrs must be a mapping of attribute names to values, not {_kind(attrs)}")
        # A cost above every limit is denied as "never"; past LIMIT_MAX its size changes nothing,
        # and a store never sees a number it cannot hold exactly.
        return plan, key, min(cost, LIMIT_MAX + 1), attrs

    def _plan(self, rule: object) -> _Plan:
        if type(rule) is not str:
            raise RequestError("rule", f"the rule must be a rule name (a string), not {_kind(rule)}")
        for plan in self._plans:
            if plan.rule.name == rule:
                return plan
        raise UnknownRuleError(rule)

    def reset(self, rule: str, key: str) -> None:
        """Admin/tests: forget every window of ``rule`` for ``key``, the key as events show it
        (``"session=h:..."``) or readable (``"ip=198.51.100.7"``, ``"session=abc"``,
        ``"user=alice"``: hashed here as the policy hashes it). A ban name lifts the ban."""
        self._drive(self._reset_flow(rule, key))

    async def areset(self, rule: str, key: str) -> None:
        await self._adrive(self._reset_flow(rule, key))

    def close(self) -> None:
        self.runner.close()

    async def aclose(self) -> None:
        await self.runner.aclose()


def _kind(value: object) -> str:
    """How an error names a value of the wrong type: its type, and the value when short."""
    text = repr(value)
    return f"{type(value).__name__} {text}" if len(text) <= 40 else type(value).__name__


if TYPE_CHECKING:
    _ENGINE_IS_ENGINE_LIKE: type[EngineLike] = Engine  # mypy checks the contract's signatures here
