"""Django: ``ratewarden.django.RateLimitMiddleware`` and the ``@limit(...)`` view decorator.

Settings: ``RATEWARDEN_POLICY`` (a policy file path, or anything ``Engine`` accepts) and
``RATEWARDEN_OPTIONS`` (a dict of ``Engine`` keywords: ``storage``, ``clock``, ``on_event``...).
One engine per distinct pair of settings is built and shared by every middleware instance and
decorator (Django builds a new middleware chain per handler, e.g. per test ``Client``), and the
cache is dropped when those settings change (``override_settings``).

Add the middleware after ``AuthenticationMiddleware`` so that ``request.user`` is set: an
authenticated user is the ``user`` identity (its ``pk``; ``role``/``plan``/``tier`` attributes
are passed to tiers). The body is read only when a rule needs it: ``request.body`` when
``Content-Length`` is within the engine's cap (Django keeps it for the view), else the rule
sees a truncated, empty body and nothing is read.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse

from ratewarden._adapters import (
    USER_ATTRS,
    LazyHeaders,
    RouteLimit,
    build_engine,
    environ_facts,
    identity_of,
    join_headers,
    safe_text,
)
from ratewarden.http.headers import RATE_LIMIT_FIELDS, merge_headers
from ratewarden.policy.keys import FieldReader

if TYPE_CHECKING:
    from ratewarden.engine import Engine, RequestFacts, Verdict

__all__ = ["RateLimitMiddleware", "get_engine", "limit", "request_facts"]

F = TypeVar("F", bound=Callable[..., Any])
_lock = threading.Lock()
_engines: dict[tuple[int, int], Engine] = {}
_ATTR = "_ratewarden_facts"


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("RATEWARDEN_"):
        with _lock:
            _engines.clear()


setting_changed.connect(_settings_changed)


def _options() -> dict[str, Any]:
    return dict(getattr(settings, "RATEWARDEN_OPTIONS", None) or {})


def get_engine() -> Engine | None:
    """The engine of ``RATEWARDEN_POLICY`` (None when the setting is absent)."""
    policy = getattr(settings, "RATEWARDEN_POLICY", None)
    if policy is None:
        return None
    options = getattr(settings, "RATEWARDEN_OPTIONS", None)
    cache_key = (id(policy), id(options))
    with _lock:
        engine = _engines.get(cache_key)
        if engine is None:
            engine = _engines[cache_key] = build_engine(policy, None, _options())
        return engine


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class _DjangoReader(FieldReader):
    """``cookie:``/``query:``/``body:`` keys read by Django itself, so the key is what the view
    gets: ``request.COOKIES``, ``request.GET`` and ``request.POST`` (the *last* of repeated
    fields, as ``QueryDict[...]``; multipart forms too), and ``json.loads(request.body)`` for any
    other body, whatever its ``Content-Type`` (what a Django view does)."""

    def __init__(self, request: HttpRequest) -> None:
        super().__init__("last")
        self.request = request

    def cookies(self, facts: RequestFacts) -> Mapping[str, Any]:
        return self.request.COOKIES

    def query(self, facts: RequestFacts) -> Mapping[str, Any]:
        return self.request.GET.dict()

    def body(self, facts: RequestFacts) -> tuple[str, Any] | None:
        if facts.body is None or facts.body_truncated:
            return None
        if self.request.content_type in _FORM_TYPES:
            return "form", self.request.POST.dict()
        return "json", json.loads(self.request.body)


def request_facts(request: HttpRequest, user_attrs: Iterable[str] = USER_ATTRS) -> RequestFacts:
    """RequestFacts of a Django request (cached on the request for the decorators)."""
    facts: RequestFacts | None = getattr(request, _ATTR, None)
    if facts is None:
        user = getattr(request, "user", None)
        if user is not None and not getattr(user, "is_authenticated", False):
            user = None
        facts = environ_facts(request.META, _identity(user, user_attrs), user_attrs, path=safe_text(request.path))
        facts.reader = _DjangoReader(request)
        setattr(request, _ATTR, facts)
    return facts


def _identity(user: object, user_attrs: Iterable[str]) -> object:
    """A Django user as a mapping ``identity_of`` understands: ``pk`` is the identity."""
    if user is None:
        return None
    ident, attrs = identity_of(user, user_attrs)
    pk = getattr(user, "pk", None)
    return {**attrs, "id": pk if pk is not None else ident}


def _read_body(request: HttpRequest, facts: RequestFacts, limit: int) -> None:
    if facts.body is not None:
        return
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if 0 <= length <= limit:
        try:
            facts.body = request.body  # Django keeps it: the view reads the same bytes
            return
        except RequestDataTooBig:
            pass
    facts.body, facts.body_truncated = b"", True


def _denial(verdict: Verdict) -> HttpResponse:
    response = HttpResponse(verdict.body or b"", status=verdict.status, content_type=verdict.content_type)
    _add_headers(response, verdict.headers)
    return response


def _add_headers(response: HttpResponse, headers: Iterable[tuple[str, str]]) -> None:
    """Add the verdict's headers; rate-limit fields a per-view limit already set are merged with
    them (one legacy value, the most restrictive; the draft lists joined)."""
    existing = [(name, str(response[name])) for name in RATE_LIMIT_FIELDS if response.has_header(name)]
    if existing:
        for name, _ in existing:
            del response[name]
        headers = merge_headers(existing, list(headers))
    seen: set[str] = set()
    for name, value in headers:
        lower = name.lower()
        if lower in seen:  # Django keeps one value per name: join repeats as a list
            response[name] = f"{response[name]}, {value}"
        else:
            response[name] = value
            seen.add(lower)


def _check(engine: Engine, request: HttpRequest, facts: RequestFacts) -> tuple[Verdict | None, HttpResponse | None]:
    if engine.exempt(facts):
        return None, None
    if engine.needs_body(facts):
        _read_body(request, facts, engine.body_limit)
    verdict = engine.check(facts)
    if verdict.allowed:
        return verdict, None
    engine.after(facts, verdict, verdict.status, join_headers(verdict.headers))  # Allow2Ban counts denials
    return verdict, _denial(verdict)


def _finish(engine: Engine, facts: RequestFacts, verdict: Verdict, response: HttpResponse) -> HttpResponse:
    _add_headers(response, verdict.headers)
    if verdict.pending is not None:  # else after() is a no-op (engine contract)
        engine.after(facts, verdict, response.status_code, LazyHeaders(lambda: join_headers(response.items())))
    return response


class RateLimitMiddleware:
    """Django middleware over the ``RATEWARDEN_POLICY`` engine (synchronous)."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        engine = get_engine()
        if engine is None:
            return self.get_response(request)
        facts = request_facts(request)
        verdict, denial = _check(engine, request, facts)
        if denial is not None:
            return denial
        response = self.get_response(request)
        if verdict is None:
            return response
        return _finish(engine, facts, verdict, response)


def limit(
    limits: str | Iterable[str],
    key: str | Callable[[HttpRequest], object] = "ip",
    *,
    name: str | None = None,
    algorithm: str | None = None,
    cost: int = 1,
    shadow: bool = False,
) -> Callable[[F], F]:
    """``@limit("5/minute", key="user")`` on a view function (``key``: a key spec or a callable
    ``request -> str | None``). The rule shares the ``RATEWARDEN_POLICY`` engine's settings and
    store when there is one, else uses ``RATEWARDEN_OPTIONS``."""

    def decorate(view: F) -> F:
        routes: dict[int, tuple[Engine | None, RouteLimit]] = {}
        lock = threading.Lock()

        def get_route() -> RouteLimit:
            base = get_engine()
            with lock:
                entry = routes.get(id(base))
                if entry is None or entry[0] is not base:
                    route = RouteLimit(
                        limits,
                        key,
                        name=name or f"{view.__module__}.{view.__name__}",
                        algorithm=algorithm,
                        cost=cost,
                        shadow=shadow,
                        base=base,
                        **({} if base is not None else _options()),
                    )
                    entry = routes[id(base)] = (base, route)
                return entry[1]

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            route = get_route()
            facts = route.prepare(request_facts(request), request)
            verdict, denial = _check(route.engine, request, facts)
            if denial is not None:
                return denial
            response = view(request, *args, **kwargs)
            if verdict is None or not isinstance(response, HttpResponse):
                return response
            return _finish(route.engine, facts, verdict, response)

        return wrapper  # type: ignore[return-value]

    return decorate
