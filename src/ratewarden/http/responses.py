"""Denial bodies (docs/design.md#http-behaviour), shaped by the policy's ``[response]`` table.

``[response] body`` maps each output field to a variable: ``code``, ``message``,
``retry_after`` (whole seconds, as in ``Retry-After``; ``null`` when the request can never
pass), ``retry_after_exact`` (float seconds), ``rule``, ``limit``, ``remaining``, ``reset``
(ISO 8601 UTC time when the deciding window is full again), ``reset_after`` (whole seconds).
So both ``{"error": "rate_limited", "retry_after": 17}`` (a minimal shape) and
``{"error": "RATE_LIMIT_EXCEEDED", "cooldownSeconds": 17, "resetTime": "...", ...}`` (an Express app's shape) are
configuration, not code.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Literal

from ratewarden.http.headers import ceil_time, retry_after_seconds
from ratewarden.policy.model import ResponseConfig

__all__ = ["DenialKind", "denial_body", "iso_time"]

DenialKind = Literal["throttle", "ban", "block", "unavailable", "too_large"]

#: a body over ``body_limit`` under a rule with ``on_oversize_body = "deny"`` (HTTP 413)
TOO_LARGE = ("body_too_large", "The request body is larger than the {limit} bytes the rate limiter reads.")


def iso_time(epoch: float) -> str:
    """``epoch`` rounded up to a whole second, as ISO 8601 UTC; a time within a millisecond of a
    whole second is that second (``now + reset_after`` carries float error: midnight must not
    print as ``00:00:01``)."""
    try:
        return datetime.fromtimestamp(ceil_time(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "9999-12-31T23:59:59Z"


def denial_body(
    cfg: ResponseConfig,
    kind: DenialKind,
    *,
    retry_after: float,
    rule: str | None,
    limit: int | None = None,
    remaining: int | None = None,
    reset_after: float | None = None,
    now: float = 0.0,
) -> bytes:
    code, message = {
        "throttle": (cfg.code, cfg.message),
        "ban": (cfg.ban_code, cfg.ban_message),
        "block": (cfg.block_code, cfg.block_message),
        "unavailable": (cfg.unavailable_code, cfg.unavailable_message),
        "too_large": TOO_LARGE,
    }[kind]
    whole = retry_after_seconds(retry_after)
    if reset_after is None or math.isinf(reset_after):
        reset_after = retry_after if whole is not None else None
    message = (
        message.replace("{retry_after}", "?" if whole is None else str(whole))
        .replace("{rule}", rule or "")
        .replace("{limit}", "" if limit is None else str(limit))
    )
    values: dict[str, object] = {
        "code": code,
        "message": message,
        "retry_after": whole,
        "retry_after_exact": None if whole is None else round(retry_after, 6),
        "rule": rule,
        "limit": limit,
        "remaining": None if remaining is None else max(0, remaining),
        "reset": None if reset_after is None else iso_time(now + reset_after),
        "reset_after": None if reset_after is None else max(0, math.ceil(reset_after)),
    }
    return json.dumps({field: values[var] for field, var in cfg.body.items()}).encode()
