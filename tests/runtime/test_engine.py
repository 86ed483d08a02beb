"""End-to-end on the embedded SmolLM2-135M-Instruct through the in-process Engine (worker process)."""
from __future__ import annotations

import asyncio
import math

import pytest
import torch

from runtime.engine import Engine
from runtime.errors import EngineError
from runtime.sampling_params import SamplingParams

GREEDY = {"temperature": 0, "max_new_tokens": 8}


@pytest.fixture(scope="module")
def engine():
    with Engine(max_total_tokens=8192) as e:
        yield e


def test_paris(engine):
    out = engine.generate("The capital of France is", GREEDY)
    assert "Paris" in out["text"]
    m = out["meta_info"]
    assert m["prompt_tokens"] == 5 and m["completion_tokens"] == 8
    assert m["finish_reason"] == {"type": "length", "length": 8}


def test_weights_match_transformers_on_converted_checkpoint(engine):
    """Our GGUF conversion + model give the same next-token logits as transformers on those weights."""
    from transformers import AutoModelForCausalLM

    from runtime.model_loader import gguf_to_hf_dir

    hf = AutoModelForCausalLM.from_pretrained(gguf_to_hf_dir(engine.model_info()["model_path"])).eval()
    ids = engine.tokenizer.encode("The capital of France is")
    with torch.no_grad():
        ref = torch.log_softmax(hf(torch.tensor([ids])).logits[0, -1].float(), -1)
    out = engine.generate(input_ids=ids, sampling_params={"max_new_tokens": 1, "temperature": 0},
                          return_logprob=True, top_logprobs_num=5)
    top = out["meta_info"]["output_top_logprobs"][0]
    assert [t for _, t in top] == ref.topk(5).indices.tolist()
    assert all(abs(lp - float(ref[t])) < 1e-3 for lp, t in top)


def test_stream_joins_to_full_text(engine):
    full = engine.generate("List three colors:", {**GREEDY, "max_new_tokens": 16})
    chunks = list(engine.generate("List three colors:", {**GREEDY, "max_new_tokens": 16}, stream=True))
    assert len(chunks) > 1 and chunks[-1]["finished"]
    assert "".join(c["text"] for c in chunks) == full["text"]
    assert [t for c in chunks for t in c["output_ids"]] == full["output_ids"]


def test_stream_with_a_stop_string_joins_to_the_trimmed_text(engine):
    """A stop string of several tokens: the stream holds back a tail that may begin it (" of" of " of France"),
    so the joined pieces equal the non-streamed, trimmed text (they used to keep " of")."""
    prompt, params = "Q: What is the capital of France?\nA:", {**GREEDY, "max_new_tokens": 12, "stop": [" of France"]}
    full = engine.generate(prompt, params)
    assert full["meta_info"]["finish_reason"] == {"type": "stop", "matched": " of France"}
    pieces = [c["text"] for c in engine.generate(prompt, params, stream=True)]
    assert "".join(pieces) == full["text"] and not full["text"].endswith(" of")


def test_partial_stop_tails():
    from runtime.output import _partial_stop

    assert _partial_stop(" The capital of", [" of France"]) == 3
    assert _partial_stop(" The capital o", [" of France", "x"]) == 2
    assert _partial_stop(" The capital", [" of France"]) == 0
    assert _partial_stop("ab", ["abc", "b"]) == 2      # (a whole stop is not a partial one: "b" is matched elsewhere)
    assert _partial_stop("", ["abc"]) == 0


class _CharTokenizer:
    """Token id = a character's code point; 0 is EOS (special: decodes to nothing)."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join("" if i == 0 else chr(i) for i in ids)


@pytest.mark.parametrize("text, params, want", [
    ("ab.cd.ef", {"stop": ["."], "min_new_tokens": 5}, "ab.cd"),   # the "." before min_new_tokens stays
    ("abc", {"stop": ["zz"], "min_new_tokens": 4}, "abc"),          # EOS at exactly min_new_tokens
    ("abz", {"stop": ["zz"], "max_new_tokens": 3}, "abz"),          # a held "z" is released at the length limit
    ("abz", {"stop": ["zz"]}, "abz"),                               # ... and at EOS
])
@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings_with_min_tokens_streamed_and_not(text, params, want, stream):
    """Non-streamed text with stop strings and min_new_tokens: a stop written before min_new_tokens cut it (to
    "ab"), and EOS at exactly min_new_tokens returned ""; the streamed pieces join to the same text."""
    from runtime.output import OutputProcessor
    from runtime.scheduler.request import Req

    out = OutputProcessor(_CharTokenizer(), {0})
    req = Req(rid="r", input_ids=[1], sampling_params=SamplingParams.from_dict({"max_new_tokens": 20, **params}),
              stream=stream)
    pieces = []
    for t in [ord(c) for c in text] + [0]:
        req.output_ids.append(t)
        out.check_finish(req)
        ev = out.event(req)
        pieces.append(ev["text"] if ev else "")
        if req.finished:
            break
    assert req.finished and req.text == want and "".join(pieces) == want


def test_async_generate_and_stream(engine):
    async def main():
        a = await engine.async_generate("The capital of France is", GREEDY)
        pieces = [c["text"] async for c in await engine.async_generate("The capital of France is", GREEDY,
                                                                          stream=True)]
        return a, pieces

    a, pieces = asyncio.run(main())
    assert "".join(pieces) == a["text"] and "Paris" in a["text"]


def test_batch_n_and_stop(engine):
    outs = engine.generate(["1, 2, 3,", "The capital of France is"],
                           [{"temperature": 0, "max_new_tokens": 20, "stop": [" 6"]}, GREEDY])
    assert outs[0]["text"] == " 4, 5,"
    assert outs[0]["meta_info"]["finish_reason"] == {"type": "stop", "matched": " 6"}
    samples = engine.generate("Once upon a time", {"temperature": 1.0, "max_new_tokens": 12, "n": 3, "seed": 7})
    assert len(samples) == 3 and [s["index"] for s in samples] == [0, 1, 2]
    assert len({tuple(s["output_ids"]) for s in samples}) > 1  # n samples differ, even when seeded
    again = engine.generate("Once upon a time", {"temperature": 1.0, "max_new_tokens": 12, "n": 3, "seed": 7})
    assert [s["output_ids"] for s in samples] == [s["output_ids"] for s in again]  # seeded: reproducible


def test_logprobs_and_score(engine):
    out = engine.generate("The capital of France is", {"temperature": 0, "max_new_tokens": 3},
                          return_logprob=True, logprob_start_len=0)
    m = out["meta_info"]
    assert len(m["input_token_logprobs"]) == 5 and m["input_token_logprobs"][0][0] is None
    assert all(lp <= 0 for lp, _ in m["input_token_logprobs"][1:] + m["output_token_logprobs"])
    scores = engine.score("The capital of France is", [" Paris", " London", " a banana"])
    assert len(scores) == 3 and scores[2]["num_tokens"] == 2
    assert scores[0]["normalized_logprob"] > scores[1]["normalized_logprob"]
    assert math.isclose(scores[0]["logprob_sum"], sum(scores[0]["token_logprobs"]), rel_tol=1e-6)
    # the prefix was warmed once and reused by every continuation
    assert engine.warm("The capital of France is")["cached_tokens"] >= 4


def test_return_text_in_logprobs_streamed_and_not(engine):
    kw = {"return_logprob": True, "logprob_start_len": 2, "top_logprobs_num": 2, "return_text_in_logprobs": True}
    out = engine.generate("The capital of France is", GREEDY, **kw)
    m = out["meta_info"]
    for key in ("input_token_logprobs", "output_token_logprobs"):
        assert m[key] and all(len(r) == 3 and r[2] == engine.tokenizer.decode([r[1]]) for r in m[key])
    assert all(len(t) == 3 for pos in m["output_top_logprobs"] for t in pos)
    last = list(engine.generate("The capital of France is", GREEDY, stream=True, **kw))[-1]["meta_info"]
    # (the ids and texts; the second run reads the prompt's KV from the cache, so logprobs may differ in the
    # last bits)
    assert [r[1:] for r in last["output_token_logprobs"]] == [r[1:] for r in m["output_token_logprobs"]]


def test_failed_score_releases_its_warm(engine, caplog):
    """A score whose continuations are refused (longer than the context) after its prefix warm was sent releases
    that warm's pin at once (it used to stay pinned until its 30 s TTL), without logging the abort as a failure."""
    assert engine.flush_cache()
    with pytest.raises(EngineError, match="context length"):
        engine.score("The capital of France is", [" x" * 9000])
    engine.generate("Hello", GREEDY)   # NOTE: queued after the warm (and the abort): both are settled by now
    m = engine.metrics()
    assert m["kv_cached_tokens"] - m["kv_evictable_tokens"] == 0, "the warm's pin was released"
    assert "not waited for" not in caplog.text


def test_abort_frees_kv(engine):
    it = engine.generate("Write a long story about a dragon.", {"max_new_tokens": 500, "ignore_eos": True},
                         stream=True, rid="victim")
    next(it)
    engine.abort("victim")
    last = list(it)[-1]
    assert last["meta_info"]["finish_reason"]["type"] == "abort"
    m = engine.metrics()
    assert m["num_running_reqs"] == 0 and m["kv_used_tokens"] == m["kv_cached_tokens"]
    assert m["gc_frozen_objects"] > 10_000   # the process worker froze its start-up objects (SGLC_GC_FREEZE)
    assert engine.flush_cache()
    assert engine.metrics()["kv_free_tokens"] == engine.metrics()["kv_total_tokens"]


@pytest.mark.parametrize("params, field", [
    ({"temperature": -1}, "temperature"), ({"top_p": 1.5}, "top_p"), ({"top_k": 0}, "top_k"),
    ({"max_new_tokens": -1}, "max_new_tokens"), ({"n": 0}, "n"), ({"bogus": 1}, "bogus"),
    ({"regex": "a", "json_schema": "{}"}, "regex/json_schema/ebnf"), ({"stop": [""]}, "stop"),
])
def test_sampling_params_validation(params, field):
    with pytest.raises(EngineError, match=field.replace("/", ".")):
        SamplingParams.from_dict(params)


def test_bad_inputs(engine):
    with pytest.raises(EngineError, match="exactly one"):
        engine.generate()
    with pytest.raises(EngineError, match="context length"):
        engine.generate(input_ids=[1] * 9000)
    with pytest.raises(EngineError, match="input_ids"):
        engine.generate(input_ids=[10**9])
    with pytest.raises(EngineError, match="temperature"):
        engine.generate("hi", {"temperature": -0.5})
    assert "Paris" in engine.generate("The capital of France is", GREEDY)["text"]  # still serving


def test_numpy_numbers_and_0_1_flags_are_accepted():
    import numpy as np

    sp = SamplingParams.from_dict({"seed": np.int64(3), "max_new_tokens": np.int32(5), "temperature": np.float32(0.5),
                                   "ignore_eos": 1, "skip_special_tokens": np.bool_(False),
                                   "stop_token_ids": [np.int64(2)]})
    assert (sp.seed, sp.max_new_tokens, sp.temperature, sp.ignore_eos, sp.skip_special_tokens) == (3, 5, 0.5, True, False)
    assert type(sp.seed) is int and type(sp.temperature) is float and type(sp.stop_token_ids[0]) is int
    for bad, field in [({"skip_special_tokens": "no"}, "skip_special_tokens"), ({"seed": 1.5}, "seed"),
                       ({"ignore_eos": 2}, "ignore_eos"), ({"temperature": "hot"}, "temperature")]:
        with pytest.raises(EngineError, match=field):
            SamplingParams.from_dict(bad)
