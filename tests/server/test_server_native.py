"""HTTP native routes: the seed's curl request, SSE streaming, logprobs, batches, admin routes, API key."""
from __future__ import annotations

import itertools
import json

import httpx
from server_harness import Server, metrics

PROMPT = "The capital of France is"
GREEDY = {"temperature": 0, "max_new_tokens": 12}


def sse_events(resp: httpx.Response) -> list:
    """The JSON payloads of an SSE response, with the final ``[DONE]`` as the string."""
    events = []
    for line in resp.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_seed_curl_request(server: Server) -> None:
    # The README's curl: a JSON body without a Content-Type header (curl -d sends a form type).
    body = json.dumps({"text": PROMPT, "sampling_params": {"max_new_tokens": 16, "temperature": 0}})
    r = httpx.post(f"{server.url}/generate", content=body, headers=server.headers, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert isinstance(out["text"], str) and out["text"].strip()
    meta = out["meta_info"]
    assert meta["prompt_tokens"] > 0
    assert 0 < meta["completion_tokens"] <= 16
    assert meta["completion_tokens"] == len(out["output_ids"])
    assert meta["finish_reason"]["type"] in ("stop", "length")


def test_stream_is_cumulative_and_matches_non_stream(http: httpx.Client) -> None:
    full = http.post("/generate", json={"text": PROMPT, "sampling_params": GREEDY}).json()
    with http.stream("POST", "/generate", json={"text": PROMPT, "sampling_params": GREEDY, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) >= 2
    texts = [c["text"] for c in chunks]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts)), texts  # SGLang: cumulative text
    assert chunks[-1]["finished"] and chunks[-1]["meta_info"]["finish_reason"]["type"] in ("stop", "length")
    assert texts[-1] == full["text"]
    assert chunks[-1]["output_ids"] == full["output_ids"]


def test_input_ids_and_batch(http: httpx.Client) -> None:
    one = http.post("/generate", json={"text": PROMPT, "sampling_params": GREEDY}).json()
    ids_prompt = http.post("/generate", json={"input_ids": [1, 2, 3, 4, 5], "sampling_params": GREEDY}).json()
    assert ids_prompt["meta_info"]["prompt_tokens"] == 5
    batch = http.post("/generate", json={"text": [PROMPT, "Hello"], "sampling_params": GREEDY}).json()
    assert isinstance(batch, list) and len(batch) == 2
    assert batch[0]["text"] == one["text"]
    assert [b["index"] for b in batch] == [0, 1]


def test_logprobs(http: httpx.Client) -> None:
    r = http.post("/generate", json={"text": PROMPT, "sampling_params": {"temperature": 0, "max_new_tokens": 4},
                                     "return_logprob": True, "top_logprobs_num": 3, "logprob_start_len": 0})
    assert r.status_code == 200, r.text
    out = r.json()
    meta = out["meta_info"]
    rows = meta["output_token_logprobs"]
    assert [row[1] for row in rows] == out["output_ids"]
    assert all(row[0] <= 0 for row in rows)
    tops = meta["output_top_logprobs"]
    assert len(tops) == len(rows) and all(len(t) == 3 for t in tops)
    # greedy: the chosen token is the most likely one
    assert all(t[0][1] == row[1] for t, row in zip(tops, rows))
    assert len(meta["input_token_logprobs"]) == meta["prompt_tokens"]


def test_admin_routes(server: Server, http: httpx.Client) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}  # no key needed
    info = http.get("/get_model_info").json()
    assert info["is_generation"] is True and "model_path" in info
    assert http.post("/flush_cache").json() == {"success": True}
    m = metrics(server)
    for key in ("num_requests_total", "generation_tokens_total", "cache_hit_rate", "num_waiting_reqs",
                "kv_used_tokens", "kv_total_tokens", "kv_usage"):
        assert key in m, key
    text = httpx.get(f"{server.url}/metrics").text
    assert "# TYPE sglc_num_requests_total counter" in text


def test_api_key_http(server: Server) -> None:
    body = {"text": PROMPT, "sampling_params": {"max_new_tokens": 1}}
    missing = httpx.post(f"{server.url}/generate", json=body, timeout=30)
    wrong = httpx.post(f"{server.url}/generate", json=body, headers={"Authorization": "Bearer nope"}, timeout=30)
    v1 = httpx.get(f"{server.url}/v1/models", timeout=30)
    for r in (missing, wrong, v1):
        assert r.status_code == 401, r.text
        assert "API key" in r.json()["error"]["message"]
    ok = httpx.post(f"{server.url}/generate", json=body, headers=server.headers, timeout=30)
    assert ok.status_code == 200
