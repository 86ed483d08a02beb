"""``sglc serve`` as a process: --help, unsupported flags fail fast, SIGTERM drains and exits 0."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from server_harness import ROOT, Server


def _sglc(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sglc", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_help_lists_subcommands_and_flags() -> None:
    top = _sglc("--help")
    assert top.returncode == 0 and "serve" in top.stdout
    r = _sglc("serve", "--help")
    assert r.returncode == 0
    for flag in ("--model-path", "--port", "--grpc-port", "--tp", "--dp", "--mem-fraction-static", "--chat-template",
                 "--quantization", "--disable-radix-cache", "--attention-backend", "--max-running-requests",
                 "--chunked-prefill-size", "--max-total-tokens", "--api-key", "--log-level", "--dtype", "--device"):
        assert flag in r.stdout, flag


@pytest.mark.parametrize("args,needle", [
    (["--tp", "2"], "--tp 2"),
    (["--dp", "2"], "--dp 2"),
    (["--quantization", "fp8"], "--quantization fp8"),
    (["--model-path", "/no/such/model"], "/no/such/model"),
    (["--mem-fraction-static", "1.5"], "mem_fraction_static"),
], ids=["tp", "dp", "quantization", "model-path", "mem-fraction"])
def test_unsupported_flags_fail_fast(args: list[str], needle: str) -> None:
    t0 = time.monotonic()
    r = _sglc("serve", "--port", "1", *args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "error" in r.stderr
    assert time.monotonic() - t0 < 30  # no model was loaded


@pytest.mark.parametrize("args,needle", [
    (["serve", "--port", "99999"], "sglc serve: error: argument --port: 99999 is not a port number"),
    (["serve", "--grpc-port", "-1"], "sglc serve: error: argument --grpc-port: -1 is not a port number"),
    (["serve", "--bogus"], "sglc serve: error: unrecognized arguments: --bogus"),
    (["run", "--bogus", "x.py:f"], "sglc run: error: unrecognized arguments: --bogus"),
], ids=["port", "grpc-port", "serve-flag", "run-flag"])
def test_bad_flags_are_the_commands_usage_errors(args: list[str], needle: str) -> None:
    """Not a traceback (a port out of range failed in bind()) nor the top-level usage (an unknown flag)."""
    r = _sglc(*args)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_port_in_use_fails_fast() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = _sglc("serve", "--port", str(port))
    assert r.returncode == 2 and f"--port {port}" in r.stderr and "in use" in r.stderr, r.stderr


@pytest.mark.kills_server  # conftest runs it after every other test: it stops the shared server
def test_sigterm_drains_in_flight_request_and_exits_zero(server: Server) -> None:
    events: list = []

    def stream() -> None:
        body = {"text": "Count slowly:", "stream": True,
                "sampling_params": {"max_new_tokens": 16, "temperature": 0, "ignore_eos": True}}
        with httpx.stream("POST", f"{server.url}/generate", json=body, headers=server.headers, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])

    worker = threading.Thread(target=stream)
    worker.start()
    deadline = time.monotonic() + 60
    while not events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert events, "the stream never started"
    server.proc.send_signal(signal.SIGTERM)
    worker.join(120)
    assert server.proc.wait(60) == 0, server.log_tail()
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    assert final["finished"] and final["meta_info"]["completion_tokens"] == 16  # drained, not cut off
    log = server.log_path.read_text()
    assert "shutting down" in log and "all servers stopped" in log
