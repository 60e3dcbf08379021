"""The decision service: ``ratewarden serve``.

Any stack asks a running ratewarden for decisions over HTTP (``POST /v1/check``) or Envoy's
gRPC rate limit protocol, from the same policy file the embedded middleware reads. See
docs/service.md. Needs the ``service`` extra (``pip install 'ratewarden[service]'``).
"""

from __future__ import annotations

from ratewarden.service.app import create_app
from ratewarden.service.state import Service

__all__ = ["Service", "create_app"]
