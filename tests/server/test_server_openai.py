"""The OpenAI-compatible /v1 routes through the official ``openai`` client."""
from __future__ import annotations

import json

import openai
import pytest
from server_harness import Server

PROMPT = "Once upon a time"
MESSAGES = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(client: openai.OpenAI) -> str:
    models = client.models.list().data
    assert len(models) == 1 and models[0].id
    return models[0].id


def test_completion(client: openai.OpenAI, model: str) -> None:
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0)
    assert r.object == "text_completion" and len(r.choices) == 1
    assert r.choices[0].text and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completion_stream_equals_non_stream(client: openai.OpenAI, model: str) -> None:
    full = client.completions.create(model=model, prompt=PROMPT, max_tokens=16, temperature=0)
    chunks = list(client.completions.create(model=model, prompt=PROMPT, max_tokens=16, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.choices[0].finish_reason
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_completion_batch_and_echo(client: openai.OpenAI, model: str) -> None:
    one = client.completions.create(model=model, prompt=PROMPT, max_tokens=4, temperature=0).choices[0].text
    r = client.completions.create(model=model, prompt=[PROMPT, "Hello"], max_tokens=4, temperature=0)
    assert [c.index for c in r.choices] == [0, 1] and r.choices[0].text == one
    echoed = client.completions.create(model=model, prompt=PROMPT, max_tokens=4, temperature=0, echo=True)
    assert echoed.choices[0].text == PROMPT + one


def test_chat(client: openai.OpenAI, model: str) -> None:
    r = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=24, temperature=0)
    msg = r.choices[0].message
    assert msg.role == "assistant" and msg.content.strip()
    assert r.usage.prompt_tokens > 10  # the chat template wraps the message in role markers


def test_chat_stream_equals_non_stream(client: openai.OpenAI, model: str) -> None:
    full = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=24, temperature=0)
    stream = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=24, temperature=0,
                                            stream=True)
    chunks = [c for c in stream if c.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == full.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason


def test_n_samples(client: openai.OpenAI, model: str) -> None:
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=6, temperature=1.0, n=3, seed=1)
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert all(c.text for c in r.choices)
    chat = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=6, n=2, temperature=0.8)
    assert [c.index for c in chat.choices] == [0, 1]


def test_stop(client: openai.OpenAI, model: str) -> None:
    full = client.completions.create(model=model, prompt=PROMPT, max_tokens=24, temperature=0).choices[0].text
    words = full.split()
    assert len(words) >= 3, full
    stop = " " + words[2]
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=24, temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == full[: full.index(stop)]


def test_logprobs(client: openai.OpenAI, model: str) -> None:
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == r.usage.completion_tokens == len(lp.token_logprobs)
    assert "".join(lp.tokens) == r.choices[0].text
    assert all(x <= 0 for x in lp.token_logprobs) and all(len(t) >= 1 for t in lp.top_logprobs)
    chunks = [c.choices[0] for c in client.completions.create(model=model, prompt=PROMPT, max_tokens=5, temperature=0,
                                                              logprobs=1, stream=True) if c.choices]
    tokens = [t for c in chunks if c.logprobs for t in c.logprobs.tokens]
    offsets = [o for c in chunks if c.logprobs for o in c.logprobs.text_offset]
    assert tokens == lp.tokens and offsets == lp.text_offset  # streamed logprobs equal the non-streamed ones
    chat = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=5, temperature=0,
                                          logprobs=True, top_logprobs=3)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    assert all(len(c.top_logprobs) == 3 and c.top_logprobs[0].logprob >= c.top_logprobs[-1].logprob
               for c in content)
    assert all(abs(c.logprob - c.top_logprobs[0].logprob) < 1e-4 for c in content)  # greedy picks the top


def test_json_schema(client: openai.OpenAI, model: str) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    try:
        r = client.with_options(timeout=60).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Give a person as JSON."}], max_tokens=64,
            temperature=0, response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
    except openai.BadRequestError as err:
        if "support" in str(err).lower():
            pytest.skip(f"the engine does not support json_schema constraints yet: {err.message}")
        raise
    except openai.APITimeoutError:
        pytest.xfail("runtime bug: a json_schema request never answered (docs/requests-from-servers.md #1)")
    value = json.loads(r.choices[0].message.content)
    assert set(value) == {"name", "age"} and isinstance(value["age"], int)
