"""The adapters share through ``ratewarden._adapters`` and never import each other, and every name
that was importable from an adapter before the move still is, as the same object."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

ADAPTERS = ["ratewarden.asgi", "ratewarden.wsgi", "ratewarden.flask", "ratewarden.django", "ratewarden.fastapi"]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_importing_an_adapter_loads_no_other_adapter(adapter: str) -> None:
    code = (
        "import sys, importlib\n"
        f"importlib.import_module({adapter!r})\n"
        f"print(' '.join(m for m in {ADAPTERS!r} if m in sys.modules and m != {adapter!r}))\n"
    )
    if adapter == "ratewarden.django":  # django.conf needs settings before the adapter is used, not imported
        code = "import django.conf; django.conf.settings.configure()\n" + code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_fastapi_middleware_is_the_asgi_middleware() -> None:
    from ratewarden import asgi, fastapi

    assert fastapi.RateLimitMiddleware is asgi.RateLimitMiddleware


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            "ratewarden.asgi",
            [
                "USER_ATTRS",
                "LazyHeaders",
                "RateLimitMiddleware",
                "RouteLimit",
                "build_engine",
                "identity_of",
                "join_headers",
                "request_headers",
                "rule_name",
                "safe_text",
                "scope_facts",
                "scope_path",
                "scope_user",
            ],
        ),
        ("ratewarden.wsgi", ["environ_facts", "environ_headers", "read_body"]),
        ("ratewarden.fastapi", ["RateLimitMiddleware"]),
    ],
)
def test_names_from_before_the_move_are_the_shared_ones(module: str, names: list[str]) -> None:
    mod = importlib.import_module(module)
    shared = importlib.import_module("ratewarden._adapters")
    for name in names:
        assert getattr(mod, name) is getattr(shared, name), name
