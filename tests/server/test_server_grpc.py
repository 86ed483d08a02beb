"""The gRPC Runtime service: every RPC, health, streaming, cancellation, deadlines, API key."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_harness import Server, wait_idle

from proto import sglc_pb2 as pb
from proto import sglc_pb2_grpc as pb_grpc

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.RuntimeStub:
    return pb_grpc.RuntimeStub(channel)


@pytest.fixture(scope="module")
def md(server: Server) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {server.api_key}")]


def greedy(n: int = 12) -> pb.SamplingParams:
    return pb.SamplingParams(max_new_tokens=n, temperature=0)


def test_health(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "sglc.v1.Runtime"):
        r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)  # no key needed
        assert r.status == health_pb2.HealthCheckResponse.SERVING


def test_generate_unary_and_stream_agree(stub: pb_grpc.RuntimeStub, md: list, http_text: str) -> None:
    [final] = list(stub.Generate(pb.GenerateRequest(text=PROMPT, sampling_params=greedy()), metadata=md, timeout=60))
    assert final.finished and final.text == http_text  # same engine, same greedy text as HTTP
    assert final.meta_info.completion_tokens == len(final.token_ids)
    assert final.meta_info.finish_reason in ("stop", "length")
    msgs = list(stub.Generate(pb.GenerateRequest(text=PROMPT, sampling_params=greedy(), stream=True,
                                                 return_logprob=True), metadata=md, timeout=60))
    assert len(msgs) >= 2 and msgs[-1].finished and not msgs[0].finished
    assert "".join(m.text for m in msgs) == final.text
    ids = [t for m in msgs for t in m.token_ids]
    assert ids == list(final.token_ids)
    assert [lp.token_id for m in msgs for lp in m.logprobs] == ids
    assert msgs[-1].meta_info.prompt_tokens > 0
    assert json.loads(msgs[-1].meta_info.json)["completion_tokens"] == len(ids)


@pytest.fixture(scope="module")
def http_text(server: Server) -> str:
    import httpx

    r = httpx.post(f"{server.url}/generate", headers=server.headers, timeout=60,
                   json={"text": PROMPT, "sampling_params": {"max_new_tokens": 12, "temperature": 0}})
    return r.json()["text"]


def test_generate_input_ids_and_n(stub: pb_grpc.RuntimeStub, md: list) -> None:
    req = pb.GenerateRequest(input_ids=pb.TokenIds(ids=[1, 2, 3, 4]),
                             sampling_params=pb.SamplingParams(max_new_tokens=4, n=2, temperature=0.7))
    msgs = list(stub.Generate(req, metadata=md, timeout=60))
    assert sorted(m.index for m in msgs) == [0, 1]
    assert all(m.finished and m.meta_info.prompt_tokens == 4 for m in msgs)


def test_score_warm_flush_info_metrics(stub: pb_grpc.RuntimeStub, md: list) -> None:
    r = stub.Score(pb.ScoreRequest(prefix="The capital of France is", continuations=[" Paris", " a banana split"]),
                   metadata=md, timeout=60)
    assert len(r.choices) == 2
    assert all(c.num_tokens == len(c.token_logprobs) > 0 for c in r.choices)
    assert r.choices[0].normalized_logprob > r.choices[1].normalized_logprob  # Paris is likelier
    warm = stub.Warm(pb.WarmRequest(prefix="You are a helpful assistant. " * 4), metadata=md, timeout=60)
    assert warm.prompt_tokens > 0
    again = stub.Warm(pb.WarmRequest(prefix="You are a helpful assistant. " * 4), metadata=md, timeout=60)
    assert again.cached_tokens > 0  # the prefix stayed in the radix cache
    assert stub.FlushCache(pb.FlushCacheRequest(), metadata=md, timeout=30).success
    info = stub.GetModelInfo(pb.ModelInfoRequest(), metadata=md, timeout=10)
    assert info.vocab_size > 0 and info.chat_template and json.loads(info.json)
    m = stub.GetMetrics(pb.MetricsRequest(), metadata=md, timeout=10)
    assert m.kv_total_tokens > 0 and m.num_requests_total > 0
    assert stub.Abort(pb.AbortRequest(rid="no-such-request"), metadata=md, timeout=10) is not None


def _pinned(stub: pb_grpc.RuntimeStub, md: list) -> int:
    m = json.loads(stub.GetMetrics(pb.MetricsRequest(), metadata=md, timeout=10).json)
    return m["kv_cached_tokens"] - m["kv_evictable_tokens"]


def test_warm_pin_held_until_expected_requests_or_abort(stub: pb_grpc.RuntimeStub, md: list) -> None:
    prefix = "A pinned prefix for the branches to come." * 3   # NOTE: no trailing space (BPE merges it)
    warm = stub.Warm(pb.WarmRequest(prefix=prefix, expect=5, ttl_s=60), metadata=md, timeout=60)
    assert warm.rid and _pinned(stub, md) >= warm.prompt_tokens
    stub.Abort(pb.AbortRequest(rid=warm.rid), metadata=md, timeout=10)   # releases the pin
    assert _pinned(stub, md) == 0
    warm = stub.Warm(pb.WarmRequest(prefix=prefix, expect=1), metadata=md, timeout=60)
    assert _pinned(stub, md) >= warm.prompt_tokens
    req = pb.GenerateRequest(text=prefix + " Go", sampling_params=pb.SamplingParams(max_new_tokens=1))
    list(stub.Generate(req, metadata=md, timeout=60))
    assert _pinned(stub, md) == 0   # the one expected request arrived


def _running(stub: pb_grpc.RuntimeStub, md: list) -> int:
    m = stub.GetMetrics(pb.MetricsRequest(), metadata=md, timeout=10)
    return m.num_running_reqs + m.num_waiting_reqs


def _wait_running_zero(stub: pb_grpc.RuntimeStub, md: list, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _running(stub, md) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running(stub, md) == 0, "the cancelled request kept running: it was not aborted"


def test_cancel_aborts_request(server: Server, stub: pb_grpc.RuntimeStub, md: list) -> None:
    wait_idle(server)
    long = pb.SamplingParams(max_new_tokens=2000, temperature=0, ignore_eos=True)
    call = stub.Generate(pb.GenerateRequest(text=PROMPT, sampling_params=long, stream=True), metadata=md)
    next(call), next(call)
    assert _running(stub, md) == 1
    call.cancel()
    _wait_running_zero(stub, md)  # 2000 tokens would take far longer than the wait


def test_deadline_aborts_request(server: Server, stub: pb_grpc.RuntimeStub, md: list) -> None:
    wait_idle(server)
    long = pb.SamplingParams(max_new_tokens=2000, temperature=0, ignore_eos=True)
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Generate(pb.GenerateRequest(text=PROMPT, sampling_params=long, stream=True), metadata=md,
                           timeout=1.5))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    _wait_running_zero(stub, md)


def test_abort_rpc_finishes_stream(server: Server, stub: pb_grpc.RuntimeStub, md: list) -> None:
    wait_idle(server)
    long = pb.SamplingParams(max_new_tokens=2000, temperature=0, ignore_eos=True)
    call = stub.Generate(pb.GenerateRequest(rid="abort-me", text=PROMPT, sampling_params=long, stream=True),
                         metadata=md, timeout=60)
    next(call)
    stub.Abort(pb.AbortRequest(rid="abort-me"), metadata=md, timeout=10)
    msgs = list(call)
    assert msgs and msgs[-1].finished and msgs[-1].meta_info.finish_reason == "abort"
    assert sum(len(m.token_ids) for m in msgs) < 2000


@pytest.mark.parametrize("metadata", [None, [("authorization", "Bearer wrong")]], ids=["missing", "wrong"])
def test_api_key_grpc(stub: pb_grpc.RuntimeStub, metadata: list | None) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModelInfo(pb.ModelInfoRequest(), metadata=metadata, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Generate(pb.GenerateRequest(text="hi", sampling_params=greedy(1)), metadata=metadata, timeout=10))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
