"""The adapters' public names change only on purpose (docs/design.md#the-python-api: the adapter entry points)."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "ratewarden.asgi": {
        "LazyHeaders",
        "RateLimitMiddleware",
        "RouteLimit",
        "build_engine",
        "identity_of",
        "join_headers",
        "rule_name",
        "scope_facts",
        "scope_user",
    },
    "ratewarden.wsgi": {"RateLimitMiddleware", "denial_status_line", "environ_facts", "read_body"},
    "ratewarden.flask": {"RateWarden"},
    "ratewarden.django": {"RateLimitMiddleware", "get_engine", "limit", "request_facts"},
    "ratewarden.fastapi": {"RateLimit", "RateLimitExceeded", "RateLimitMiddleware", "install", "request_facts"},
}


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_exported_names(module: str) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == EXPECTED[module]
    for name in mod.__all__:
        assert getattr(mod, name) is not None


def test_the_contract_signatures() -> None:
    import inspect

    from ratewarden.asgi import RateLimitMiddleware
    from ratewarden.flask import RateWarden
    from ratewarden.wsgi import RateLimitMiddleware as WSGIMiddleware

    for cls in (RateLimitMiddleware, WSGIMiddleware):
        params = list(inspect.signature(cls).parameters)
        assert params[:2] == ["app", "policy"]
        assert inspect.signature(cls).parameters["policy"].default == "ratewarden.toml"
    assert list(inspect.signature(RateWarden).parameters)[:2] == ["app", "policy"]
    assert callable(RateWarden.init_app) and callable(RateWarden.limit)
