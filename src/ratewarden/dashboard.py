"""A live dashboard of what the limiter decides: per rule, per second, over the last minutes.

``Dashboard`` keeps, in bounded memory:

* per rule and per second over the last ``minutes`` minutes: requests admitted and denied
  (``shadow`` would-be denials apart). Fed one of two ways, never both for one engine:

  - by whoever decides: :meth:`Dashboard.record_decision` once per decision. The decision
    service does so from the same function that counts its Prometheus decisions, and attaches
    its engine with ``attach(engine, decisions=False)`` (store errors and denied keys only);
  - from an embedded engine: ``attach(engine)`` counts the denials from its events
    (``throttle``, ``banned``, ``block``, ``shadow``) and :meth:`Dashboard.observe` the
    admissions; :class:`ObservedEngine` is an engine that does both for every adapter;
* the most denied keys (``rule: key``, from the engine's denial events), at most
  ``top_keys`` counters kept (the Space-Saving method: a new key takes the place of the
  smallest counter, so a flood of distinct keys costs nothing more, and every key denied
  more often than 1/``top_keys`` of all denials is listed);
* the store's health: the last store error and when, and an optional ``health`` callable
  (sync or async: the service gives the check behind its ``/healthz``);
* the reload history: :meth:`Dashboard.record_reload` (``ok``, ``message``), the last 50.

``dashboard.routes(admin_token=None)`` gives Starlette routes: ``/dashboard`` (the page),
``/dashboard/state`` (JSON), ``/dashboard/events`` (server-sent events, one state a second)
and the page's script and style. With a token, every route wants it: ``Authorization: Bearer
TOKEN``, or ``?token=TOKEN`` on the page (which then sets an HttpOnly cookie for the rest):
401 without one, 403 with a wrong one. The page and script ship in the package: no build
step, nothing loaded from elsewhere.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ratewarden.engine import Engine, RequestFacts, Verdict
from ratewarden.errors import ConfigError
from ratewarden.events import Event
from ratewarden.static import read_static

__all__ = ["Dashboard", "ObservedEngine"]

_DENIALS = {"throttle": "denied", "banned": "denied", "block": "denied", "shadow": "shadow"}
_MAX_RULES = 256  # names tracked; beyond, counted under "(other)"
_MULTI = re.compile(r"^(?P<rule>.+)-[0-9.e+]+s$")  # header policy name of one of several windows
_COOKIE = "rw_dashboard"


class _TopKeys:
    """The Space-Saving heavy-hitter counter: at most ``size`` keys, each with an upper bound."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.counts: dict[str, int] = {}

    def add(self, key: str) -> None:
        counts = self.counts
        if key in counts:
            counts[key] += 1
        elif len(counts) < self.size:
            counts[key] = 1
        else:
            smallest = min(counts, key=counts.__getitem__)
            floor = counts.pop(smallest)
            counts[key] = floor + 1

    def top(self, n: int) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


class Dashboard:
    """``Dashboard(engine=None, *, minutes=5, top_keys=100, clock=time.time, health=None)``."""

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        minutes: int = 5,
        top_keys: int = 100,
        clock: Callable[[], float] = time.time,
        health: Callable[[], bool | Awaitable[bool]] | None = None,
        interval: float = 1.0,
    ) -> None:
        if not isinstance(minutes, int) or not 1 <= minutes <= 60:
            raise ConfigError(f"minutes must be an integer from 1 to 60, not {minutes!r}")
        if not isinstance(top_keys, int) or top_keys < 1:
            raise ConfigError(f"top_keys must be a positive integer, not {top_keys!r}")
        self.seconds = minutes * 60
        self.clock = clock
        self.health = health
        self.interval = interval
        self._lock = threading.Lock()
        #: second -> rule -> [admitted, denied, shadow]
        self._series: dict[int, dict[str, list[int]]] = {}
        self._totals: dict[str, list[int]] = {}
        self._keys = _TopKeys(top_keys)
        self._store_errors = 0
        self._last_store_error: tuple[float, str] | None = None
        self._reloads: deque[dict[str, Any]] = deque(maxlen=50)
        self._rules: list[str] = []
        self._unsubscribe: list[Callable[[], None]] = []
        self._ending = False
        self.started = clock()
        if engine is not None:
            self.attach(engine)

    # -- feeding ----------------------------------------------------------------------------

    def attach(self, engine: Engine, *, decisions: bool = True) -> Callable[[], None]:
        """Follow ``engine``'s events (store errors, denied keys; and, unless ``decisions=False``,
        count its denials) and list its rules even before traffic. ``decisions=False`` is for a
        caller that records every decision itself (:meth:`record_decision`). Returns a function
        that detaches it (e.g. when a reload replaces the engine)."""
        callback = self.on_event if decisions else self._on_event_uncounted
        unsubscribe = engine.events.subscribe(callback)
        self._unsubscribe.append(unsubscribe)
        with self._lock:
            for r in engine.policy.rules:
                if r.name not in self._rules:
                    self._rules.append(r.name)
        return unsubscribe

    def close(self) -> None:
        """Stop listening to every attached engine."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def on_event(self, event: Event) -> None:
        """An engine event: a store error, or a denial (counted, and its key noted)."""
        self._event(event, count=True)

    def _on_event_uncounted(self, event: Event) -> None:
        self._event(event, count=False)

    def _event(self, event: Event, *, count: bool) -> None:
        kind = event.kind
        if kind == "store_error":
            with self._lock:
                self._store_errors += 1
                self._last_store_error = (self.clock(), event.detail or "store error")
            return
        column = _DENIALS.get(kind)
        if column is None:
            return
        rule = event.rule or f"({kind})"
        if count:
            self._count(rule, 1 if column == "denied" else 2)
        if column == "denied":
            with self._lock:
                self._keys.add(f"{rule}: {event.key if event.key is not None else event.client_ip}")

    def observe(self, verdict: Verdict) -> None:
        """Count an admitted verdict once for each rule that applied (denials come from events)."""
        if not verdict.allowed:
            return
        seen: set[str] = set()
        for state in verdict.decisions:
            name = getattr(state, "name", None)
            if not isinstance(name, str):
                continue
            rule = self._rule_of(name)
            if rule not in seen:
                seen.add(rule)
                self._count(rule, 0)

    def record_decision(self, rule: str, allowed: bool, *, shadow: bool = False, denied_key: str | None = None) -> None:
        """Count one decision of ``rule``: admitted, denied, or (``shadow=True``) a shadow
        rule's would-be denial; ``denied_key`` goes to the top denied keys (give it only when
        no engine event names the key). The decision service calls it where it counts its metrics."""
        self._count(rule, 2 if shadow else 0 if allowed else 1)
        if denied_key is not None and not allowed and not shadow:
            with self._lock:
                self._keys.add(f"{rule}: {denied_key}")

    def record_reload(self, ok: bool, message: str) -> None:
        """Note a policy reload: ``ok`` and what happened (``file:line: reason`` when it failed)."""
        with self._lock:
            self._reloads.appendleft({"at": self.clock(), "ok": bool(ok), "message": str(message)[:500]})

    def _rule_of(self, name: str) -> str:
        if name in self._rules:
            return name
        m = _MULTI.match(name)
        if m and m.group("rule") in self._rules:
            return m.group("rule")
        return name

    def _count(self, rule: str, column: int) -> None:
        now = int(self.clock())
        with self._lock:
            if rule not in self._rules:
                if len(self._rules) >= _MAX_RULES:
                    rule = "(other)"
                if rule not in self._rules:
                    self._rules.append(rule)
            second = self._series.get(now)
            if second is None:
                second = self._series[now] = {}
                self._prune(now)
            row = second.get(rule)
            if row is None:
                row = second[rule] = [0, 0, 0]
            row[column] += 1
            total = self._totals.get(rule)
            if total is None:
                total = self._totals[rule] = [0, 0, 0]
            total[column] += 1

    def _prune(self, now: int) -> None:
        oldest = now - self.seconds
        for second in [s for s in self._series if s <= oldest]:
            del self._series[second]

    # -- reading ----------------------------------------------------------------------------

    async def astate(self, top: int = 10) -> dict[str, Any]:
        """:meth:`state`, with an async ``health`` check awaited (what the routes serve)."""
        return self.state(top, health=await self._ahealth())

    async def _ahealth(self) -> tuple[bool, str | None]:
        if self.health is None:
            return True, None
        try:
            result = self.health()
            if inspect.isawaitable(result):
                result = await result
            return bool(result), None
        except Exception as exc:
            return False, repr(exc)[:200]

    def _health(self) -> tuple[bool, str | None]:
        if self.health is None:
            return True, None
        try:
            result = self.health()
        except Exception as exc:
            return False, repr(exc)[:200]
        if inspect.isawaitable(result):  # an async check needs astate(): not known here
            close = getattr(result, "close", None)
            if close is not None:
                close()
            return True, "health not checked (async check: see the served state)"
        return bool(result), None

    def state(self, top: int = 10, *, health: tuple[bool, str | None] | None = None) -> dict[str, Any]:
        """Everything the page shows, as JSON-ready data (``health``: an already made check)."""
        now = int(self.clock())
        start = now - self.seconds + 1
        healthy, detail = health if health is not None else self._health()
        with self._lock:
            self._prune(now)
            last = self._last_store_error
            if last is not None and self.clock() - last[0] < 30:
                healthy = False
                detail = detail or last[1][:200]
            rules: dict[str, dict[str, Any]] = {}
            for name in self._rules:
                admitted = [0] * self.seconds
                denied = [0] * self.seconds
                shadow = [0] * self.seconds
                for second, row in self._series.items():
                    cell = row.get(name)
                    if cell is not None and start <= second <= now:
                        i = second - start
                        admitted[i], denied[i], shadow[i] = cell
                last_minute = slice(self.seconds - 60, None)
                total = self._totals.get(name, [0, 0, 0])
                rules[name] = {
                    "admitted": admitted,
                    "denied": denied,
                    "shadow": shadow,
                    "last_minute": {
                        "decisions": sum(admitted[last_minute]) + sum(denied[last_minute]),
                        "denied": sum(denied[last_minute]),
                    },
                    "window": {"decisions": sum(admitted) + sum(denied), "denied": sum(denied)},
                    "total": {"admitted": total[0], "denied": total[1], "shadow": total[2]},
                }
            return {
                "now": now,
                "start": start,
                "seconds": self.seconds,
                "rules": rules,
                "top_denied": [{"key": k, "denied": n} for k, n in self._keys.top(top)],
                "store": {
                    "healthy": healthy,
                    "errors": self._store_errors,
                    "last_error": None if last is None else {"at": last[0], "detail": last[1][:200]},
                    "detail": detail,
                },
                "reloads": list(self._reloads),
                "uptime": max(0.0, self.clock() - self.started),
            }

    def end_streams(self) -> None:
        """End every event stream at its next tick (the server is stopping: an open page must
        not hold the graceful shutdown until its timeout). Safe to call from a signal handler."""
        self._ending = True

    async def stream(self, is_disconnected: Callable[[], Any] | None = None) -> AsyncIterator[str]:
        """Server-sent events: the state now, then again every ``interval`` seconds, until the
        client leaves or :meth:`end_streams`."""
        yield "retry: 2000\n\n"
        while not self._ending:
            yield f"event: state\ndata: {json.dumps(await self.astate(), separators=(',', ':'))}\n\n"
            await asyncio.sleep(self.interval)
            if is_disconnected is not None and await is_disconnected():
                return

    # -- HTTP ------------------------------------------------------------------------------

    def routes(
        self, admin_token: str | None = None, *, path: str = "/dashboard", min_token_length: int = 8
    ) -> list[Any]:
        """Starlette routes for the page, its script and style, the state and the events.
        ``min_token_length``: shorter tokens are a ConfigError (the service, which takes its
        operator's RATEWARDEN_ADMIN_TOKEN as it is, passes 1)."""
        from starlette.requests import Request
        from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
        from starlette.routing import Route

        if admin_token is not None and (not isinstance(admin_token, str) or len(admin_token) < min_token_length):
            raise ConfigError(f"admin_token must be a string of at least {min_token_length} characters")
        token = admin_token.encode() if admin_token else None

        def refused(request: Request, page: bool = False) -> Response | None:
            if token is None:
                return None
            given = None
            auth = request.headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                given = auth[7:].strip()
            given = given or request.query_params.get("token") or request.cookies.get(_COOKIE)
            if not given:
                text = "the dashboard needs the admin token: Authorization: Bearer TOKEN, or ?token=TOKEN"
                if page:
                    return HTMLResponse(f"<!doctype html><title>401</title><p>{text}</p>", status_code=401)
                return JSONResponse(
                    {"error": text, "field": "authorization"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
            if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token):
                return JSONResponse({"error": "wrong admin token", "field": "authorization"}, status_code=403)
            return None

        async def page(request: Request) -> Response:
            no = refused(request, page=True)
            if no is not None:
                return no
            html = read_static("dashboard.html").replace("{{base}}", path)
            response = HTMLResponse(html, headers=_NO_STORE)
            if token is not None and request.query_params.get("token"):
                response.set_cookie(_COOKIE, admin_token or "", httponly=True, samesite="strict", path=path)
            return response

        async def state(request: Request) -> Response:
            no = refused(request)
            if no is not None:
                return no
            try:
                top = min(100, max(1, int(request.query_params.get("top", "10"))))
            except ValueError:
                return JSONResponse({"error": "bad_request", "field": "top"}, status_code=400)
            return JSONResponse(await self.astate(top), headers=_NO_STORE)

        async def events(request: Request) -> Response:
            no = refused(request)
            if no is not None:
                return no
            return StreamingResponse(
                self.stream(request.is_disconnected),
                media_type="text/event-stream",
                headers={**_NO_STORE, "X-Accel-Buffering": "no"},
            )

        def asset(name: str, media_type: str) -> Callable[[Request], Any]:
            async def serve(request: Request) -> Response:
                no = refused(request)
                if no is not None:
                    return no
                return Response(read_static(name), media_type=media_type)

            return serve

        return [
            Route(path, page, methods=["GET"]),
            Route(f"{path}/state", state, methods=["GET"]),
            Route(f"{path}/events", events, methods=["GET"]),
            Route(f"{path}/dashboard.js", asset("dashboard.js", "text/javascript"), methods=["GET"]),
            Route(f"{path}/dashboard.css", asset("dashboard.css", "text/css"), methods=["GET"]),
        ]


_NO_STORE = {"Cache-Control": "no-store"}


class ObservedEngine(Engine):
    """An :class:`~ratewarden.engine.Engine` whose every request verdict is shown on
    ``dashboard`` (its denials through its events, its admissions through :meth:`Dashboard.observe`),
    so the admissions of any adapter that uses it are counted: ``ObservedEngine(policy, dashboard=d)``.
    """

    def __init__(self, *args: Any, dashboard: Dashboard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dashboard = dashboard
        dashboard.attach(self)

    def check(self, facts: RequestFacts) -> Verdict:
        verdict = super().check(facts)
        self.dashboard.observe(verdict)
        return verdict

    async def acheck(self, facts: RequestFacts) -> Verdict:
        verdict = await super().acheck(facts)
        self.dashboard.observe(verdict)
        return verdict
