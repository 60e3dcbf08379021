"""The client's names and keywords are a contract: they change only on purpose."""

from __future__ import annotations

import inspect

import ratewarden.client
from ratewarden.client import AsyncRetryTransport, RetryAdapter, RetryTransport


def test_exported_names() -> None:
    assert set(ratewarden.client.__all__) == {
        "AsyncRetryTransport",
        "RateLimitItem",
        "RetryAdapter",
        "RetryPolicy",
        "RetryTransport",
        "parse_rate_limit",
        "parse_retry_after",
    }
    for name in ratewarden.client.__all__:
        assert getattr(ratewarden.client, name) is not None


def test_the_contract_signatures() -> None:
    for cls in (RetryTransport, AsyncRetryTransport):
        params = inspect.signature(cls).parameters
        first = next(iter(params.values()))
        assert first.name == "transport" and first.default is None
        for name, default in {"max_retries": 3, "max_wait": 60.0, "retry_unsafe": False}.items():
            assert params[name].kind == inspect.Parameter.KEYWORD_ONLY, name
            assert params[name].default == default, name
    params = list(inspect.signature(RetryAdapter).parameters.values())
    assert [(p.name, p.default) for p in params[:2]] == [("max_retries", 3), ("max_wait", 60.0)]


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        ratewarden.client.Nope  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "Nope" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("no AttributeError")
