"""The Engine -> worker encoding of a generate call (``runtime.engine._Batch`` / ``Worker.add_batch``):
token ids as one buffer with prefixes shared between consecutive prompts, sampling params parsed once,
validation errors in the same order as per-request checks; and end to end through a process worker on a
tiny random Llama (outputs equal to one-by-one calls, n > 1, logprobs, streaming, errors, abort)."""
from __future__ import annotations

import asyncio
import pickle
import random

import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.engine import Engine, _Batch
from runtime.errors import EngineError, EngineUnavailable
from runtime.seq import common_prefix_len
from runtime.worker import decode_prompts

VOCAB, CTX = 128, 512
POOL = 480   # < CTX: a prompt can fit the context but not the pool


def encode(prompts, sps=None, vocab=VOCAB, ctx=CTX, starts=None):
    b = _Batch(vocab, ctx)
    sps = sps if isinstance(sps, list) else [sps] * len(prompts)
    for i, ids in enumerate(prompts):
        b.add(f"r{i}", ids, sps[i], -1 if starts is None else starts[i])
    assert b.range_error() is None
    return b


def round_trip(prompts, **kw):
    b = encode(prompts, **kw)
    msg = pickle.loads(pickle.dumps(b.message(False, 0, False), protocol=pickle.HIGHEST_PROTOCOL))
    return b, msg[1], decode_prompts(msg[1])


def test_round_trip_shared_prefix_sends_only_tails():
    rng = random.Random(0)
    shared = [rng.randrange(VOCAB) for _ in range(300)]
    prompts = [shared + [rng.randrange(VOCAB) for _ in range(8)] for _ in range(50)]
    _, msg, out = round_trip(prompts)
    assert out == prompts
    assert len(msg["ids"]) <= 300 + 50 * 8   # the prefix once, then tails
    assert msg["shared"][0] == 0 and min(msg["shared"][1:]) >= 300
    assert all(type(t) is int for p in out for t in p)
    assert out[1][0] is out[0][0] and out[49][299] is out[0][299]   # the worker's lists share the int objects


def test_interned_ids_are_shared_across_calls():
    table = list(range(50_000))
    rng = random.Random(1)
    a = [rng.randrange(1000, 50_000) for _ in range(100)]
    first = decode_prompts(round_trip([a, a + [2000]], vocab=50_000)[1], table)
    second = decode_prompts(round_trip([[7] * 20, list(a)], vocab=50_000)[1], table)
    assert first == [a, a + [2000]] and second == [[7] * 20, a]
    assert all(x is y for x, y in zip(first[0], second[1]))   # one int object per token id


@pytest.mark.parametrize("prompts", [
    [[1, 2, 3]],
    [[5] * 40, [5] * 40, [5] * 40],                          # duplicates: empty tails
    [[1] * 30, [1] * 20, [1] * 40, [2] + [1] * 30],          # prefixes of each other, then a mismatch at 0
    [list(range(100)), list(range(100))[:60] + [0] * 10, list(range(60)) + [1], [7]],
    [[1] * 17, [1] * 16 + [2], [1] * 15 + [3]],                # around the minimum shared length
    [list(range(20)) * 3, list(range(20)) * 3 + [5], [3] * 64, list(range(20)) * 3],   # A A' B A
])
def test_round_trip_cases(prompts):
    assert round_trip(prompts)[2] == prompts


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=40), min_size=1, max_size=12))
def test_round_trip_property(prompts):
    # a 4-token alphabet: common prefixes of every length are frequent
    assert round_trip(prompts)[2] == prompts
    for a in prompts:
        for b in prompts:
            k = common_prefix_len(a, b)
            assert a[:k] == b[:k] and (k == min(len(a), len(b)) or a[k] != b[k])


def test_round_trip_large_batch_and_odd_containers():
    rng = np.random.default_rng(0)
    groups = [rng.integers(0, 50_000, 1500).tolist() for _ in range(3)]
    prompts = [groups[i % 3 if i < 600 else 0] + rng.integers(0, 50_000, 64).tolist() for i in range(3000)]
    prompts.append(rng.integers(0, 50_000, 4000).tolist())   # no shared prefix at all
    b, _, out = round_trip(prompts, vocab=50_000, ctx=8192)
    assert out == prompts and len(b.rids) == 3001
    # tuples and numpy ints are accepted as before; the worker gets plain Python ints
    _, _, out = round_trip([tuple(range(40)), np.arange(45), [np.int64(3)] * 20], vocab=50_000)
    assert out == [list(range(40)), list(range(45)), [3] * 20] and all(type(t) is int for p in out for t in p)


def test_params_parsed_once_per_object_and_n_samples():
    sp = {"max_new_tokens": 4, "n": 2}
    other = {"max_new_tokens": 3}
    b = encode([[1] * 20, [1] * 21, [2] * 5], sps=[sp, sp, other])
    assert len(b.params) == 2 and b.params[0]["n"] == 2
    assert b.rids == ["r0#0", "r0#1", "r1#0", "r1#1", "r2#0"]
    assert list(b.item) == [0, 0, 1, 1, 2] and list(b.param) == [0, 0, 0, 0, 1]
    # a prompt near the context gets its own capped copy of the params (as SGLang: cap at the window)
    b = encode([[1] * 500, [1] * 20], sps={"max_new_tokens": 100, "min_new_tokens": 50})
    assert [p["max_new_tokens"] for p in b.params] == [12, 100] and b.params[0]["min_new_tokens"] == 12
    assert list(b.param) == [0, 1]


@pytest.mark.parametrize("prompts, sps, match", [
    ([[1, 2], [3, VOCAB]], None, "input_ids must be integers"),
    ([[1, 2], [-1]], None, "input_ids must be integers"),
    ([[1] * 30, [1] * 29 + [2**40]], None, "input_ids must be integers"),
    ([[1] * 30, [1] * 29 + [2.5]], None, "input_ids must be integers"),
    ([[1] * 30, [1] * 29 + ["a"]], None, "input_ids must be integers"),
    ([[1], []], None, "empty"),
    ([[1], [1] * CTX], None, "context length"),
    ([[1], [2]], [None, {"temperature": -1}], "temperature"),
    # the first failing prompt decides, in the per-prompt order sampling params -> tokens -> length
    ([[1, VOCAB], [2]], [None, {"temperature": -1}], "input_ids"),
    ([[1], [2, VOCAB]], [{"temperature": -1}, None], "temperature"),
    ([[VOCAB] * 3, [2] * CTX], None, "input_ids"),
    ([[2] * CTX, [VOCAB]], None, "context length"),
    ([[1], [VOCAB] * 2, [1] * CTX], None, "input_ids"),
])
def test_validation_errors(prompts, sps, match):
    stub = Engine.__new__(Engine)   # _prepare needs no worker
    stub._closed, stub._dead, stub.tokenizer = False, None, None
    stub._info = {"vocab_size": VOCAB, "context_length": CTX}
    with pytest.raises(EngineError, match=match):
        stub._prepare(None, sps, prompts, False, False, None, None, None)



def test_a_call_racing_a_worker_crash_fails_instead_of_hanging():
    """The worker crashed (the receiver ran ``_fail_all``) while a call was in ``_prepare`` (tokenizing and validating:
    long for a large batch). Its sink, registered after ``_fail_all``, was never answered: the call hung forever."""
    import itertools
    import queue
    import threading

    stub = Engine.__new__(Engine)   # no worker: _fail_all plays the receiver thread
    stub._closed, stub._dead, stub.tokenizer = False, None, None
    stub._info = {"vocab_size": VOCAB, "context_length": CTX}
    stub._lock, stub._sinks, stub._replies, stub._in = threading.Lock(), {}, {}, queue.Queue()
    stub._tokens = itertools.count()
    prepare = stub._prepare

    def prepare_then_crash(*args):
        out = prepare(*args)
        stub._fail_all("the sglc worker crashed")
        return out

    stub._prepare = prepare_then_crash
    got: list = []

    def call():
        try:
            stub.generate(input_ids=[1, 2, 3], sampling_params=GREEDY)
        except EngineUnavailable as e:
            got.append(e)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(timeout=5)
    assert got and "crashed" in str(got[0])
    assert not stub._sinks and stub._in.empty()   # nothing was sent to the dead worker
    with pytest.raises(EngineUnavailable, match="crashed"):
        stub.metrics()
    stub._closed = True

# -- end to end through a process worker ------------------------------------------------------------

@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=VOCAB, max_position_embeddings=CTX)
    d = tmp_path_factory.mktemp("tiny-llama-ipc")
    transformers.LlamaForCausalLM(cfg).save_pretrained(d, safe_serialization=True)
    with Engine(str(d), skip_tokenizer_init=True, max_total_tokens=POOL, num_threads=1) as e:
        yield e


GREEDY = {"temperature": 0, "max_new_tokens": 3, "ignore_eos": True}


def fewshot(n, seed=0, shared_len=200, own=8):
    rng = random.Random(seed)
    shared = [rng.randrange(VOCAB) for _ in range(shared_len)]
    return [shared + [rng.randrange(VOCAB) for _ in range(own)] for _ in range(n)]


def test_batch_matches_one_by_one(engine):
    ps = fewshot(40)
    outs = engine.generate(input_ids=ps, sampling_params=GREEDY)
    assert [o["index"] for o in outs] == list(range(40))
    for p, o in zip(ps[:6], outs[:6]):
        one = engine.generate(input_ids=p, sampling_params=GREEDY)
        assert one["output_ids"] == o["output_ids"]
        assert o["meta_info"]["prompt_tokens"] == len(p)
    assert sum(o["meta_info"]["cached_tokens"] for o in outs) >= 39 * 190   # the prefix was shared in the pool


def test_n_samples_logprobs_and_per_prompt_starts(engine):
    ps = fewshot(3, seed=1, shared_len=30, own=4)
    outs = engine.generate(input_ids=ps, sampling_params={**GREEDY, "n": 2}, return_logprob=True,
                           logprob_start_len=[0, 30, None], top_logprobs_num=2)
    assert len(outs) == 6 and [o["index"] for o in outs] == list(range(6))
    assert outs[0]["output_ids"] == outs[1]["output_ids"]   # greedy samples agree
    m = [o["meta_info"] for o in outs]
    assert len(m[0]["input_token_logprobs"]) == 34 and len(m[2]["input_token_logprobs"]) == 4
    assert m[4]["input_token_logprobs"] == [] and len(m[4]["output_top_logprobs"][0]) == 2
    assert [t for _, t in m[0]["input_token_logprobs"]] == ps[0]


def test_streaming_batch_and_async(engine):
    ps = fewshot(3, seed=2)
    full = engine.generate(input_ids=ps, sampling_params={**GREEDY, "max_new_tokens": 5})
    got: dict[int, list[int]] = {0: [], 1: [], 2: []}
    finished = []
    for c in engine.generate(input_ids=ps, sampling_params={**GREEDY, "max_new_tokens": 5}, stream=True):
        got[c["index"]] += c["output_ids"]
        if c["finished"]:
            finished.append(c["index"])
    assert sorted(finished) == [0, 1, 2] and [got[i] for i in range(3)] == [o["output_ids"] for o in full]

    async def main():
        a = await engine.async_generate(input_ids=ps, sampling_params={**GREEDY, "max_new_tokens": 5})
        chunks = [c async for c in await engine.async_generate(input_ids=ps[0], stream=True,
                                                                 sampling_params={**GREEDY, "max_new_tokens": 5})]
        return a, chunks

    a, chunks = asyncio.run(main())
    assert [o["output_ids"] for o in a] == [o["output_ids"] for o in full]
    assert [t for c in chunks for t in c["output_ids"]] == full[0]["output_ids"] and chunks[-1]["finished"]


def test_errors_reported_and_nothing_submitted(engine):
    before = engine.metrics()["num_requests_total"]
    ps = fewshot(10, seed=3)
    bad = [list(p) for p in ps]
    bad[7][-1] = VOCAB
    with pytest.raises(EngineError, match="input_ids"):
        engine.generate(input_ids=bad, sampling_params=GREEDY)
    bad[7][-1] = 1.5
    with pytest.raises(EngineError, match="input_ids"):
        engine.generate(input_ids=bad, sampling_params=GREEDY)
    with pytest.raises(EngineError, match="temperature"):
        engine.generate(input_ids=ps, sampling_params=[GREEDY] * 9 + [{"temperature": -1}])
    assert engine.metrics()["num_requests_total"] == before   # a refused call sends nothing
    # a request the worker refuses (prompt + max_new_tokens > the KV pool) still fails its call
    with pytest.raises(EngineError, match="KV pool"):
        engine.generate(input_ids=[ps[0], [1] * 490], sampling_params=[GREEDY, {"max_new_tokens": 10}])
    assert len(engine.generate(input_ids=ps, sampling_params=GREEDY)) == 10   # still serving


def test_abort_one_request_of_a_batch(engine):
    ps = fewshot(3, seed=4, shared_len=16, own=4)
    sp = {"temperature": 0, "max_new_tokens": 200, "ignore_eos": True}
    it = engine.generate(input_ids=ps, sampling_params=[sp, {**GREEDY, "max_new_tokens": 2}, sp], stream=True,
                         rid=["long-a", "short", "long-b"])
    first = next(it)
    engine.abort("long-b")
    last: dict[int, dict] = {first["index"]: first}
    for c in it:
        last[c["index"]] = c
        if c["index"] == 2 and c["finished"]:
            engine.abort("long-a")
    reasons = {i: c["meta_info"]["finish_reason"]["type"] for i, c in last.items()}
    assert reasons == {0: "abort", 1: "length", 2: "abort"}
    m = engine.metrics()
    assert m["num_running_reqs"] == 0 and m["kv_used_tokens"] == m["kv_cached_tokens"]


def test_a_large_call_is_taken_in_by_slices(engine, tmp_path):
    """``Worker.add_batch`` creates ``max_running_requests`` requests at once and one more slice per step (the
    first pass starts after one slice's decoding); the rest count as waiting, every request finishes with the same
    tokens as one-by-one calls, and an abort reaches requests not taken in yet."""
    from runtime.config import RuntimeConfig
    from runtime.worker import Worker

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=VOCAB, max_position_embeddings=CTX)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path, safe_serialization=True)
    w = Worker(RuntimeConfig(model_path=str(tmp_path), skip_tokenizer_init=True, max_total_tokens=POOL,
                             max_running_requests=8, num_threads=1))
    ps = fewshot(30, seed=5, shared_len=20, own=3)
    w.add_batch(encode(ps, GREEDY).message(False, 0, False)[1])
    assert len(w.scheduler.waiting) == 8 and w.metrics()["num_waiting_reqs"] == 30
    done: dict[str, list[int]] = {}
    while w.busy:
        done.update({e["rid"]: e["output_ids"] for e in w.step() if e["finished"]})
    assert sorted(done) == sorted(f"r{i}#0" for i in range(30))
    want = engine.generate(input_ids=ps, sampling_params=GREEDY)
    assert [done[f"r{i}#0"] for i in range(30)] == [o["output_ids"] for o in want]

    w.add_batch(encode(ps, GREEDY).message(False, 0, False)[1])
    aborted = w.abort(None)
    assert len(aborted) == 30 and all(e["meta_info"]["finish_reason"]["type"] == "abort" for e in aborted)
    assert not w.busy and w.flush_cache() and w.metrics()["kv_used_tokens"] == 0


def test_a_call_whose_event_loop_closed_does_not_stop_the_engine(engine):
    """An async call still in flight when its event loop closed (``asyncio.run`` returned): its events have
    nowhere to go. Delivering them raised in the receiver thread, which died: every later call hung."""
    import threading
    import time

    loop = asyncio.new_event_loop()
    sp = {"temperature": 0, "max_new_tokens": 200, "ignore_eos": True}

    async def first_chunk():
        it = await engine.async_generate(input_ids=[1, 2, 3], sampling_params=sp, stream=True, rid="orphan")
        return it, await it.__anext__()

    it, _ = loop.run_until_complete(first_chunk())
    loop.close()   # NOTE: the stream stays referenced (no finalizer aborts it): its tokens keep coming
    deadline = time.monotonic() + 30
    while "orphan#0" in engine._sinks and engine._receiver.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine._receiver.is_alive()
    got: list = []
    t = threading.Thread(target=lambda: got.append(engine.generate(input_ids=[4, 5], sampling_params=GREEDY)),
                         daemon=True)
    t.start()
    t.join(timeout=30)
    assert got and len(got[0]["output_ids"]) == 3
    del it
