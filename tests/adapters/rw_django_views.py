"""Views and urls for the Django request-hardening tests (``ROOT_URLCONF`` of those tests)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from ratewarden.django import limit


def configure() -> None:
    """Minimal settings when no other test module configured Django first; the tests then
    override ``ROOT_URLCONF`` and ``MIDDLEWARE`` for themselves."""
    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="request-hardening-tests-only",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF="rw_django_views",
        MIDDLEWARE=["ratewarden.django.RateLimitMiddleware"],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()


def user_posts(request: HttpRequest, id: str) -> HttpResponse:
    return JsonResponse({"handler": "user-posts", "id": id})


def posts(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"handler": "posts"})


def echo(request: HttpRequest) -> HttpResponse:
    """What a Django view acts on: ``request.GET``/``POST``/``COOKIES`` and ``json.loads(request.body)``."""
    data: Any = None
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        with contextlib.suppress(ValueError):
            data = json.loads(request.body) if request.body else None
    return JsonResponse(
        {
            "json": data.get("email") if isinstance(data, dict) else data,
            "form": request.POST.get("email"),
            "query": request.GET.get("email"),
            "cookie": request.COOKIES.get("sid"),
            "header": request.headers.get("X-Api-Key"),
        }
    )


@limit("10/hour", key="ip", name="route-report")
def report(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"handler": "report"})


urlpatterns = [
    path("users/<str:id>/posts", user_posts),
    path("posts", posts),
    path("echo", echo),
    path("report", report),
]
