"""The framework-free engine: request facts -> matched rules -> one store call -> verdict.

Adapters (ASGI, WSGI, Flask, Django, the decision service) translate their request into
:class:`RequestFacts`, call :meth:`Engine.check` (or ``acheck``), apply the :class:`Verdict`
(either send ``verdict.status``/``headers``/``body`` as the response, or add
``verdict.headers`` to the app's response), and after the app responded call
:meth:`Engine.after` (or ``aafter``) with the status and response headers, which feeds
Fail2Ban counters and charges costs known only after the response.

INTERFACE CONTRACT (adapters rely on it; extend, don't change):

* ``RequestFacts`` fields below; header names lower-case; ``body`` is filled by the adapter
  only when :meth:`Engine.needs_body` says so, read up to ``Engine.body_limit`` bytes (the
  adapter hands the full body on to the app unchanged);
* ``Verdict.allowed``; ``Verdict.status`` (200 allowed, 429 throttled, 403 blocked/banned,
  503 store failure under a fail-closed rule that asks for it); ``Verdict.headers`` a list of
  ``(name, value)`` to put on the response whatever it is (rate-limit headers, and
  ``Retry-After`` on a denial); ``Verdict.body`` bytes (JSON) for a denial, else ``None``;
  ``Verdict.content_type``;
* ``Engine.check``/``acheck`` never raise for anything a client sends;
* ``Engine.exempt(facts)`` is cheap and True for paths that are never counted.

Additions (this module): call ``after``/``aafter`` for denied requests too (with
``status=verdict.status``): Allow2Ban counts every request, and it is a no-op when there is
nothing to do (``verdict.pending is None``). ``Engine(policy)`` takes a path to a TOML file
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

The hot path: what applies to a (method, path, host, scheme) is worked out once and cached
(bounded), with each rule's store key prefix, header names and ``RateLimit-Policy`` value. A
request whose route has no bans and only plain throttle rules (no shadow, no tiers, no cost
charged after the response) skips the generator: :meth:`_begin` builds its items, one store
call, :meth:`_throttled` makes the verdict; the generator is made of the same pieces.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import os
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ratewarden.core.algorithms.base import NEVER, Outcome, Window
from ratewarden.core.rates import LIMIT_MAX, US
from ratewarden.errors import RequestError, StoreError, UnknownRuleError
from ratewarden.events import Event, EventBus, EventKind
from ratewarden.http.headers import PolicyState, policy_field, rate_limit_headers, retry_after_seconds
from ratewarden.http.responses import DenialKind, denial_body
from ratewarden.limiter import AsyncLimiter, Limiter
from ratewarden.policy.keys import RequestContext, stored_key
from ratewarden.policy.load import load_policy, loads_policy, rule_policy
from ratewarden.policy.match import exempt_path, matches, normalize_path, path_matches, route_path
from ratewarden.policy.model import Ban, Policy, Rule
from ratewarden.storage import open_store
from ratewarden.storage.memory import MemoryStore

__all__ = ["Engine", "RequestFacts", "Verdict"]

log = logging.getLogger("ratewarden")

Item = tuple[str, Window, int]


@dataclass(slots=True)
class RequestFacts:
    """What the engine may know about a request, in plain Python types."""

    method: str
    path: str  # decoded; undecodable bytes replaced (never raises)
    client_ip: str | None  # the socket peer, before any proxy header is believed
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names; a repeat as the app sees it
    query_string: str = ""
    host: str = ""
    scheme: str = "http"  # "http", "https", "ws", "wss"
    user: str | None = None  # the identity the app put on the request (adapter-specific)
    user_attrs: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"role": "OWNER"}
    body: bytes | None = None  # only when Engine.needs_body(facts); at most Engine.body_limit
    body_truncated: bool = False  # True when the body was larger than the cap
    content_type: str = ""
    #: how the app's framework reads cookies, the query and the body (a
    #: :class:`~ratewarden.policy.keys.FieldReader`); None: Starlette's rules
    reader: Any = None


@dataclass(slots=True)
class Verdict:
    allowed: bool
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    content_type: str = "application/json"
    #: seconds until the same request would pass: 0 when allowed (and for a blocklist denial,
    #: which no wait cures); ``math.inf`` when it never can (a cost above the limit, a zero tier)
    retry_after: float = 0.0
    rule: str | None = None
    decisions: list[Any] = field(default_factory=list)
    # engine-private state carried from check() to after()
    pending: Any = None


@dataclass(slots=True)
class _Pending:
    charges: list[tuple[Rule, str, tuple[Window, ...]]]
    bans: list[tuple[Ban, str]]
    banned: bool
    ctx: RequestContext


@dataclass(slots=True)
class _Call:
    op: str  # hit | charge | reset
    items: list[Item]
    modes: list[str]  # on_store_error per item


@dataclass(slots=True)
class _Result:
    outs: list[Outcome]
    error: BaseException | None = None


_Flow = Generator[_Call, _Result, Any]


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the request path needs of a rule, computed once."""

    rule: Rule
    prefix: str  # store key prefix of the rule
    names: tuple[str, ...]  # header policy names of its base windows
    ip_key: bool  # key is plain "ip" (the fast path)
    cost: int | None  # the constant cost, None when it comes from a header
    simple: bool  # no tiers, a cost known before the response, not shadow: items straight from the plan

    @classmethod
    def of(cls, r: Rule) -> _Plan:
        constant = r.cost.source == "constant"
        return cls(
            r,
            f"r:{r.name}:",
            _names(r.name, r.windows),
            r.key.text == "ip",
            r.cost.value if constant else None,
            constant and r.tiers is None and not r.shadow,
        )


@dataclass(frozen=True, slots=True)
class _Route:
    """What applies to one (method, path, host, scheme): computed once per route, then cached."""

    exempt: bool  # a [ratewarden] exempt path: never counted
    plans: tuple[_Plan, ...]  # the rules that apply, in policy order
    bans: tuple[Ban, ...]  # the bans that apply
    fast: bool  # no bans and every plan simple: one store call, no generator needed
    policy: str | None  # the ``RateLimit-Policy`` value when every plan gives its base windows
    rate_format: str  # then the ``RateLimit`` value as a %-format: ``"NAME";r=%d;t=%d`` per throttle item
    #: on a fast route, per throttle item in order when every plan has its key: the header
    #: policy name, the ``on_store_error`` mode, and ``(name, limit, window seconds)`` of its state
    names: list[str] = field(default_factory=list)  # never changed once made
    modes: list[str] = field(default_factory=list)
    parts: tuple[tuple[str, int, float], ...] = ()


class _Throttle:
    """The throttle rules' part of one request: store items and who owns each (aligned lists)."""

    __slots__ = (
        "charges",
        "complete",
        "items",
        "keys",
        "modes",
        "names",
        "no_budget",
        "owners",
        "shadow_items",
        "shadow_owners",
    )

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.modes: list[str] = []
        self.owners: list[tuple[Rule, str]] = []  # (rule, key) per item
        self.names: list[str] = []  # header policy name per item
        #: the fast path (:meth:`Engine._fast`): each plan's key, in route order; ``owners`` is
        #: then left empty and made from these only for a denial
        self.keys: list[str] | None = None
        self.shadow_items: list[Item] = []
        self.shadow_owners: list[tuple[Rule, str]] = []
        self.charges: list[tuple[Rule, str, tuple[Window, ...]]] = []
        self.no_budget: tuple[Rule, str] | None = None
        self.complete = True  # every plan of the route gave its base windows (the cached policy header holds)


def _names(name: str, windows: Sequence[Window]) -> tuple[str, ...]:
    """Header policy names: the rule's name for one window, ``NAME-<seconds>s`` for each of several."""
    if len(windows) == 1:
        return (name,)
    return tuple(f"{name}-{_secs(w)}s" for w in windows)


_new_tuple: Any = tuple.__new__  # PolicyState(...) without its Python-level __new__ (a third of the cost)

#: routes remembered per engine; past this many distinct (method, path, host, scheme) the cache
#: starts again (so a flood of distinct paths costs a re-match each, never unbounded memory)
ROUTE_CACHE_SIZE = 4096
ROUTE_KEY_MAX = 512  # characters of path and host: at most ~2 MiB of cached keys per engine


def _is_text(policy: str) -> bool:
    return "\n" in policy


class Engine:
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
        store = storage if storage is not None else s.storage
        if isinstance(store, str):
            store = open_store(store, clock=clock, max_keys=max_keys, key_prefix=s.key_prefix)
        self.store: Any = store
        #: a store whose sync calls never block (memory): the async path calls it directly
        self._inline = not hasattr(store, "aapply") and getattr(store, "kind", "") == "memory"
        #: the sync and async limiters of this engine share its one store (for ``@limit``-style use)
        self.limiter = Limiter(store, on_store_error=s.on_store_error, key_prefix=s.key_prefix, clock=clock)
        self.async_limiter = AsyncLimiter(store, on_store_error=s.on_store_error, key_prefix=s.key_prefix, clock=clock)
        self.events = EventBus()
        if on_event is not None:
            self.events.subscribe(on_event)
        self.body_limit = s.body_limit
        self.store_errors = 0
        # The in-process fallback of the rules with on_store_error="local", built here rather
        # than at the first failure: threads failing at once must all count in this one store.
        local = s.on_store_error == "local" or any(r.on_store_error == "local" for r in self.policy.rules)
        self._local: MemoryStore | None = MemoryStore(clock=clock) if local else None
        self._failing = False
        self._needs_body = self.policy.needs_body
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

    # -- cheap questions ------------------------------------------------------------------------

    def exempt(self, facts: RequestFacts) -> bool:
        ex = self.policy.settings.exempt
        if not ex:
            return False
        try:
            path = route_path(facts.path or "/")
            return exempt_path(ex, path, normalize_path(path))
        except Exception:  # pragma: no cover - defensive: never raise on client input
            return False

    def needs_body(self, facts: RequestFacts) -> bool:
        if not self._needs_body:
            return False
        try:
            ctx = RequestContext(facts, self.policy, self._clock)
            for r in self.policy.rules:
                if (r.key.needs_body or (r.fallback is not None and r.fallback.needs_body)) and self._applies(r, ctx):
                    return True
            return any(b.key.needs_body and self._matches(b.match, ctx) for b in self.policy.bans)
        except Exception:  # pragma: no cover - defensive
            return False

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

    def _decide(self, facts: RequestFacts, op: str) -> Verdict:
        """The common case (no bans, no shadow or after-response rules on this route) is a
        straight call: :meth:`_begin`, one store call, :meth:`_throttled`; anything else runs the
        generator, which is built from the same pieces."""
        start = self._begin(facts, op)
        if isinstance(start, Verdict):
            return start
        ctx, route, t = start
        if t is None:
            result: Verdict = self._drive(self._check_flow(ctx, route, op))
            return result
        return self._throttled(ctx, route, t, self._run(_Call(op, t.items, t.modes)), op)

    async def _adecide(self, facts: RequestFacts, op: str) -> Verdict:
        start = self._begin(facts, op)
        if isinstance(start, Verdict):
            return start
        ctx, route, t = start
        if t is None:
            result: Verdict = await self._adrive(self._check_flow(ctx, route, op))
            return result
        call = _Call(op, t.items, t.modes)
        return self._throttled(ctx, route, t, self._run(call) if self._inline else await self._arun(call), op)

    def _begin(self, facts: RequestFacts, op: str) -> Verdict | tuple[RequestContext, _Route, _Throttle | None]:
        """Up to the store call: exempt paths and the lists decide here; on a fast route the
        throttle items are ready (else ``None``: the generator does the rest)."""
        ctx = RequestContext(facts, self.policy, self._clock)
        route = self._route(ctx)
        if route.exempt:
            return Verdict(True)
        if self._has_lists:
            listed = self._lists(ctx, op == "peek")
            if listed is not None:
                return listed
        if self._oversize_deny and ctx.oversize():
            for plan in route.plans:
                if plan.rule.on_oversize_body == "deny":
                    return self._too_large(ctx, plan.rule, op == "peek")
        if route.fast:
            t = self._fast(ctx, route, op)
            if t is None:
                t = self._throttle(ctx, route, op)
            if t.items and t.no_budget is None:
                return ctx, route, t
        return ctx, route, None

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

    def _key_flow(self, plan: _Plan, key: str, cost: int, attrs: Mapping[str, Any]) -> _Flow:
        r = plan.rule
        ctx = RequestContext(RequestFacts("", "", None, user=key, user_attrs=attrs), self.policy, self._clock)
        if r.tiers is None:
            wins, names = r.windows, plan.names
        else:
            wins = self._windows(r, ctx)
            names = _names(r.name, wins)
        if not wins:
            return self._deny(ctx, "throttle", self.policy.response.status, math.inf, r.name, [], limit=0, remaining=0)
        items = [(plan.prefix + key, w, cost) for w in wins]
        res = yield _Call("hit", items, [r.on_store_error] * len(items))
        if res.error is not None:
            self._emit("store_error", ctx, r.name, key, detail=repr(res.error))
        return self._verdict(ctx, [(r, key)] * len(items), names, res.outs, items, shadow=r.shadow)

    def reset(self, rule: str, key: str) -> None:
        """Admin/tests: forget every window of ``rule`` for ``key``, the key as events show it
        (``"session=h:..."``) or readable (``"ip=198.51.100.7"``, ``"session=abc"``,
        ``"user=alice"``: hashed here as the policy hashes it). A ban name lifts the ban."""
        self._drive(self._reset_flow(rule, key))

    async def areset(self, rule: str, key: str) -> None:
        await self._adrive(self._reset_flow(rule, key))

    def _reset_flow(self, name: str, key: str) -> _Flow:
        p = self.policy
        key = stored_key(p.settings, key)  # "session=abc" as it is stored ("session=h:..."); see policy.keys
        items: list[Item] = []
        for r in p.rules:
            if r.name == name:
                wins = list(r.windows)
                if r.tiers is not None:
                    for tw in r.tiers.windows.values():
                        wins.extend(w for w in tw if w.id not in {x.id for x in wins})
                items.extend((f"r:{name}:{key}", w, 0) for w in wins)
        for b in p.bans:
            if b.name == name:
                items += [(f"b:{name}:{key}", b.ban, 0), (f"bc:{name}:{key}", b.counter, 0)]
        if not items:
            raise KeyError(f"no rule or ban named {name!r}")
        yield _Call("reset", items, [p.settings.on_store_error] * len(items))
        return None

    def close(self) -> None:
        self.limiter.close()

    async def aclose(self) -> None:
        await self.async_limiter.aclose()

    # -- drivers: the only sync/async difference ------------------------------------------------

    def _drive(self, flow: _Flow) -> Any:
        try:
            call = next(flow)
            while True:
                call = flow.send(self._run(call))
        except StopIteration as stop:
            return stop.value

    async def _adrive(self, flow: _Flow) -> Any:
        try:
            call = next(flow)
            while True:
                call = flow.send(await self._arun(call))
        except StopIteration as stop:
            return stop.value

    def _run(self, call: _Call) -> _Result:
        store = self.store
        try:
            if call.op == "reset":
                for key, w, _ in call.items:
                    store.reset(key, [w])
                outs: list[Outcome] = []
            elif call.op == "hit" and len(call.items) == 1:
                key, w, cost = call.items[0]
                outs = [store.hit1(key, w, cost)]
            else:
                outs = store.apply(call.op, call.items)
        except StoreError as exc:
            return self._fallback(call, exc)
        if self._failing:
            self._failing = False
            log.info("ratewarden: the store answers again")
        return _Result(outs)

    async def _arun(self, call: _Call) -> _Result:
        store = self.store
        try:
            if call.op == "reset":
                for key, w, _ in call.items:
                    if hasattr(store, "areset"):
                        await store.areset(key, [w])
                    else:
                        await asyncio.to_thread(store.reset, key, [w])
                outs: list[Outcome] = []
            elif hasattr(store, "aapply"):
                outs = await store.aapply(call.op, call.items)
            elif getattr(store, "kind", "") == "memory":
                outs = store.apply(call.op, call.items)
            else:
                outs = await asyncio.to_thread(store.apply, call.op, call.items)
        except StoreError as exc:
            return self._fallback(call, exc)
        if self._failing:
            self._failing = False
            log.info("ratewarden: the store answers again")
        return _Result(outs)

    def _fallback(self, call: _Call, exc: BaseException) -> _Result:
        """Outcomes when the store failed, item by item as each rule's ``on_store_error`` says."""
        self.store_errors += 1
        if not self._failing:
            self._failing = True
            log.warning("ratewarden: the store failed (%s); deciding by on_store_error until it answers", exc)
        if call.op == "reset":
            return _Result([], exc)
        local_idx = [i for i, m in enumerate(call.modes) if m == "local"]
        local: dict[int, Outcome] = {}
        if local_idx:
            if self._local is None:  # pragma: no cover - built in __init__ whenever a mode is "local"
                raise RuntimeError("on_store_error='local' without its in-process store")
            outs = self._local.apply(call.op, [call.items[i] for i in local_idx])  # type: ignore[arg-type]
            local = dict(zip(local_idx, outs, strict=True))
        wait = round(self.policy.settings.store_error_retry_after * US)
        result: list[Outcome] = []
        for i, ((_, w, _), mode) in enumerate(zip(call.items, call.modes, strict=True)):
            if i in local:
                result.append(local[i])
            elif mode == "deny" and call.op == "hit":
                result.append((False, 0, wait, wait, "store_error"))
            else:
                result.append((True, w.limit, 0, 0, None))
        return _Result(result, exc)

    # -- the logic, written once ----------------------------------------------------------------

    def _matches(self, match: Any, ctx: RequestContext) -> bool:
        return matches(match, ctx.method, ctx.path, ctx.host if match.hosts else "", ctx.facts.scheme, ctx.norm_path)

    def _applies(self, rule: Rule, ctx: RequestContext) -> bool:
        return self._matches(rule.match, ctx) and not (
            rule.exempt and exempt_path(rule.exempt, ctx.path, ctx.norm_path)
        )

    def _windows(self, rule: Rule, ctx: RequestContext) -> tuple[Window, ...]:
        t = rule.tiers
        if t is None:
            return rule.windows
        v = ctx.attr(t.attr)
        if v is not None and v in t.windows:
            return t.windows[v]
        if t.default is not None:
            return t.windows[t.default]
        return rule.windows

    def _cost(self, rule: Rule, ctx: RequestContext) -> int:
        c = rule.cost
        if c.source == "constant":
            return c.value
        if c.source == "response_header":
            return 0  # check only: admitted while one unit remains; charged in after()
        raw = ctx.header(c.header)
        try:
            n = int(raw.strip()) if raw is not None and len(raw) < 20 else 1
        except ValueError:
            n = 1
        return max(1, n)  # a client cannot send cost 0 to pass for free

    def _safelisted(self, ctx: RequestContext) -> bool:
        sl = self.policy.safelist
        if sl.paths and exempt_path(sl.paths, ctx.path, ctx.norm_path):
            return True
        if sl.secret_header:
            given = ctx.header(sl.secret_header)
            if given is not None and hmac.compare_digest(
                given.encode("utf-8", "surrogateescape"), sl.secret.encode("utf-8", "surrogateescape")
            ):
                return True
        if sl.networks:
            ip = ctx.ip
            if ip is not None and any(ip.version == n.version and ip in n for n in sl.networks):
                return True
        return False

    def _blocklisted(self, ctx: RequestContext) -> bool:
        bl = self.policy.blocklist
        if bl.paths and (path_matches(bl.paths, ctx.path) or path_matches(bl.paths, ctx.norm_path)):
            return True
        if bl.networks:
            ip = ctx.ip
            if ip is not None and any(ip.version == n.version and ip in n for n in bl.networks):
                return True
        return False

    def _route(self, ctx: RequestContext) -> _Route:
        """The rules and bans that apply to this request's method, path, host and scheme (cached)."""
        rk = (ctx.method, ctx.path, ctx.host if self._by_host else "", ctx.facts.scheme if self._by_scheme else "")
        route = self._routes.get(rk)
        if route is not None:
            return route
        p = self.policy
        s = p.settings
        exempt = bool(s.exempt) and exempt_path(s.exempt, ctx.path, ctx.norm_path)
        plans = tuple(pl for pl in self._plans if self._applies(pl.rule, ctx))
        bans = tuple(b for b in p.bans if self._matches(b.match, ctx))
        policy = None
        rate_format = ""
        if all(pl.rule.tiers is None for pl in plans):
            states = [
                PolicyState(name, w.limit, w.period / US, 0, 0.0)
                for pl in plans
                if not pl.rule.shadow
                for name, w in zip(pl.names, pl.rule.windows, strict=True)
            ]
            policy = policy_field(states) if states else None
            rate_format = ", ".join([f'"{st.name}";r=%d;t=%d' for st in states])  # names never hold '%'
        fast = not bans and all(pl.simple for pl in plans)
        names: list[str] = []
        modes: list[str] = []
        parts: tuple[tuple[str, int, float], ...] = ()
        if fast:
            each = [
                (n, w, pl.rule.on_store_error) for pl in plans for n, w in zip(pl.names, pl.rule.windows, strict=True)
            ]
            names = [n for n, _, _ in each]
            modes = [m for _, _, m in each]
            parts = tuple((n, w.limit, w.period / US) for n, w, _ in each)
        route = _Route(exempt, plans, bans, fast, policy, rate_format, names, modes, parts)
        if len(ctx.path) + len(rk[2]) <= ROUTE_KEY_MAX:  # a huge path is matched each time, never kept
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                self._routes.clear()
            self._routes[rk] = route
        return route

    def _lists(self, ctx: RequestContext, quiet: bool) -> Verdict | None:
        """The safelist admits, the blocklist refuses (403); None when neither applies."""
        if self._safelisted(ctx):
            return Verdict(True)
        if self._blocklisted(ctx):
            if not quiet:
                self._emit("block", ctx, None, None, status=403)
            v = self._deny(ctx, "block", 403, math.inf, None, [])
            v.retry_after = 0.0  # no wait will help: no Retry-After, body retry_after null
            return v
        return None

    def _fast(self, ctx: RequestContext, route: _Route, op: str) -> _Throttle | None:
        """:meth:`_throttle` of a fast route (every plan simple, no bans) when every plan has its
        key: only the store items are built per request; the names and modes come from the
        route, the owners are made only for a denial (:meth:`_throttled`). None when a key is
        missing (then :meth:`_throttle` works out which plans count)."""
        items: list[Item] = []
        keys: list[str] = []
        peek = op == "peek"
        for plan in route.plans:
            r = plan.rule
            k = ctx.ip_key() if plan.ip_key else ctx.key_or_fallback(r.key, r.fallback)
            if k is None:
                return None
            keys.append(k)
            skey = plan.prefix + k
            cost = 0 if peek else plan.cost
            for w in r.windows:
                items.append((skey, w, cost))  # type: ignore[arg-type]  # a simple plan's cost is constant
        t = _Throttle()
        t.items = items
        t.keys = keys
        t.names = route.names
        t.modes = route.modes
        return t

    def _throttle(self, ctx: RequestContext, route: _Route, op: str) -> _Throttle:
        """The store items of the route's throttle rules for this request."""
        t = _Throttle()
        items = t.items
        modes = t.modes
        owners = t.owners
        names = t.names
        quiet = op == "peek"
        for plan in route.plans:
            r = plan.rule
            k = ctx.ip_key() if plan.ip_key else ctx.key_or_fallback(r.key, r.fallback)
            if k is None:
                t.complete = False
                continue
            if quiet:
                cost = 0  # a status view: remaining as it is now; allowed if one unit could pass
            else:
                cost = plan.cost if plan.cost is not None else self._cost(r, ctx)
            skey = plan.prefix + k
            if plan.simple:
                mode = r.on_store_error
                for w, name in zip(r.windows, plan.names, strict=True):
                    items.append((skey, w, cost))
                    modes.append(mode)
                    owners.append((r, k))
                    names.append(name)
                continue
            if r.tiers is None:
                wins, wnames = r.windows, plan.names
            else:
                wins = self._windows(r, ctx)
                wnames = _names(r.name, wins)
                t.complete = False
            if not wins:
                if not r.shadow and t.no_budget is None:
                    t.no_budget = (r, k)
                continue
            if r.shadow:
                for w in wins:
                    t.shadow_items.append((skey, w, cost))
                    t.shadow_owners.append((r, k))
                continue
            for w, name in zip(wins, wnames, strict=True):
                items.append((skey, w, cost))
                modes.append(r.on_store_error)
                owners.append((r, k))
                names.append(name)
            if r.cost.source == "response_header":
                t.charges.append((r, k, wins))
        return t

    def _check_flow(self, ctx: RequestContext, route: _Route, op: str) -> _Flow:
        """Every case (bans, shadow rules, after-response costs); :meth:`_begin` has handled the
        exempt paths and the lists."""
        s = self.policy.settings
        quiet = op == "peek"
        # bans that match this request (checked at cost 0 first), then the throttle rules
        items: list[Item] = []
        modes: list[str] = []
        bans: list[tuple[Ban, str]] = []
        ban_items: list[tuple[Ban, str]] = []
        for b in route.bans:
            k = ctx.key_or_fallback(b.key, b.fallback)
            if k is None:
                continue
            bans.append((b, k))
            if not b.shadow:
                items.append((f"b:{b.name}:{k}", b.ban, 0))
                modes.append(s.on_store_error)
                ban_items.append((b, k))
        n_bans = len(items)
        t = self._throttle(ctx, route, op)
        pending = _Pending([], bans, False, ctx) if bans or t.charges else None
        if t.no_budget is not None:
            r, k = t.no_budget
            if not quiet:
                self._emit("throttle", ctx, r.name, k, retry_after=math.inf, status=self.policy.response.status)
            v = self._deny(ctx, "throttle", self.policy.response.status, math.inf, r.name, [], limit=0, remaining=0)
            v.pending = pending
            return v
        res = _Result([])
        if n_bans or t.items:
            res = yield _Call(op, items + t.items, modes + t.modes)
            if res.error is not None and not quiet:
                self._emit("store_error", ctx, None, None, detail=repr(res.error))
        if t.shadow_items and not quiet:
            yield from self._shadow(ctx, t.shadow_items, t.shadow_owners)

        # a ban that holds refuses the request (nothing was consumed: all or nothing)
        for (b, k), o in zip(ban_items, res.outs, strict=False):
            if not o[0]:
                if o[4] == "store_error":
                    return self._unavailable(ctx)
                retry = o[3] / US
                if not quiet:
                    self._emit("banned", ctx, b.name, k, retry_after=retry, status=403)
                assert pending is not None  # a ban matched
                pending.banned = True
                v = self._deny(ctx, "ban", 403, retry, b.name, [])
                v.pending = pending
                return v
        # the store error (if any) is reported above, before the shadow rules' events
        return self._throttled(ctx, route, t, _Result(res.outs[n_bans:]), op, pending)

    def _throttled(
        self, ctx: RequestContext, route: _Route, t: _Throttle, res: _Result, op: str, pending: _Pending | None = None
    ) -> Verdict:
        """The verdict once the store answered for the throttle items of ``t``."""
        quiet = op == "peek"
        outs = res.outs
        if res.error is not None and not quiet:
            self._emit("store_error", ctx, None, None, detail=repr(res.error))
        owners = t.owners
        if t.keys is not None:  # the fast path
            for o in outs:
                if not o[0]:  # a denial: who owns each item
                    owners = [(pl.rule, k) for pl, k in zip(route.plans, t.keys, strict=True) for _ in pl.rule.windows]
                    break
            else:
                if self._draft and route.policy is not None:
                    return self._admitted(route, route.policy, outs)
        return self._verdict(
            ctx,
            owners,
            t.names,
            outs,
            t.items,
            policy=route.policy if t.complete else None,
            rate_format=route.rate_format,
            quiet=quiet,
            pending=pending,
            charges=t.charges,
        )

    def _admitted(self, route: _Route, policy: str, outs: Sequence[Outcome]) -> Verdict:
        """The verdict of the fast path when every window admitted under ``headers = "draft"``:
        :meth:`_verdict`'s admitted branch with each state's name, limit and window from the
        route (the differential tests in tests/engine/test_fast_path.py hold them equal).
        With the three rules of bench/http/policy.toml, ``Engine.check`` went from about
        97,700 to about 80,000 instructions per request (callgrind, bench/http_cost.py's method)."""
        new = _new_tuple
        states: list[PolicyState] = []
        numbers: list[int] = []
        # aligned (one outcome per item); a strict= keyword would cost a dict per call
        for (name, limit, secs), o in zip(route.parts, outs):  # noqa: B905
            left = o[1]
            full = o[2]
            states.append(new(PolicyState, (name, limit, secs, left, full / US, True, 0.0)))
            numbers.append(left if left > 0 else 0)
            numbers.append(-(-full // US) if full > 0 else 0)
        headers = [("RateLimit-Policy", policy), ("RateLimit", route.rate_format % tuple(numbers))]
        return Verdict(True, 200, headers, None, "application/json", 0.0, None, states, None)

    def _verdict(
        self,
        ctx: RequestContext,
        owners: Sequence[tuple[Rule, str]],
        names: Sequence[str],
        outs: Sequence[Outcome],
        items: Sequence[Item],
        *,
        policy: str | None = None,
        rate_format: str = "",
        quiet: bool = False,
        shadow: bool = False,
        pending: _Pending | None = None,
        charges: list[tuple[Rule, str, tuple[Window, ...]]] | None = None,
    ) -> Verdict:
        """The verdict for the throttle windows' outcomes (``owners``/``names``/``outs``/``items``
        aligned); ``policy``: the ``RateLimit-Policy`` value if known already, and then
        ``rate_format``: the ``RateLimit`` value's %-format (two integers per item)."""
        admitted = True
        for o in outs:
            if not o[0]:
                admitted = False
                break
        if admitted:  # the common case: every window admits
            new = _new_tuple
            states: list[PolicyState] = []
            numbers: list[int] = []  # remaining and whole seconds to full, per window
            for name, o, it in zip(names, outs, items, strict=True):
                w = it[1]
                left = o[1]
                full = o[2]
                states.append(new(PolicyState, (name, w.limit, w.period / US, left, full / US, True, 0.0)))
                numbers.append(left if left > 0 else 0)
                numbers.append(-(-full // US) if full > 0 else 0)
            if policy is not None and self._draft:  # draft fields straight from the outcomes' integers
                headers = [("RateLimit-Policy", policy), ("RateLimit", rate_format % tuple(numbers))]
            else:
                headers = self._headers(states, policy)
            if pending is not None and charges:
                pending.charges = charges
            return Verdict(True, 200, headers, None, "application/json", 0.0, None, states, pending)
        states = []
        deciding: tuple[Rule, str, PolicyState] | None = None
        store_denied = False
        for (r, k), name, o, item in zip(owners, names, outs, items, strict=True):
            w = item[1]
            ok = o[0]
            remaining = o[1]
            if ok and item[2]:
                remaining = min(w.limit, remaining + item[2])  # it was not consumed after all
            retry = 0.0 if ok else (math.inf if o[3] == NEVER else o[3] / US)
            st = PolicyState(name, w.limit, w.period / US, remaining, o[2] / US, ok, retry)
            states.append(st)
            if not ok:
                store_denied = store_denied or o[4] == "store_error"
                if deciding is None or retry > deciding[2].retry_after:
                    deciding = (r, k, st)
        headers = self._headers(states, policy)
        assert deciding is not None
        r, k, st = deciding
        status = self.policy.response.status
        if shadow:
            self._emit("shadow", ctx, r.name, k, retry_after=st.retry_after, status=status)
            return Verdict(True, 200, headers, None, decisions=states, pending=pending)
        if store_denied:
            v = self._unavailable(ctx)
            v.pending = pending
            return v
        if not quiet:
            self._emit("throttle", ctx, r.name, k, retry_after=st.retry_after, status=status)
        v = self._deny(
            ctx,
            "throttle",
            status,
            st.retry_after,
            r.name,
            headers,
            limit=st.limit,
            remaining=st.remaining,
            reset_after=st.reset_after,
        )
        v.decisions = states
        v.pending = pending
        return v

    def _headers(self, states: list[PolicyState], policy: str | None) -> list[tuple[str, str]]:
        s = self.policy.settings
        mode = s.headers
        if mode == "draft":
            return rate_limit_headers(mode, states, policy=policy)
        now = self._clock() if s.legacy_reset == "epoch" else 0.0
        return rate_limit_headers(mode, states, now=now, legacy_reset=s.legacy_reset, policy=policy)

    def _shadow(self, ctx: RequestContext, items: list[Item], owners: list[tuple[Rule, str]]) -> _Flow:
        """Shadow rules: their own all-or-nothing call; a would-be denial is an event, never a 429."""
        res = yield _Call("hit", items, [r.on_store_error for r, _ in owners])
        if res.error is not None:
            return None
        denied: dict[str, tuple[str, float]] = {}
        for (r, k), o in zip(owners, res.outs, strict=True):
            if not o[0]:
                retry = math.inf if o[3] == NEVER else o[3] / US
                prev = denied.get(r.name)
                if prev is None or retry > prev[1]:
                    denied[r.name] = (k, retry)
        for name, (k, retry) in denied.items():
            self._emit("shadow", ctx, name, k, retry_after=retry, status=self.policy.response.status)
        return None

    def _after_flow(self, pending: _Pending, verdict: Verdict, status: int, headers: Mapping[str, str]) -> _Flow:
        s = self.policy.settings
        if pending.charges and verdict.allowed:
            lower = {str(k).lower(): v for k, v in headers.items()}
            items: list[Item] = []
            modes: list[str] = []
            for r, k, wins in pending.charges:
                raw = lower.get(r.cost.header)
                try:
                    cost = int(str(raw).strip()) if raw is not None and len(str(raw)) < 20 else 1
                except ValueError:
                    cost = 1
                cost = max(0, cost)
                if cost:
                    for w in wins:
                        items.append((f"r:{r.name}:{k}", w, cost))
                        modes.append(r.on_store_error)
            if items:
                res = yield _Call("charge", items, modes)
                if res.error is not None:
                    self._emit("store_error", pending.ctx, None, None, detail=repr(res.error))
        if pending.banned:
            return None
        for b, k in pending.bans:
            if b.mode == "fail2ban" and status not in b.match.statuses:
                continue
            res = yield _Call("hit", [(f"bc:{b.name}:{k}", b.counter, 1)], [s.on_store_error])
            if res.error is not None:
                self._emit("store_error", pending.ctx, b.name, k, detail=repr(res.error))
                continue
            o = res.outs[0]
            if o[0] and o[1] > 0:
                continue
            retry = b.ban_for_us / US
            if b.shadow:
                self._emit("shadow", pending.ctx, b.name, k, retry_after=retry, status=403, detail="ban")
                yield _Call("reset", [(f"bc:{b.name}:{k}", b.counter, 0)], [s.on_store_error])
                continue
            yield _Call("charge", [(f"b:{b.name}:{k}", b.ban, 1)], [s.on_store_error])
            yield _Call("reset", [(f"bc:{b.name}:{k}", b.counter, 0)], [s.on_store_error])
            self._emit("ban", pending.ctx, b.name, k, retry_after=retry, status=403)
        return None

    # -- verdicts -------------------------------------------------------------------------------

    def _deny(
        self,
        ctx: RequestContext,
        kind: DenialKind,
        status: int,
        retry: float,
        rule: str | None,
        headers: list[tuple[str, str]],
        *,
        limit: int | None = None,
        remaining: int | None = None,
        reset_after: float | None = None,
    ) -> Verdict:
        whole = retry_after_seconds(retry)
        hs = list(headers)
        if whole is not None:
            hs.append(("Retry-After", str(whole)))
        body = denial_body(
            self.policy.response,
            kind,
            retry_after=retry,
            rule=rule,
            limit=limit,
            remaining=remaining,
            reset_after=reset_after,
            now=self._clock(),
        )
        return Verdict(False, status, hs, body, retry_after=retry, rule=rule)

    def _too_large(self, ctx: RequestContext, rule: Rule, quiet: bool) -> Verdict:
        """413 for a body over ``body_limit`` under ``on_oversize_body = "deny"``: the key cannot
        be read, and no wait helps (no Retry-After), so the client must send a smaller body."""
        if not quiet:
            self._emit("throttle", ctx, rule.name, None, status=413, detail="body over body_limit")
        v = self._deny(ctx, "too_large", 413, math.inf, rule.name, [], limit=self.policy.settings.body_limit)
        v.retry_after = 0.0
        return v

    def _unavailable(self, ctx: RequestContext) -> Verdict:
        s = self.policy.settings
        retry = s.store_error_retry_after
        return self._deny(ctx, "unavailable", s.store_error_status, retry, None, [])

    def _internal_error(self, facts: RequestFacts, exc: BaseException) -> Verdict:
        log.exception("ratewarden: internal error while checking a request; on_store_error decides")
        with contextlib.suppress(Exception):
            self.events.emit(
                Event("error", None, None, facts.client_ip, str(facts.method), str(facts.path), None, detail=repr(exc))
            )
        if self.policy.settings.on_store_error == "deny":
            s = self.policy.settings
            return Verdict(False, s.store_error_status, [("Retry-After", "1")], b'{"error": "unavailable"}')
        return Verdict(True)

    def _emit(
        self,
        kind: EventKind,
        ctx: RequestContext,
        rule: str | None,
        key: str | None,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        detail: str | None = None,
    ) -> None:
        f = ctx.facts
        self.events.emit(
            Event(
                kind,
                rule,
                key,
                ctx.client_ip,
                ctx.method,
                ctx.path,
                f.user if isinstance(f.user, str) else (None if f.user is None else str(f.user)),
                None if retry_after is None or math.isinf(retry_after) else retry_after,
                status,
                detail,
            )
        )


def _kind(value: object) -> str:
    """How an error names a value of the wrong type: its type, and the value when short."""
    text = repr(value)
    return f"{type(value).__name__} {text}" if len(text) <= 40 else type(value).__name__


def _secs(w: Window) -> str:
    return f"{w.period / US:g}"
