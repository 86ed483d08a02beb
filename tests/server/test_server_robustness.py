"""Bad input gets a clear 4xx / INVALID_ARGUMENT naming the field and the server keeps serving; load;
client disconnects abort their requests and free their KV."""
from __future__ import annotations

import asyncio
import json
import time

import grpc
import httpx
import pytest
from server_harness import Server, assert_kv_free, metrics, wait_idle

from proto import sglc_pb2 as pb
from proto import sglc_pb2_grpc as pb_grpc

GOOD = {"text": "Hello", "sampling_params": {"max_new_tokens": 2, "temperature": 0}}


@pytest.fixture(scope="module")
def context_length(server: Server) -> int:
    info = httpx.get(f"{server.url}/get_model_info", headers=server.headers, timeout=10).json()
    return int(info["context_length"])


def _long_ids(n: int) -> list[int]:
    return [100 + i % 1000 for i in range(n)]


BAD_GENERATE = [
    ("negative temperature", {"text": "x", "sampling_params": {"temperature": -0.5}}, "temperature"),
    ("top_p above 1", {"text": "x", "sampling_params": {"top_p": 1.5}}, "top_p"),
    ("unknown sampling param", {"text": "x", "sampling_params": {"temprature": 0.5}}, "temprature"),
    ("non-integer max_new_tokens", {"text": "x", "sampling_params": {"max_new_tokens": "ten"}}, "max_new_tokens"),
    ("neither text nor ids", {"sampling_params": {}}, "text"),
    ("text and ids", {"text": "x", "input_ids": [1, 2]}, "input_ids"),
    ("text of the wrong type", {"text": 42}, "text"),
    ("two constraints", {"text": "x", "sampling_params": {"regex": "a", "ebnf": "b"}}, "regex"),
    # each of these reached the worker unchecked and killed it for good (every later request got 503)
    ("seed of the wrong type", {"text": "x", "sampling_params": {"max_new_tokens": 3, "seed": "x"}}, "seed"),
    ("non-integral seed", {"text": "x", "sampling_params": {"max_new_tokens": 3, "seed": 1.5}}, "seed"),
    ("non-boolean flag", {"text": "x", "sampling_params": {"max_new_tokens": 3, "skip_special_tokens": "no"}},
     "skip_special_tokens"),
    ("top_k past 64 bits", {"text": "x", "sampling_params": {"max_new_tokens": 3, "top_k": 2**63}}, "top_k"),
    ("stop token outside the vocabulary", {"text": "x", "sampling_params": {
        "max_new_tokens": 3, "min_new_tokens": 2, "stop_token_ids": [999999]}}, "stop_token_ids"),
    ("negative top_logprobs_num", {**GOOD, "return_logprob": True, "top_logprobs_num": -3}, "top_logprobs_num"),
    ("top_logprobs_num past the vocabulary", {**GOOD, "return_logprob": True, "top_logprobs_num": 10**6},
     "top_logprobs_num"),
    # these answered 500
    ("temperature of the wrong type", {"text": "x", "sampling_params": {"temperature": "hot"}}, "temperature"),
    ("min_p of the wrong type", {"text": "x", "sampling_params": {"min_p": "x"}}, "min_p"),
    ("an empty batch", {"text": []}, "empty batch"),
    ("n past the limit", {"text": "x", "sampling_params": {"max_new_tokens": 1, "n": 10**6}}, "n"),
]
# NOTE: invalid constraints are reported by the worker after compiling them; a runtime bug loses that
# report, so the request never answers. Until it is fixed these cases xfail on a short timeout.
CONSTRAINT_BUG = ("runtime bug: the worker loses an invalid constraint's error event and the request never "
                  "answers (docs/requests-from-servers.md #1)")
CONSTRAINT_TIMEOUT_S = 8.0
BAD_CONSTRAINTS = [
    ("bad regex", {"text": "x", "sampling_params": {"regex": "([a-z"}}, "regex"),
    ("bad json schema", {"text": "x", "sampling_params": {"json_schema": "{not json"}}, "json_schema"),
]


@pytest.mark.parametrize("body,field", [(b, f) for _, b, f in BAD_GENERATE], ids=[i for i, _, _ in BAD_GENERATE])
def test_bad_generate_input(http: httpx.Client, body: dict, field: str) -> None:
    r = http.post("/generate", json=body)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert field in message, message
    assert http.post("/generate", json=GOOD).status_code == 200  # still serving


@pytest.mark.parametrize("body,field", [(b, f) for _, b, f in BAD_CONSTRAINTS],
                         ids=[i for i, _, _ in BAD_CONSTRAINTS])
def test_bad_constraint(http: httpx.Client, body: dict, field: str) -> None:
    try:
        r = http.post("/generate", json=body, timeout=CONSTRAINT_TIMEOUT_S)
    except httpx.ReadTimeout:
        pytest.xfail(CONSTRAINT_BUG)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["message"], r.text
    assert http.post("/generate", json=GOOD).status_code == 200


def test_prompt_longer_than_context(http: httpx.Client, context_length: int) -> None:
    r = http.post("/generate", json={"input_ids": _long_ids(context_length + 8), "sampling_params": {}})
    assert r.status_code == 400, r.text
    assert "context" in r.json()["error"]["message"].lower()
    assert http.post("/generate", json=GOOD).status_code == 200


BAD_OPENAI = [
    ("/v1/completions", {"prompt": "hi", "max_tokens": 3, "top_k": 2**63}, "top_k"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 3, "min_tokens": 2, "stop_token_ids": [999999]},
     "stop_token_ids"),
    ("/v1/completions", {"prompt": "x", "temperature": -1}, "temperature"),
    ("/v1/completions", {"prompt": "x", "n": 0}, "n"),
    ("/v1/completions", {"prompt": "x", "logprobs": 99}, "logprobs"),
    ("/v1/completions", {"max_tokens": 3}, "prompt"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_p": 2}, "top_p"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, "role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "schema"),
]


@pytest.mark.parametrize("path,body,field", BAD_OPENAI, ids=[f"{p[4:]}-{f}" for p, _, f in BAD_OPENAI])
def test_bad_openai_input(http: httpx.Client, path: str, body: dict, field: str) -> None:
    r = http.post(path, json={"model": "m", **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert field in err["message"], err
    ok = http.post("/v1/completions", json={"model": "m", "prompt": "Hi", "max_tokens": 2})
    assert ok.status_code == 200, ok.text


def test_bad_grpc_input(server: Server, context_length: int) -> None:
    md = [("authorization", f"Bearer {server.api_key}")]
    cases = [
        (pb.GenerateRequest(text="x", sampling_params=pb.SamplingParams(temperature=-1)), "temperature"),
        (pb.GenerateRequest(text="x", sampling_params=pb.SamplingParams(top_p=1.5)), "top_p"),
        (pb.GenerateRequest(sampling_params=pb.SamplingParams()), "text"),
        (pb.GenerateRequest(input_ids=pb.TokenIds(ids=_long_ids(context_length + 8))), "context"),
        (pb.GenerateRequest(text="x", return_logprob=True, top_logprobs_num=-1), "top_logprobs_num"),
    ]
    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = pb_grpc.RuntimeStub(ch)
        for req, field in cases:
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Generate(req, metadata=md, timeout=30))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert field in err.value.details().lower(), err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.Score(pb.ScoreRequest(prefix="x"), metadata=md, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "continuations" in err.value.details()
        ok = list(stub.Generate(pb.GenerateRequest(text="Hi", sampling_params=pb.SamplingParams(max_new_tokens=2)),
                                metadata=md, timeout=30))
        assert ok[-1].finished


def test_bad_grpc_constraint(server: Server) -> None:
    md = [("authorization", f"Bearer {server.api_key}")]
    req = pb.GenerateRequest(text="x", stream=True, sampling_params=pb.SamplingParams(regex="([a-z"))
    with grpc.insecure_channel(server.grpc_target) as ch, pytest.raises(grpc.RpcError) as err:
        list(pb_grpc.RuntimeStub(ch).Generate(req, metadata=md, timeout=CONSTRAINT_TIMEOUT_S))
    if err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        pytest.xfail(CONSTRAINT_BUG)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert "regex" in err.value.details()


async def _stream_one(client: httpx.AsyncClient, i: int) -> dict:
    body = {"text": f"Request {i}: count to ten.", "stream": True,
            "sampling_params": {"max_new_tokens": 12, "temperature": 0.5, "seed": i}}
    last, done = None, False
    async with client.stream("POST", "/generate", json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                last = json.loads(line[6:])
    assert done and last is not None
    return last


def test_64_concurrent_streams_then_kv_free(server: Server) -> None:
    async def run() -> list[dict]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=240, limits=limits) as c:
            return await asyncio.gather(*(_stream_one(c, i) for i in range(64)))

    before = metrics(server)["num_requests_total"]
    finals = asyncio.run(run())
    assert len(finals) == 64
    assert all(f["finished"] and f["meta_info"]["finish_reason"]["type"] in ("stop", "length") for f in finals)
    assert all(0 < f["meta_info"]["completion_tokens"] <= 12 for f in finals)
    assert wait_idle(server)["num_requests_total"] >= before + 64
    assert_kv_free(server)


def test_disconnect_mid_stream_frees_kv(server: Server) -> None:
    wait_idle(server)
    before = metrics(server)["generation_tokens_total"]
    body = {"text": "Tell me a very long story.", "stream": True,
            "sampling_params": {"max_new_tokens": 3000, "temperature": 0, "ignore_eos": True}}
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client, \
            client.stream("POST", "/generate", json=body) as r:
        lines = r.iter_lines()
        got = [line for line in (next(lines) for _ in range(6)) if line.startswith("data: ")]
        assert got
        assert metrics(server)["num_running_reqs"] == 1
    # leaving the block closed the connection mid-stream
    deadline = time.monotonic() + 20
    while metrics(server)["num_running_reqs"] and time.monotonic() < deadline:
        time.sleep(0.1)
    m = metrics(server)
    assert m["num_running_reqs"] == 0, "the disconnected request kept running"
    assert m["generation_tokens_total"] - before < 3000
    assert_kv_free(server)


def test_openai_edges_answer_like_openai(server: Server, http: httpx.Client, context_length: int) -> None:
    """max_tokens past the context is a 400 (the engine would cap it silently), ``"max_tokens": null`` is the
    default 16, top_logprobs needs logprobs, unknown routes and wrong methods answer in OpenAI's error shape,
    malformed JSON says so, and the Bearer scheme is case-insensitive."""
    r = http.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "Hi"}],
                                                "max_tokens": context_length})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("max_tokens: this model's context")
    r = http.post("/v1/completions", json={"model": "m", "prompt": "Hi", "max_tokens": context_length + 5})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"], r.text
    r = http.post("/v1/completions", json={"model": "m", "prompt": "Hi", "max_tokens": None, "ignore_eos": True})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 16, r.text
    r = http.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "Hi"}],
                                                "top_logprobs": 2, "max_tokens": 2})
    assert r.status_code == 400 and "top_logprobs needs logprobs" in r.json()["error"]["message"]
    for method, path, status in [("POST", "/v1/embeddings", 404), ("GET", "/v1/chat/completions", 405)]:
        r = http.request(method, path, json={})
        assert r.status_code == status and r.json()["error"]["code"] == status, r.text
        assert path in r.json()["error"]["message"]
    r = http.post("/v1/completions", content=b'{"model": "m", "prompt": "Hi",}',
                  headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("the request body is not valid JSON")
    assert r.json()["error"]["param"] is None
    lower = {"authorization": f"bearer {server.api_key}"}
    assert httpx.post(f"{server.url}/generate", json=GOOD, headers=lower, timeout=30).status_code == 200
