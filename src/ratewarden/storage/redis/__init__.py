"""The Redis store: ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``, ``redis+sentinel://``.

``open_redis(url, **options)`` is what :func:`ratewarden.storage.open_store` calls. Options,
as keywords or in the URL's query string (the URL wins): ``key_prefix`` (default ``"rw:"``),
``timeout`` (seconds, socket and connect, default 0.25), ``breaker`` (seconds to fail fast
after a connection failure, default 0.5; 0 disables), ``max_key_length`` (longer keys are
hashed, default 200), ``denial_cache`` (how many denied requests are answered in process until
their retry_after, without a round trip; default 0: off, see docs/redis.md). Every other
query parameter goes to redis-py (e.g. ``password``).

* ``redis://[:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path.sock?db=N``
* ``redis+cluster://host:port`` (any node; the others are discovered)
* ``redis+sentinel://host:port[,host:port...]/service_name[/db]``

See ``docs/redis.md`` for the key layout, the failure behaviour and the figures.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ratewarden.errors import ConfigError
from ratewarden.storage.redis._lua import SCRIPT, SHA, Codec, decode_state, read_state
from ratewarden.storage.redis._store import ClientFactory, RedisStore

__all__ = ["SCRIPT", "SHA", "Codec", "RedisStore", "decode_state", "open_redis", "read_state"]

_OURS = {"key_prefix": str, "timeout": float, "breaker": float, "max_key_length": int, "denial_cache": int}


def _option(name: str, value: Any, url: str) -> Any:
    kind = _OURS[name]
    try:
        v = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a {kind.__name__} in {url!r}, not {value!r}") from None
    if name == "denial_cache" and v < 0:
        raise ConfigError(f"denial_cache must be a number of entries >= 0 (0: off) in {url!r}, not {value!r}")
    if name in ("timeout", "breaker") and (v < 0 or (name == "timeout" and v == 0)):
        raise ConfigError(f"{name} must be positive in {url!r}, not {value!r}")
    return v


def _hostport(part: str, url: str, default: int) -> tuple[str, int]:
    host, _, port = part.rpartition(":") if ":" in part else (part, "", str(default))
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise ConfigError(f"bad port {port!r} in {url!r}") from None


def open_redis(url: str, **options: Any) -> RedisStore:
    """Open a Redis store; nothing connects until the first call (failures are StoreErrors then)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = parse_qsl(parts.query, keep_blank_values=True)
    passthrough = [(k, v) for k, v in query if k not in _OURS]
    for k, v in query:
        if k in _OURS:
            options[k] = v
    test_now = options.pop("_test_now", None)
    clock = options.pop("clock", None)
    unknown = set(options) - set(_OURS)
    if unknown:
        raise ConfigError(f"unknown Redis store option {sorted(unknown)[0]!r} (takes {', '.join(sorted(_OURS))})")
    opts = {k: _option(k, v, url) for k, v in options.items()}
    clean = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(passthrough), ""))
    if scheme == "unix":  # urlunsplit drops the "//" of an empty netloc
        clean = f"unix://{parts.netloc}{parts.path}" + (f"?{urlencode(passthrough)}" if passthrough else "")
    factory: ClientFactory
    cluster = False
    if scheme in ("redis", "rediss", "unix"):
        from redis.connection import parse_url

        try:
            parse_url(clean)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            raise ConfigError(f"bad Redis URL {_redact(url)!r}: {exc}") from None

        def factory(sync: bool, kw: dict[str, Any]) -> Any:
            if sync:
                import redis

                return redis.Redis.from_url(clean, **kw)
            import redis.asyncio

            return redis.asyncio.Redis.from_url(clean, **kw)

    elif scheme == "redis+cluster":
        cluster = True
        plain = urlunsplit(("redis", parts.netloc, "", urlencode(passthrough), ""))
        from redis.connection import parse_url

        try:
            parse_url(plain)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            raise ConfigError(f"bad Redis URL {_redact(url)!r}: {exc}") from None

        def factory(sync: bool, kw: dict[str, Any]) -> Any:
            if sync:
                from redis.cluster import RedisCluster

                return RedisCluster.from_url(plain, **kw)
            from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

            return AsyncRedisCluster.from_url(plain, **kw)

    elif scheme == "redis+sentinel":
        segments = [s for s in parts.path.split("/") if s]
        if not segments:
            raise ConfigError(f"{url!r} needs a service name: redis+sentinel://host:port/service_name[/db]")
        service = segments[0]
        db = int(segments[1]) if len(segments) > 1 and segments[1].isdigit() else 0
        hosts = [_hostport(h.rpartition("@")[2], url, 26379) for h in parts.netloc.split(",") if h]
        extra: dict[str, Any] = dict(passthrough)
        if parts.password:
            extra.setdefault("password", parts.password)

        def factory(sync: bool, kw: dict[str, Any]) -> Any:
            small = {k: kw[k] for k in ("socket_timeout", "socket_connect_timeout")}
            options = {**extra, **kw, "db": db}
            if sync:
                from redis.sentinel import Sentinel

                sentinel: Any = Sentinel(hosts, sentinel_kwargs=small)  # type: ignore[no-untyped-call]
            else:
                from redis.asyncio.sentinel import Sentinel as AsyncSentinel

                sentinel = AsyncSentinel(hosts, sentinel_kwargs=small)  # type: ignore[no-untyped-call]
            client = sentinel.master_for(service, **options)
            client.rw_also_close = list(sentinel.sentinels)  # RedisStore closes these with the client
            return client

    else:
        raise ConfigError(f"not a Redis URL: {url!r}")
    return RedisStore(factory, cluster=cluster, clock=clock, _test_now=test_now, url=_redact(url), **opts)


def _redact(url: str) -> str:
    """The URL without its password (it ends up in logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{parts.username or ''}:***@{netloc}", parts.path, parts.query, ""))
