"""The Flask extension: ``RateWarden(app, policy="ratewarden.toml")`` and ``@rw.limit(...)``.

The app-wide policy runs in a ``before_request`` hook (a denial short-circuits the view) and an
``after_request`` hook (adds the rate-limit headers, then calls ``Engine.after`` with the status
and headers, for bans and costs charged after the response). ``@rw.limit("5/minute", key="ip")``
adds one rule to one view through the same engine machinery (keys, headers, response bodies).

The identity is ``g.user`` (``user_attr=`` names another attribute of ``g``; ``user_getter=``
takes a callable returning the user, e.g. ``lambda: flask_login.current_user``). Hooks run in
registration order, so register the hook that sets ``g.user`` before calling ``init_app``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, Response, g, request

from ratewarden._adapters import (
    USER_ATTRS,
    LazyHeaders,
    RouteLimit,
    build_engine,
    environ_facts,
    join_headers,
    read_body,
)
from ratewarden.engine import RequestFacts
from ratewarden.http.headers import merge_headers
from ratewarden.policy.keys import FieldReader

if TYPE_CHECKING:
    from ratewarden.engine import Engine, Verdict

__all__ = ["RateWarden"]

F = TypeVar("F", bound=Callable[..., Any])
_STATE = "ratewarden.state"  # kept in the WSGI environ: a plain dict, cheaper than flask.g


class _WerkzeugReader(FieldReader):
    """``cookie:``/``query:``/``body:`` keys read by Flask itself, so the key is what the view
    gets: ``request.cookies``, ``request.args`` and ``request.form`` (Werkzeug: the *first* of
    repeated fields; multipart forms too), and JSON through the app's own JSON provider,
    whatever the ``Content-Type`` (``get_json(force=True)``: a view calling ``get_json()``
    answers 415 to a text/plain body, one with ``force=True`` reads it: counting it is right
    either way)."""

    def __init__(self) -> None:
        super().__init__("first")

    def cookies(self, facts: RequestFacts) -> Mapping[str, Any]:
        return request.cookies.to_dict()

    def query(self, facts: RequestFacts) -> Mapping[str, Any]:
        return request.args.to_dict()

    def body(self, facts: RequestFacts) -> tuple[str, Any] | None:
        if facts.body is None or facts.body_truncated:
            return None
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            return "form", request.form.to_dict()
        data = request.get_json(force=True, silent=True, cache=False)
        return None if data is None else ("json", data)


_READER = _WerkzeugReader()


def _denial(verdict: Verdict) -> Response:
    return Response(
        verdict.body or b"", status=verdict.status, headers=list(verdict.headers), content_type=verdict.content_type
    )


class _State:
    __slots__ = ("checked", "denied", "facts")

    def __init__(self, facts: RequestFacts) -> None:
        self.facts = facts
        self.checked: list[tuple[Engine, RequestFacts, Verdict]] = []
        self.denied = False


class RateWarden:
    """``RateWarden(app, policy="ratewarden.toml", **options)`` or ``RateWarden(policy=...)`` then
    ``init_app(app)``. Without a policy (and no ``RATEWARDEN_POLICY`` in ``app.config``) only the
    ``@limit`` decorators apply. ``options``: ``engine=`` a shared Engine; every other keyword
    (``clock=``, ``storage=``, ``on_event=``...) goes to ``Engine(policy, ...)`` and to the
    engines of the ``@limit`` decorators.
    """

    def __init__(
        self,
        app: Flask | None = None,
        policy: Any = None,
        *,
        engine: Engine | None = None,
        user_attr: str = "user",
        user_getter: Callable[[], object] | None = None,
        user_attrs: Iterable[str] = USER_ATTRS,
        **options: Any,
    ) -> None:
        self.policy = policy
        self.engine: Engine | None = engine
        self.options = options
        self.user_attr = user_attr
        self.user_getter = user_getter
        self.user_attrs = tuple(user_attrs)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        policy = self.policy if self.policy is not None else app.config.get("RATEWARDEN_POLICY")
        if self.engine is None and policy is not None:
            self.engine = build_engine(policy, None, self.options)
        app.extensions["ratewarden"] = self
        app.before_request(self._before_request)
        app.after_request(self._after_request)

    # -- facts ------------------------------------------------------------------------------

    def _user(self) -> object:
        if self.user_getter is not None:
            return self.user_getter()
        return g.get(self.user_attr)

    def _state(self) -> _State:
        environ = request.environ
        state: _State | None = environ.get(_STATE)
        if state is None:
            facts = environ_facts(environ, self._user(), self.user_attrs)
            facts.reader = _READER
            state = environ[_STATE] = _State(facts)
        return state

    @staticmethod
    def _body(facts: RequestFacts, limit: int) -> None:
        if facts.body is not None:
            return
        length = request.content_length
        if length is not None and length <= limit:
            facts.body = request.get_data(cache=True)  # the view reads the cached bytes
            facts.body_truncated = False
        elif "stream" not in request.__dict__:  # werkzeug has not opened the body yet
            read_body(facts, request.environ, limit)
        else:
            facts.body, facts.body_truncated = b"", True

    def _check(self, engine: Engine, facts: RequestFacts, state: _State | None = None) -> Response | None:
        if state is None:
            state = self._state()
        if engine.exempt(facts):
            return None
        if engine.needs_body(facts):
            self._body(facts, engine.body_limit)
        verdict = engine.check(facts)
        state.checked.append((engine, facts, verdict))
        if verdict.allowed:
            return None
        state.denied = True
        return _denial(verdict)

    # -- hooks -------------------------------------------------------------------------------

    def _before_request(self) -> Response | None:
        if self.engine is None:
            return None
        state = self._state()  # one look-up of Flask's request proxy, not two
        return self._check(self.engine, state.facts, state)

    def _after_request(self, response: Response) -> Response:
        state: _State | None = request.environ.get(_STATE)
        if state is None:
            return response
        checked = state.checked
        if not state.denied:
            if len(checked) == 1:  # the usual case: one check's fields are one set already
                merged = checked[0][2].headers
            else:
                merged = []
                for _engine, _facts, verdict in checked:  # the policy's and the view's: one set
                    merged = merge_headers(merged, verdict.headers)
            for name, value in merged:
                response.headers.add(name, value)
        headers: LazyHeaders | None = None
        for engine, facts, verdict in checked:  # denials too: Allow2Ban counts every request
            if verdict.pending is not None:  # else after() is a no-op (engine contract)
                if headers is None:
                    headers = LazyHeaders(lambda: join_headers(response.headers.items()))
                engine.after(facts, verdict, response.status_code, headers)
        checked.clear()
        return response

    # -- per-view limits ---------------------------------------------------------------------

    def limit(
        self,
        limits: str | Iterable[str],
        key: str | Callable[[Any], object] = "ip",
        *,
        name: str | None = None,
        algorithm: str | None = None,
        cost: int = 1,
        shadow: bool = False,
    ) -> Callable[[F], F]:
        """``@rw.limit("5/minute", key="ip")`` on a view. ``key``: a key spec string or a
        callable ``request -> str | None`` (None falls back to the client ip)."""

        def decorate(view: F) -> F:
            route: RouteLimit | None = None
            lock = threading.Lock()

            def get_route() -> RouteLimit:  # built at the first request: init_app may come later
                nonlocal route
                with lock:
                    if route is None:
                        route = RouteLimit(
                            limits,
                            key,
                            name=name or view.__name__,
                            algorithm=algorithm,
                            cost=cost,
                            shadow=shadow,
                            base=self.engine,
                            **self.options,
                        )
                    return route

            if self.engine is not None:
                get_route()  # the usual RateWarden(app, policy) order: a bad rule fails here, not per request

            @functools.wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                route = get_route()
                facts = route.prepare(self._state().facts, request)
                denied = self._check(route.engine, facts)
                if denied is not None:
                    return denied
                return view(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate
