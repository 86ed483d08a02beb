"""``bench/bench_serving.py`` runs end to end against the shared server on every backend."""
from __future__ import annotations

import importlib.util
import sys

import pytest
from server_harness import ROOT, Server


def _bench():
    if "bench_serving" in sys.modules:
        return sys.modules["bench_serving"]
    spec = importlib.util.spec_from_file_location("bench_serving", ROOT / "bench" / "bench_serving.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_serving"] = module  # NOTE: dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", ["http", "openai", "grpc"])
def test_bench_serving_prints_a_table(server: Server, backend: str, capsys: pytest.CaptureFixture) -> None:
    rc = _bench().main(["--backend", backend, "--port", str(server.port), "--grpc-port", str(server.grpc_port),
                        "--api-key", server.api_key, "--num-prompts", "4", "--input-len", "16", "--output-len", "4",
                        "--range-ratio", "1.0", "--request-rate", "8", "--warmup", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "| successful / failed requests     | 4 / 0 |" in out
    assert "| input tokens / output tokens     | 64 / 16 |" in out
    for metric in ("TTFT", "ITL", "E2E", "output throughput"):
        assert metric in out
