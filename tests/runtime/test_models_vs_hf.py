"""Greedy continuations identical to Hugging Face transformers on tiny random configs of every
registered architecture: one at a time, batched, with a shared prefix hitting the radix cache, and
with chunked prefill."""
from __future__ import annotations

import pytest
import torch
import transformers

from runtime.engine import Engine

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False}

ARCHS = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
    "llama3-rope": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                    {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                     "rope_theta": 500000.0}),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, {"sliding_window": None}),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {"tie_word_embeddings": True}),
}

MAX_NEW = 12


@pytest.fixture(scope="module", params=sorted(ARCHS))
def model_dir(request, tmp_path_factory):
    cfg_cls, model_cls, extra = ARCHS[request.param]
    torch.manual_seed(0)
    cfg = cfg_cls(**{**TINY, **extra})
    model = model_cls(cfg).eval()
    d = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(d, safe_serialization=True)
    return d, model


def hf_greedy(model, ids: list[int], n: int = MAX_NEW) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=0,
                             eos_token_id=None)
    return out[0, len(ids):].tolist()


def prompts(seed: int, k: int, shared: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    pre = torch.randint(3, 256, (shared,), generator=g).tolist()
    return [pre + torch.randint(3, 256, (int(torch.randint(3, 40, (1,), generator=g)),), generator=g).tolist()
            for _ in range(k)]


def run(engine: Engine, ps: list[list[int]]) -> list[list[int]]:
    outs = engine.generate(input_ids=ps, sampling_params={"temperature": 0, "max_new_tokens": MAX_NEW,
                                                          "ignore_eos": True})
    return [o["output_ids"] for o in outs]


def test_greedy_matches_hf(model_dir):
    d, hf = model_dir
    with Engine(str(d), skip_tokenizer_init=True, worker_mode="thread") as eng:
        ps = prompts(1, 4)
        # one at a time
        for p in ps[:2]:
            out = eng.generate(input_ids=p, sampling_params={"temperature": 0, "max_new_tokens": MAX_NEW,
                                                             "ignore_eos": True})
            assert out["output_ids"] == hf_greedy(hf, p)
        # batched
        assert run(eng, ps) == [hf_greedy(hf, p) for p in ps]
        # shared prefix: the second wave hits the radix cache
        shared = prompts(2, 4, shared=48)
        eng.generate(input_ids=shared[0], sampling_params={"max_new_tokens": 1})
        outs = eng.generate(input_ids=shared, sampling_params={"temperature": 0, "max_new_tokens": MAX_NEW,
                                                               "ignore_eos": True})
        assert all(o["meta_info"]["cached_tokens"] >= 48 for o in outs)
        assert [o["output_ids"] for o in outs] == [hf_greedy(hf, p) for p in shared]


def test_logprobs_match_hf(model_dir):
    """Prompt and output logprobs agree with transformers to float32 precision (catches rope/norm bugs
    that greedy argmax can hide)."""
    d, hf = model_dir
    p = prompts(4, 1, shared=100)[0]
    with Engine(str(d), skip_tokenizer_init=True, worker_mode="thread") as eng:
        out = eng.generate(input_ids=p, sampling_params={"temperature": 0, "max_new_tokens": 1},
                           return_logprob=True, logprob_start_len=1)
    with torch.no_grad():
        ref = torch.log_softmax(hf(torch.tensor([p])).logits[0].float(), -1)
    want = [float(ref[i - 1, p[i]]) for i in range(1, len(p))] + [float(ref[-1].max())]
    got = [lp for lp, _ in out["meta_info"]["input_token_logprobs"] + out["meta_info"]["output_token_logprobs"]]
    assert len(got) == len(want)
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4


def test_chunked_prefill_matches_hf(model_dir):
    d, hf = model_dir
    with Engine(str(d), skip_tokenizer_init=True, worker_mode="thread", chunked_prefill_size=16,
                max_prefill_tokens=16, disable_radix_cache=True) as eng:
        ps = prompts(3, 3, shared=60)
        assert run(eng, ps) == [hf_greedy(hf, p) for p in ps]


def test_finishes_joins_and_retraction_match_hf(model_dir):
    """Requests finishing at different steps, joining while others decode, and retracted for lack of KV
    (a 110-token pool) still produce HF's greedy tokens: the decode staging and the scheduler's KV
    bookkeeping are exact."""
    d, hf = model_dir
    ps = prompts(5, 6, shared=20)
    lens = [3, 40, 8, 45, 1, 30]   # NOTE: outgrow the pool even with the admission reserve: retractions
    with Engine(str(d), skip_tokenizer_init=True, worker_mode="thread", max_total_tokens=110,
                max_prefill_tokens=64, chunked_prefill_size=32) as eng:
        outs = eng.generate(input_ids=ps, sampling_params=[{"temperature": 0, "max_new_tokens": n,
                                                             "ignore_eos": True} for n in lens])
        assert eng.metrics()["retractions_total"] > 0
    assert [o["output_ids"] for o in outs] == [hf_greedy(hf, p, n) for p, n in zip(ps, lens)]
