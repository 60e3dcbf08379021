"""A live dashboard of what the limiter decides: per rule, per second, over the last minutes.

``Dashboard`` keeps, in bounded memory:

* per rule and per second over the last ``minutes`` minutes: requests admitted and denied. The
  denials come from the engine's events (``attach(engine)`` subscribes to them: ``throttle``,
  ``banned``, ``block``, ``shadow`` would-be denials are counted apart); the admissions from
  :meth:`Dashboard.observe` (give it each :class:`~ratewarden.engine.Verdict`: the decision
  service does, and :func:`observed` wraps an engine so that every adapter does);
* the most denied keys (``rule: key``), at most ``top_keys`` counters kept (the Space-Saving
  method: a new key takes the place of the smallest counter, so a flood of distinct keys costs
  nothing more, and every key denied more often than 1/``top_keys`` of all denials is listed);
* the store's health: the last store error and when, and an optional ``health`` callable;
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
import json
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from ratewarden.engine import Engine, RequestFacts, Verdict
from ratewarden.errors import ConfigError
from ratewarden.events import Event
from ratewarden.static import read_static

__all__ = ["Dashboard", "observed"]

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
        health: Callable[[], bool] | None = None,
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
        self.started = clock()
        if engine is not None:
            self.attach(engine)

    # -- feeding ----------------------------------------------------------------------------

    def attach(self, engine: Engine) -> Callable[[], None]:
        """Count ``engine``'s denials (its events) and list its rules even before traffic.
        Returns a function that detaches it (e.g. when a reload replaces the engine)."""
        unsubscribe = engine.events.subscribe(self.on_event)
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

    def record_decision(self, rule: str, allowed: bool) -> None:
        """Count one decision by hand (a caller that has no Verdict, e.g. a metrics hook)."""
        self._count(rule, 0 if allowed else 1)

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

    def state(self, top: int = 10) -> dict[str, Any]:
        """Everything the page shows, as JSON-ready data."""
        now = int(self.clock())
        start = now - self.seconds + 1
        healthy = True
        detail = None
        if self.health is not None:
            try:
                healthy = bool(self.health())
            except Exception as exc:
                healthy, detail = False, repr(exc)[:200]
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

    async def stream(self, is_disconnected: Callable[[], Any] | None = None) -> AsyncIterator[str]:
        """Server-sent events: the state now, then again every ``interval`` seconds."""
        yield "retry: 2000\n\n"
        while True:
            yield f"event: state\ndata: {json.dumps(self.state(), separators=(',', ':'))}\n\n"
            await asyncio.sleep(self.interval)
            if is_disconnected is not None and await is_disconnected():
                return

    # -- HTTP ------------------------------------------------------------------------------

    def routes(self, admin_token: str | None = None, *, path: str = "/dashboard") -> list[Any]:
        """Starlette routes for the page, its script and style, the state and the events."""
        from starlette.requests import Request
        from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
        from starlette.routing import Route

        if admin_token is not None and (not isinstance(admin_token, str) or len(admin_token) < 8):
            raise ConfigError("admin_token must be a string of at least 8 characters")
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
                return JSONResponse({"error": "unauthorized", "message": text}, status_code=401)
            if not hmac.compare_digest(given.encode(), token):
                return JSONResponse({"error": "forbidden", "message": "wrong admin token"}, status_code=403)
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
            return JSONResponse(self.state(top), headers=_NO_STORE)

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


def observed(engine: Engine, dashboard: Dashboard) -> Engine:
    """``engine``, attached to ``dashboard``, with every verdict it gives shown there too (so the
    admissions of any adapter that uses it are counted). Returns the same engine object."""
    dashboard.attach(engine)
    check, acheck = engine.check, engine.acheck

    def counted_check(facts: RequestFacts) -> Verdict:
        verdict = check(facts)
        dashboard.observe(verdict)
        return verdict

    async def counted_acheck(facts: RequestFacts) -> Verdict:
        verdict = await acheck(facts)
        dashboard.observe(verdict)
        return verdict

    engine.check = counted_check  # type: ignore[method-assign]
    engine.acheck = counted_acheck  # type: ignore[method-assign]
    return engine
