"""``Engine.warm(prefix, expect=n, ttl_s=...)`` end to end on a tiny random Llama (CPU, thread worker):
the pin keeps the prefix locked until n extending requests were admitted, abort/flush/timeout release it,
and all KV is free at the end."""
from __future__ import annotations

import time

import pytest
import torch
import transformers

from runtime.engine import Engine
from runtime.errors import EngineError

PREFIX = list(range(3, 43))   # 40 tokens
GEN = {"temperature": 0, "max_new_tokens": 2, "ignore_eos": True}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=128, max_position_embeddings=256)
    d = tmp_path_factory.mktemp("tiny-llama")
    transformers.LlamaForCausalLM(cfg).save_pretrained(d, safe_serialization=True)
    with Engine(str(d), skip_tokenizer_init=True, worker_mode="thread", max_total_tokens=100) as e:
        yield e


def pinned(engine: Engine) -> int:
    m = engine.metrics()
    return m["kv_cached_tokens"] - m["kv_evictable_tokens"]


def hoisted_fork(engine: Engine, expect: int) -> int:
    """Warm the prefix, let other traffic fill the 100-token pool, then send the two branches."""
    assert engine.flush_cache()
    before = engine.metrics()["prefill_tokens_total"]
    out = engine.warm(PREFIX, expect=expect)
    assert out["prompt_tokens"] == 40 and out["rid"] and pinned(engine) == (40 if expect else 0)
    engine.generate(input_ids=list(range(50, 70)), sampling_params=GEN)    # cached after the prefix
    engine.generate(input_ids=list(range(70, 115)), sampling_params=GEN)   # needs slots: LRU evicts the prefix
    engine.generate(input_ids=PREFIX + [50], sampling_params=GEN)
    assert pinned(engine) == (40 if expect else 0)
    engine.generate(input_ids=PREFIX + [51], sampling_params=GEN)
    assert pinned(engine) == 0
    assert engine.flush_cache() and engine.metrics()["kv_free_tokens"] == 100
    return engine.metrics()["prefill_tokens_total"] - before


def test_pin_holds_until_the_expected_requests_arrive(engine):
    assert hoisted_fork(engine, 2) == 40 + 20 + 45 + 1 + 1        # the branches found the prefix cached
    assert hoisted_fork(engine, 0) == 40 + 20 + 45 + 41 + 1       # unpinned, it was evicted and recomputed


def test_abort_flush_and_timeout_release_the_pin(engine):
    out = engine.warm(PREFIX, expect=5)
    engine.abort(out["rid"])
    engine.metrics()   # NOTE: the worker handles messages in order: the abort ran before this reply
    assert pinned(engine) == 0
    engine.warm(PREFIX, expect=5)
    assert engine.flush_cache() and engine.metrics()["kv_free_tokens"] == 100
    engine.warm(PREFIX, expect=5, ttl_s=0.1)
    deadline = time.time() + 5
    while pinned(engine) and time.time() < deadline:
        time.sleep(0.2)
    assert pinned(engine) == 0
    assert engine.flush_cache() and engine.metrics()["kv_free_tokens"] == 100


def test_logprob_start_per_prompt(engine):
    outs = engine.generate(input_ids=[PREFIX[:10], PREFIX[:20]], sampling_params={"max_new_tokens": 0},
                           return_logprob=True, logprob_start_len=[7, 15])
    assert [len(o["meta_info"]["input_token_logprobs"]) for o in outs] == [3, 5]
    with pytest.raises(EngineError, match="logprob_start_len"):
        engine.generate(input_ids=[PREFIX[:10]], return_logprob=True, logprob_start_len=[1, 2])


def test_bad_expect_is_refused(engine):
    with pytest.raises(EngineError, match="expect"):
        engine.warm(PREFIX, expect=-1)
    with pytest.raises(EngineError, match="pin_ttl_s"):
        engine.warm(PREFIX, expect=1, ttl_s=0)


def test_warm_without_waiting_logs_a_failure(engine, caplog):
    """A warm nobody waits for that fails (longer than the 100-token pool) raises nothing, but says so in the log."""
    long = [3 + i % 120 for i in range(150)]
    with pytest.raises(EngineError, match="exceeds the KV pool"):
        engine.warm(long, expect=1)
    with caplog.at_level("WARNING", logger="runtime.engine"):
        out = engine.warm(long, expect=1, wait=False)
        deadline = time.time() + 10
        while not any(out["rid"] in r.getMessage() for r in caplog.records) and time.time() < deadline:
            time.sleep(0.01)
    msgs = [r.getMessage() for r in caplog.records if out["rid"] in r.getMessage()]
    assert msgs and "exceeds the KV pool" in msgs[0], caplog.text


def test_warm_without_waiting(engine):
    """``wait=False`` returns at once; requests sent right after still find the prefix cached (computed once)
    and use up the pin."""
    assert engine.flush_cache()
    before = engine.metrics()["prefill_tokens_total"]
    out = engine.warm(PREFIX, expect=2, wait=False)
    assert set(out) == {"rid"}
    outs = engine.generate(input_ids=[PREFIX + [50], PREFIX + [51, 52]], sampling_params=GEN)
    assert [o["meta_info"]["cached_tokens"] for o in outs] == [40, 40]
    assert engine.metrics()["prefill_tokens_total"] - before == 40 + 1 + 2
    assert pinned(engine) == 0
    assert engine.flush_cache() and engine.metrics()["kv_free_tokens"] == 100
