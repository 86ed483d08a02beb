"""Overlap scheduling on a real GPU, where step N+1 really is queued while step N runs: every token the
overlapped Engine emits is the greedy choice of the model given the tokens before it (re-scored by a
synchronous Engine), for a batch that mixes lengths, CUDA-graph sizes and requests that disable the
look-ahead (penalties); and no KV is left behind."""
from __future__ import annotations

import random

import pytest
from gpu_helpers import assert_greedy, write_tiny_model

pytestmark = pytest.mark.gpu


def test_overlap_tokens_are_greedy_and_kv_is_freed(cuda_only, tmp_path):
    from runtime.engine import Engine

    model_dir = write_tiny_model(tmp_path)   # peaky weights: a wrong token is far from the greedy one
    kw = {"model_path": model_dir, "device": "cuda", "dtype": "float32",
          "skip_tokenizer_init": True, "max_total_tokens": 60000, "attention_backend": "triton"}
    rng = random.Random(0)
    prompts = [[rng.randrange(512) for _ in range(rng.randint(3, 400))] for _ in range(80)]
    params = [{"temperature": 0, "max_new_tokens": rng.randint(1, 48), "ignore_eos": True,
               **({"frequency_penalty": 0.3} if i % 9 == 0 else {})} for i in range(len(prompts))]
    with Engine(**kw, overlap_schedule="on") as eng:
        outs = eng.generate(input_ids=prompts, sampling_params=params)
        assert eng.flush_cache()
        assert eng.metrics()["kv_used_tokens"] == 0
    assert [len(o["output_ids"]) for o in outs] == [p["max_new_tokens"] for p in params]
    with Engine(**kw, overlap_schedule="off") as ref:
        assert_greedy(ref, prompts, outs, params)


def test_decode_batches_past_512_rows_replay_graphs(cuda_only, tmp_path):
    """The decode graphs follow the running cap (here 640: past the old 512 limit); a batch of 600 rows replays
    the 608-row graph, padded, and every token is still the greedy one."""
    from runtime.engine import Engine

    model_dir = write_tiny_model(tmp_path)
    kw = {"model_path": model_dir, "device": "cuda", "dtype": "float32", "skip_tokenizer_init": True,
          "max_total_tokens": 60000, "attention_backend": "triton", "max_running_requests": 640}
    rng = random.Random(1)
    prompts = [[rng.randrange(512) for _ in range(rng.randint(3, 40))] for _ in range(600)]
    params = {"temperature": 0, "max_new_tokens": 6, "ignore_eos": True}
    with Engine(**kw) as eng:
        assert eng.model_info()["cuda_graph_max_bs"] == 640
        outs = eng.generate(input_ids=prompts, sampling_params=params)
    assert all(len(o["output_ids"]) == 6 for o in outs)
    with Engine(**kw, overlap_schedule="off", disable_cuda_graph=True) as ref:
        assert ref.model_info()["cuda_graph_max_bs"] == 0
        assert_greedy(ref, prompts, outs)
