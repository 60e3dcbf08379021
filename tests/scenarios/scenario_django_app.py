"""A tiny Django project for the scenario tests: settings, a stand-in auth middleware, views, urls."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from ratewarden.django import limit


class DemoUser:
    """Shaped like django.contrib.auth's User for what ratewarden reads."""

    is_authenticated = True

    def __init__(self, pk: int, role: str) -> None:
        self.pk = pk
        self.role = role


class AnonymousUser:
    is_authenticated = False
    pk = None


def demo_auth(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        raw = request.headers.get("X-Demo-User", "")
        pk, _, role = raw.partition(":")
        request.user = DemoUser(int(pk), role) if pk.isdigit() else AnonymousUser()  # type: ignore[assignment]
        return get_response(request)

    return middleware


def register(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"registered": True}, status=201)


def login(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"token": "t"})


def profile(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True})


def _email(request: HttpRequest) -> Any:
    try:
        return json.loads(request.body).get("email")
    except ValueError:
        return None


@limit("3/hour", key=_email)
def reset_password(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"sent": True, "echo": json.loads(request.body)})


@limit("2/minute", key="user")
def export(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"export": "queued"})


urlpatterns = [
    path("auth/register", register),
    path("auth/login", login),
    path("auth/reset-password", reset_password),
    path("profile", profile),
    path("export", export),
]


def configure() -> None:
    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="scenario-tests-only",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF="scenario_django_app",
        MIDDLEWARE=["scenario_django_app.demo_auth", "ratewarden.django.RateLimitMiddleware"],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()
