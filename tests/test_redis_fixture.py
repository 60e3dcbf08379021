"""The one Redis fixture: without a reachable Redis the ``redis`` tests skip with one reason,
and under ``CI=true`` they fail instead (CI never passes by skipping them).

Runs pytest in a subprocess on a tiny test file next to copies of ``tests/conftest.py`` and
``tests/rw_redis.py``, pointed at a port where nothing listens."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent

TEST_FILE = """
import pytest

@pytest.mark.redis
def test_needs_redis():
    pass

def test_needs_nothing():
    pass
"""

INI = """[pytest]
addopts = -p no:cacheprovider -ra
markers =
    redis: needs the test Redis
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    for name in ("conftest.py", "rw_redis.py"):
        shutil.copy(TESTS / name, tmp_path / name)
    (tmp_path / "test_x.py").write_text(TEST_FILE)
    (tmp_path / "pytest.ini").write_text(INI)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["RATEWARDEN_TEST_REDIS_URL"] = f"redis://127.0.0.1:{closed_port()}"
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the tiny run needs no plugin (and starts faster)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_redis_the_redis_tests_skip_with_one_reason(tmp_path: Path) -> None:
    r = run(tmp_path, None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 1 skipped" in r.stdout
    assert "no Redis answers at redis://127.0.0.1:" in r.stdout
    assert "RATEWARDEN_TEST_REDIS_URL" in r.stdout


def test_under_ci_the_redis_tests_fail_without_redis(tmp_path: Path) -> None:
    r = run(tmp_path, "true")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 passed, 1 error" in r.stdout
    assert "CI=true and the Redis tests cannot run: no Redis answers at" in r.stdout
