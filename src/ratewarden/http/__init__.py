"""Framework-free HTTP pieces: rate-limit header fields and denial bodies."""

from __future__ import annotations

from ratewarden.http.headers import PolicyState, rate_limit_headers, retry_after_seconds
from ratewarden.http.responses import denial_body

__all__ = ["PolicyState", "denial_body", "rate_limit_headers", "retry_after_seconds"]
