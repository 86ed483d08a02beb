"""Helpers of the server tests: start/stop a real ``python -m sglc serve`` on free loopback ports, read metrics.

(A uniquely named module, not ``conftest``: other test folders have their own conftest.py.)
"""
from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key-123"
START_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running ``sglc serve`` subprocess and how to reach it."""

    proc: subprocess.Popen
    port: int
    grpc_port: int
    log_path: Path
    api_key: str = API_KEY
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_tail(self, n: int = 40) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def start_server(tmp: Path, *extra: str, api_key: str = API_KEY) -> Server:
    """Start ``python -m sglc serve`` on free ports and wait until /health answers 200."""
    port, grpc_port = free_port(), free_port()
    log_path = tmp / f"server-{port}.log"
    cmd = [sys.executable, "-m", "sglc", "serve", "--port", str(port), "--grpc-port", str(grpc_port),
           "--api-key", api_key, "--log-level", "info", "--max-total-tokens", "16384", *extra]
    # NOTE: SGLC_TEST_SERVER_CMD lets a developer point the tests at another launcher (debugging only).
    if os.environ.get("SGLC_TEST_SERVER_CMD"):
        cmd = [*shlex.split(os.environ["SGLC_TEST_SERVER_CMD"]), *cmd[3:]]
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    # NOTE: one torch thread: on a shared 2-core box, OpenMP spin-waiting across oversubscribed threads
    # made decode steps ~15x slower (3 s instead of 0.2 s per token under load).
    env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    srv = Server(proc, port, grpc_port, log_path, api_key, {"Authorization": f"Bearer {api_key}"})
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sglc serve exited with {proc.returncode}:\n{srv.log_tail()}")
        try:
            if httpx.get(f"{srv.url}/health", timeout=1.0).status_code == 200:
                return srv
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop_server(srv)
    raise RuntimeError(f"sglc serve did not become healthy in {START_TIMEOUT_S} s:\n{srv.log_tail()}")


def stop_server(srv: Server, timeout: float = 30.0) -> int:
    """SIGTERM the server and wait for it; returns its exit status."""
    if srv.proc.poll() is None:
        srv.proc.send_signal(signal.SIGTERM)
        try:
            srv.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            srv.proc.kill()
            srv.proc.wait()
    return srv.proc.returncode


def metrics(server: Server) -> dict[str, float]:
    """The server's /metrics parsed into ``{name: value}`` (names without the ``sglc_`` prefix)."""
    from runtime.server.metrics import parse

    return parse(httpx.get(f"{server.url}/metrics", timeout=10.0).text)


def wait_idle(server: Server, timeout: float = 30.0) -> dict[str, float]:
    """Wait until no request runs or waits; returns the metrics then."""
    deadline = time.monotonic() + timeout
    while True:
        m = metrics(server)
        if m.get("num_running_reqs", 0) == 0 and m.get("num_waiting_reqs", 0) == 0:
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"server still busy after {timeout} s: {m}")
        time.sleep(0.1)


def assert_kv_free(server: Server) -> None:
    """Once idle, flushing the radix cache must leave no KV token in use (nothing leaked or locked)."""
    wait_idle(server)
    r = httpx.post(f"{server.url}/flush_cache", headers=server.headers, timeout=30.0)
    assert r.status_code == 200 and r.json()["success"], r.text
    m = metrics(server)
    assert m["kv_used_tokens"] == 0, m
    assert m["kv_free_tokens"] == m["kv_total_tokens"], m
