"""``ratewarden serve``'s flags and the environment variables that mirror them (the flag wins);
several workers on the memory store are refused unless asked for."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from ratewarden.service.cli import add_parser, options


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers(dest="command"))
    return p.parse_args(["serve", *argv])


def test_environment_mirrors_the_flags() -> None:
    env = {
        "RATEWARDEN_POLICY": "/etc/p.toml",
        "RATEWARDEN_HOST": "0.0.0.0",
        "RATEWARDEN_PORT": "9000",
        "RATEWARDEN_GRPC_PORT": "off",
        "RATEWARDEN_WORKERS": "3",
        "RATEWARDEN_STORAGE": "redis://r:6379/0",
        "RATEWARDEN_WATCH": "2.5",
        "RATEWARDEN_LOG_FORMAT": "text",
        "RATEWARDEN_MAX_BODY": "1024",
        "RATEWARDEN_GRACEFUL_TIMEOUT": "3",
        "RATEWARDEN_ADMIN_TOKEN": "tok",
    }
    o = options(parse(), env)
    assert (o.policy, o.host, o.port, o.grpc_port, o.workers) == ("/etc/p.toml", "0.0.0.0", 9000, None, 3)
    assert (o.storage, o.watch, o.log_format, o.max_body, o.graceful_timeout) == (
        "redis://r:6379/0",
        2.5,
        "text",
        1024,
        3.0,
    )
    assert o.admin_token == "tok" and o.envoy_config is None
    o = options(parse("--port", "8000", "--grpc-port", "9001", "--envoy-config", "e.yaml"), env)
    assert (o.port, o.grpc_port, o.policy, o.envoy_config) == (8000, 9001, None, "e.yaml")
    d = options(parse("--policy", "p.toml"), {})
    assert (d.host, d.port, d.grpc_port, d.workers, d.log_format) == ("127.0.0.1", 8787, 8081, None, "json")


def test_bad_values_are_clear_errors() -> None:
    with pytest.raises(SystemExit, match="RATEWARDEN_PORT='x'"):
        options(parse("--policy", "p.toml"), {"RATEWARDEN_PORT": "x"})
    with pytest.raises(SystemExit, match="--grpc-port"):
        options(parse("--policy", "p.toml", "--grpc-port", "nine"), {})
    with pytest.raises(SystemExit, match="--policy FILE or --envoy-config"):
        options(parse(), {})


def test_several_workers_on_memory_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('[[rule]]\nname = "r"\nkey = "ip"\nlimits = ["5/minute"]\n')
    cmd = [sys.executable, "-m", "ratewarden.cli", "serve", "--policy", str(f), "--workers", "2", "--grpc-port", "off"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "--split-memory" in r.stderr and "Traceback" not in r.stderr
