"""The PostgreSQL store: ``postgresql://user@host:5432/db`` (also ``postgres://``).

``open_postgres(url, **options)`` is what :func:`ratewarden.storage.open_store` calls.
Options, as keywords or in the URL's query string (the URL wins):

* ``schema`` (default ``public``) and ``table_prefix`` (default ``ratewarden_``): where the
  store's table, version table and functions live (created on first use, or by
  ``ratewarden migrate URL``);
* ``connect_timeout`` (seconds, default 2) and ``statement_timeout`` (seconds, default 1);
* ``pool_min`` / ``pool_max`` (connections per pool, default 1 / 10);
* ``breaker`` (seconds to fail fast after a connection failure, default 0.5; 0 disables);
* ``sweep_interval`` (seconds between bounded deletes of expired rows, default 1; 0 disables)
  and ``sweep_batch`` (rows per delete, default 1000);
* ``synchronous_commit`` (``off`` by default: a crash of the database may lose its last
  fraction of a second of decisions, never corrupt them; ``on`` to wait for the WAL flush);
* ``key_prefix`` (the limiter's, default ``rw:``).

Every other query parameter goes to libpq (``sslmode``, ``application_name`` -- by default
``ratewarden`` --, ``password``...).
See ``docs/postgres.md`` for the design, the failure behaviour and the figures.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ratewarden.errors import ConfigError
from ratewarden.storage.postgres._codec import db_key, decode_state
from ratewarden.storage.postgres._schema import SCHEMA_VERSION, Names
from ratewarden.storage.postgres._store import PostgresStore

__all__ = ["SCHEMA_VERSION", "PostgresStore", "db_key", "decode_state", "migrate_url", "open_postgres"]

_OURS: dict[str, type] = {
    "schema": str,
    "table_prefix": str,
    "connect_timeout": float,
    "statement_timeout": float,
    "pool_min": int,
    "pool_max": int,
    "breaker": float,
    "sweep_interval": float,
    "sweep_batch": int,
    "synchronous_commit": str,
    "key_prefix": str,
}
_POSITIVE = {"connect_timeout", "statement_timeout", "pool_max", "sweep_batch"}
_NON_NEGATIVE = {"breaker", "sweep_interval", "pool_min"}
_COMMIT = {"on", "off", "local", "remote_write", "remote_apply"}


def _option(name: str, value: Any, url: str) -> Any:
    kind = _OURS[name]
    v: Any
    try:
        v = value if kind is str and isinstance(value, str) else kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a {kind.__name__} in {url!r}, not {value!r}") from None
    if kind is str and not isinstance(v, str):
        raise ConfigError(f"{name} must be a string in {url!r}, not {value!r}")
    if name in _POSITIVE and v <= 0:
        raise ConfigError(f"{name} must be positive in {url!r}, not {value!r}")
    if name in _NON_NEGATIVE and v < 0:
        raise ConfigError(f"{name} must not be negative in {url!r}, not {value!r}")
    if name == "synchronous_commit" and v not in _COMMIT:
        raise ConfigError(f"synchronous_commit must be one of {sorted(_COMMIT)} in {url!r}, not {value!r}")
    return v


def _redact(url: str) -> str:
    """The URL without its password (it ends up in logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{parts.username or ''}:***@{netloc}", parts.path, parts.query, ""))


def _split(url: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(libpq conninfo URL without our options, our options checked)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ConfigError(f"not a PostgreSQL URL: {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    for k, v in query:
        if k in _OURS:
            options[k] = v
    unknown = set(options) - set(_OURS)
    if unknown:
        raise ConfigError(f"unknown PostgreSQL store option {sorted(unknown)[0]!r} (takes {', '.join(sorted(_OURS))})")
    opts = {k: _option(k, v, _redact(url)) for k, v in options.items()}
    rest = [(k, v) for k, v in query if k not in _OURS]
    if not any(k == "application_name" for k, _ in rest):
        rest.append(("application_name", "ratewarden"))  # how an operator finds the store's sessions
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    try:
        from psycopg.conninfo import conninfo_to_dict

        conninfo_to_dict(conninfo)
    except Exception as exc:  # psycopg.ProgrammingError: a malformed URL
        raise ConfigError(f"bad PostgreSQL URL {_redact(url)!r}: {exc}") from None
    return conninfo, opts


def open_postgres(url: str, **options: Any) -> PostgresStore:
    """Open a PostgreSQL store; nothing connects until the first call (failures are StoreErrors then)."""
    test_now = options.pop("_test_now", None)
    clock = options.pop("clock", None)
    conninfo, opts = _split(url, options)
    names = Names(opts.pop("schema", "public"), opts.pop("table_prefix", "ratewarden_"))
    if opts.get("pool_min", 1) > opts.get("pool_max", 10):
        raise ConfigError(f"pool_min must not exceed pool_max in {_redact(url)!r}")
    return PostgresStore(conninfo, names=names, clock=clock, _test_now=test_now, url=_redact(url), **opts)


def migrate_url(url: str, **options: Any) -> tuple[int, int]:
    """Install or upgrade the store's objects now: (version found, version installed)."""
    import psycopg

    from ratewarden.errors import StoreError
    from ratewarden.storage.postgres._schema import migrate

    conninfo, opts = _split(url, options)
    names = Names(opts.get("schema", "public"), opts.get("table_prefix", "ratewarden_"))
    timeout = max(1, round(opts.get("connect_timeout", 2.0)))
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=timeout) as conn:
            return migrate(conn, names), SCHEMA_VERSION
    except psycopg.Error as exc:
        raise StoreError(f"postgresql store {_redact(url)}: {type(exc).__name__}: {exc}") from exc
