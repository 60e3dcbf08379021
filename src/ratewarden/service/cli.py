"""``ratewarden serve``: its flags, each with an environment variable of the same meaning.

Imports nothing of the service at import time, so ``ratewarden --help`` works without the
``service`` extra.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["add_parser", "run"]

#: flag -> environment variable (the flag wins)
ENV = {
    "policy": "RATEWARDEN_POLICY",
    "envoy_config": "RATEWARDEN_ENVOY_CONFIG",
    "algorithm": "RATEWARDEN_ALGORITHM",
    "storage": "RATEWARDEN_STORAGE",
    "host": "RATEWARDEN_HOST",
    "port": "RATEWARDEN_PORT",
    "grpc_port": "RATEWARDEN_GRPC_PORT",
    "workers": "RATEWARDEN_WORKERS",
    "watch": "RATEWARDEN_WATCH",
    "log_format": "RATEWARDEN_LOG_FORMAT",
    "log_level": "RATEWARDEN_LOG_LEVEL",
    "max_body": "RATEWARDEN_MAX_BODY",
    "graceful_timeout": "RATEWARDEN_GRACEFUL_TIMEOUT",
}


def add_parser(sub: Any) -> None:
    s = sub.add_parser(
        "serve",
        help="run the decision service (HTTP and Envoy gRPC)",
        description="Serve decisions over HTTP (POST /v1/check) and Envoy's RLS gRPC. "
        "Every flag can also be set by the environment variable named in its help.",
    )
    src = s.add_mutually_exclusive_group()
    src.add_argument("--policy", help="the policy file (RATEWARDEN_POLICY)")
    src.add_argument(
        "--envoy-config", help="an envoyproxy/ratelimit YAML file or directory instead (RATEWARDEN_ENVOY_CONFIG)"
    )
    s.add_argument(
        "--algorithm", help="algorithm for --envoy-config rules (default fixed-window; RATEWARDEN_ALGORITHM)"
    )
    s.add_argument("--storage", help="store URL, beats the file's (RATEWARDEN_STORAGE)")
    s.add_argument("--host", help="listen address (default 127.0.0.1; RATEWARDEN_HOST)")
    s.add_argument("--port", type=int, help="HTTP port (default 8787; RATEWARDEN_PORT)")
    s.add_argument("--grpc-port", help="Envoy RLS gRPC port, or 'off' (default 8081; RATEWARDEN_GRPC_PORT)")
    s.add_argument("--workers", type=int, help="worker processes (default: 1 on memory, else one per core)")
    s.add_argument(
        "--split-memory",
        action="store_true",
        help="allow several workers on the memory store (each keeps its own counters)",
    )
    s.add_argument(
        "--watch", type=float, help="also reload when the file changes, checked every N s (RATEWARDEN_WATCH)"
    )
    s.add_argument("--log-format", choices=("json", "text"), help="default json (RATEWARDEN_LOG_FORMAT)")
    s.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="default info")
    s.add_argument("--access-log", action="store_true", help="log every HTTP request")
    s.add_argument("--max-body", type=int, help="largest request body in bytes (default 65536)")
    s.add_argument("--graceful-timeout", type=float, help="seconds to drain in-flight requests on stop (default 10)")


def _pick(args: argparse.Namespace, name: str, env: Mapping[str, str], default: Any, kind: Any = str) -> Any:
    v = getattr(args, name, None)
    if v is not None:
        return v
    raw = env.get(ENV[name]) if name in ENV else None
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SystemExit(f"error: {ENV[name]}={raw!r} is not a valid {kind.__name__}") from None


def options(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Any:
    from ratewarden.service.server import ServeOptions

    e = os.environ if env is None else env
    policy = _pick(args, "policy", e, None)
    envoy = _pick(args, "envoy_config", e, None)
    if args.policy is None and args.envoy_config is not None:
        policy = None
    elif args.envoy_config is None and args.policy is not None:
        envoy = None
    if (policy is None) == (envoy is None):
        raise SystemExit(
            "error: give --policy FILE or --envoy-config FILE (or RATEWARDEN_POLICY / RATEWARDEN_ENVOY_CONFIG)"
        )
    grpc = str(_pick(args, "grpc_port", e, "8081"))
    if grpc.lower() in ("off", "none", "-"):
        grpc_port = None
    else:
        try:
            grpc_port = int(grpc)
        except ValueError:
            raise SystemExit(f"error: --grpc-port must be a port number or 'off', not {grpc!r}") from None
    return ServeOptions(
        policy=policy,
        envoy_config=envoy,
        algorithm=_pick(args, "algorithm", e, "fixed-window"),
        storage=_pick(args, "storage", e, None),
        host=_pick(args, "host", e, "127.0.0.1"),
        port=_pick(args, "port", e, 8787, int),
        grpc_port=grpc_port,
        workers=_pick(args, "workers", e, None, int),
        split_memory=bool(args.split_memory) or e.get("RATEWARDEN_SPLIT_MEMORY", "") in ("1", "true", "yes"),
        watch=_pick(args, "watch", e, None, float),
        log_format=_pick(args, "log_format", e, "json"),
        log_level=_pick(args, "log_level", e, "info"),
        access_log=bool(args.access_log),
        max_body=_pick(args, "max_body", e, 64 * 1024, int),
        graceful_timeout=_pick(args, "graceful_timeout", e, 10.0, float),
        admin_token=e.get("RATEWARDEN_ADMIN_TOKEN") or None,
    )


def run(args: argparse.Namespace) -> int:
    try:
        from ratewarden.service.server import serve
    except ImportError as exc:  # pragma: no cover - without the extra
        print(
            f"error: the service needs the 'service' extra (pip install 'ratewarden[service]'): {exc}", file=sys.stderr
        )
        return 2
    return serve(options(args))
