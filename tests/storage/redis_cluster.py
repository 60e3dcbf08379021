"""Private Redis servers for the Redis store's tests: a standalone server on a spare port (that a
test may kill and restart; the shared 127.0.0.1:6379 is never stopped) and a real local Cluster
of three masters, started once per session and torn down at the end.

Servers run in the foreground as children of the test process (``Popen``), so they are stopped
by their own pid, never by name. Everything lives under a temporary directory. If
``redis-server`` is not installed, the fixtures skip with that reason.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["REDIS_SERVER", "RedisServer", "cluster_url", "free_port", "ping", "private_redis", "start_cluster"]

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(bus: bool = False) -> int:
    """A port free on the loopback (and, for a cluster node, its bus port + 10000 too)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not bus:
            return port
        if port < 55000 and _free(port + 10000):
            return port
    raise RuntimeError("no free port pair found")


def ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` child process on a port of its own."""

    def __init__(self, port: int, directory: Path, *extra: str) -> None:
        self.port = port
        self.dir = directory
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        if REDIS_SERVER is None:
            pytest.skip("redis-server is not installed")
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.dir), *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def busy(self, seconds: float) -> threading.Thread:
        """Hold the server in a script for ``seconds`` (from another client, in a thread); return
        once it is inside (a probe's PING no longer answers within 20 ms: a fixed sleep raced the
        thread's start under load). Join the thread to wait for the end."""
        import redis

        # TIME in microseconds: whole seconds alone made it last anywhere between 0 and 1 s
        script = (
            "local function us() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end "
            f"local t0 = us() while us() - t0 < {int(seconds * 1_000_000)} do end"
        )

        def run() -> None:
            with redis.Redis.from_url(self.url) as r:
                r.eval(script, 0)

        thread = threading.Thread(target=run)
        thread.start()
        with redis.Redis.from_url(self.url, socket_timeout=0.02) as probe:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    probe.ping()
                except redis.TimeoutError:
                    break
                time.sleep(0.005)
        return thread


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A standalone redis-server of this test's own (free to kill and restart)."""
    server = RedisServer(free_port(), tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


def start_cluster(directory: Path, masters: int = 3) -> list[RedisServer]:
    """Start ``masters`` cluster-enabled servers and join them; returns once cluster_state:ok."""
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.skip("redis-server / redis-cli are not installed")
    nodes: list[RedisServer] = []
    try:
        for i in range(masters):
            port = free_port(bus=True)
            node_dir = directory / f"node{i}"
            extra = ("--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"))
            nodes.append(RedisServer(port, node_dir, *extra, "--cluster-node-timeout", "2000").start())
        addrs = [f"127.0.0.1:{n.port}" for n in nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while True:
            infos = [
                subprocess.run(
                    [REDIS_CLI, "-p", str(n.port), "cluster", "info"],
                    check=False,
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                for n in nodes
            ]
            if all("cluster_state:ok" in info for info in infos):
                return nodes
            if time.monotonic() > deadline:
                raise RuntimeError("the local cluster did not reach cluster_state:ok")
            time.sleep(0.1)
    except BaseException:
        for n in nodes:
            n.stop()
        raise


_CLUSTER: list[RedisServer] = []


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """``redis+cluster://127.0.0.1:P`` of a real 3-master local cluster (one per session)."""
    if not _CLUSTER:
        directory = Path(tempfile.mkdtemp(prefix="rw-cluster-"))
        _CLUSTER.extend(start_cluster(directory))
        owner = True
    else:
        owner = False
    try:
        yield f"redis+cluster://127.0.0.1:{_CLUSTER[0].port}"
    finally:
        if owner:
            for n in _CLUSTER:
                n.stop()
            with contextlib.suppress(OSError):
                shutil.rmtree(n.dir.parent)
            _CLUSTER.clear()
