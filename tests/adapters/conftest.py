"""Adapters' tests: the recording engine importable, Starlette's TestClient imported quietly.

Starlette 1.x warns (an error under ``filterwarnings = error``) when its TestClient runs on httpx
rather than httpx2; the client works the same, so the import is done once here with that one
deprecation silenced.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    import starlette.testclient  # noqa: F401
