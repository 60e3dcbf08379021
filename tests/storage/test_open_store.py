"""Storage URLs: each store takes the options it understands and refuses the rest clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratewarden import ConfigError, Limiter


def test_max_keys_is_refused_for_stores_it_does_not_bound(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_keys applies to memory:// only"):
        Limiter(f"sqlite:///{tmp_path}/x.db", max_keys=10)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memory://?max_keys=lots", "max_keys must be an integer"),
        ("memory://?maxkeys=5", "unknown option 'maxkeys'"),
        ("memory://?max_keys=0", "max_keys must be a positive integer"),
        ("mysql://localhost/db", "unknown storage 'mysql://localhost/db'"),
        ("postgres://localhost/db?pool_size=3", 'bad PostgreSQL URL .*invalid URI query parameter: "pool_size"'),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Limiter(url)


def test_memory_url_sets_the_bound() -> None:
    assert Limiter("memory://?max_keys=123").store.max_keys == 123
    assert Limiter("memory://", max_keys=7).store.max_keys == 7
