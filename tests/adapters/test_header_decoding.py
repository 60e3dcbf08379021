"""Request headers decoded with the bounded name caches of the adapters: the same mapping as
decoding every line, whatever the case of the names, their type, repeats and cache state."""

from __future__ import annotations

from ratewarden._adapters import environ as environ_module
from ratewarden._adapters import scope as scope_module
from ratewarden._adapters.environ import environ_headers
from ratewarden._adapters.scope import request_headers


def test_names_are_lower_cased_once_and_then_from_the_cache() -> None:
    raw = [(b"X-Client-Id", b"c1"), (b"host", b"example.com"), (bytearray(b"X-Other"), bytearray(b"\xe9"))]
    for _ in range(2):  # decoded, then from the cache: the same
        assert request_headers(raw) == {"x-client-id": "c1", "host": "example.com", "x-other": "\xe9"}
    assert scope_module._NAMES[b"X-Client-Id"] == "x-client-id"


def test_a_repeated_header_keeps_its_first_line_and_list_headers_join() -> None:
    raw = [(b"x-api-key", b"a"), (b"X-Api-Key", b"b")]
    raw += [(b"x-forwarded-for", b"1.1.1.1"), (b"X-Forwarded-For", b"2.2.2.2")]
    assert request_headers(raw) == {"x-api-key": "a", "x-forwarded-for": "1.1.1.1, 2.2.2.2"}


def test_the_name_cache_is_bounded() -> None:
    for i in range(scope_module._NAMES_MAX + 50):
        assert request_headers([(f"x-h{i}".encode(), b"v")]) == {f"x-h{i}": "v"}
    assert len(scope_module._NAMES) <= scope_module._NAMES_MAX


def test_environ_keys_that_name_no_header_are_skipped_every_time() -> None:
    env = {"REQUEST_METHOD": "GET", "HTTP_X_CLIENT_ID": "c1", "CONTENT_TYPE": "", "CONTENT_LENGTH": "3"}
    for _ in range(2):
        assert environ_headers(env) == {"x-client-id": "c1", "content-length": "3"}
    env["CONTENT_TYPE"] = "application/json"  # counted once not empty (never cached as skipped)
    env["HTTP_CONTENT_TYPE"] = "text/plain"
    assert environ_headers(env) == {
        "x-client-id": "c1",
        "content-type": "application/json, text/plain",
        "content-length": "3",
    }
    assert environ_module._HEADER_NAMES["REQUEST_METHOD"] is environ_module._SKIP


def test_the_environ_name_cache_is_bounded() -> None:
    for i in range(600):
        assert environ_headers({f"HTTP_X_H{i}": "v", f"OTHER_{i}": "w"}) == {f"x-h{i}": "v"}
    assert len(environ_module._HEADER_NAMES) <= 512
