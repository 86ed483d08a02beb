"""Shared-prefix (cascade) decode attention end to end on a GPU: fork-like batches (groups of branches
sharing a long prompt, plus loners) through the Engine, with CUDA graphs and overlap on and off. Every
emitted token must be the greedy choice of a reference Engine without the cascade stage (re-scored), the
cascade stage must really have run, and no KV may be left behind."""
from __future__ import annotations

import random

import pytest
from gpu_helpers import assert_greedy, write_tiny_model

pytestmark = pytest.mark.gpu


def _fork_prompts(rng: random.Random) -> list[list[int]]:
    prompts = []
    for plen, branches in ((300, 20), (90, 9), (700, 3)):
        head = [rng.randrange(512) for _ in range(plen)]
        prompts += [head + [rng.randrange(512) for _ in range(rng.randint(1, 40))] for _ in range(branches)]
    prompts += [[rng.randrange(512) for _ in range(rng.randint(5, 200))] for _ in range(6)]   # loners
    return prompts


@pytest.mark.parametrize("graphs,overlap", [(True, "on"), (False, "off")])
def test_cascade_tokens_are_greedy(cuda_only, tmp_path, graphs, overlap):
    from runtime.engine import Engine

    model_dir = write_tiny_model(tmp_path)   # peaky weights: a wrong token is far from the greedy one
    kw = {"model_path": model_dir, "device": "cuda", "dtype": "float32",
          "skip_tokenizer_init": True, "max_total_tokens": 60000, "attention_backend": "triton"}
    rng = random.Random(1)
    prompts = _fork_prompts(rng)
    params = [{"temperature": 0, "max_new_tokens": rng.randint(8, 40), "ignore_eos": True} for _ in prompts]
    with Engine(**kw, overlap_schedule=overlap, disable_cuda_graph=not graphs) as eng:
        outs = eng.generate(input_ids=prompts, sampling_params=params)
        m = eng.metrics()
        assert m["cascade_rows_total"] > 0.5 * m["decode_tokens_total"], m
        assert eng.flush_cache()
        assert eng.metrics()["kv_used_tokens"] == 0
    assert [len(o["output_ids"]) for o in outs] == [p["max_new_tokens"] for p in params]
    with Engine(**kw, overlap_schedule="off", disable_cuda_graph=True, disable_cascade_attention=True) as ref:
        assert ref.metrics()["cascade_rows_total"] == 0
        assert_greedy(ref, prompts, outs)
