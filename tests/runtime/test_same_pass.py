"""Same-pass prefix sharing (Scheduler._share_now) end to end on the CPU torch backend: fork-like prompts sent in
one call run in one prefill pass — each group's first request computes the shared head, the others attend to its
K/V in the same pass — and every token is the greedy choice of a reference Engine without the radix cache."""
from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gpu"))
from gpu_helpers import assert_greedy, write_tiny_config


def test_branches_share_their_head_within_one_pass(tmp_path):
    from runtime.engine import Engine

    rng = random.Random(3)
    prompts = []
    for head_len, branches in ((120, 6), (70, 4)):
        head = [rng.randrange(1, 512) for _ in range(head_len)]
        prompts += [head + [rng.randrange(1, 512) for _ in range(rng.randint(1, 12))] for _ in range(branches)]
    prompts += [[rng.randrange(1, 512) for _ in range(rng.randint(20, 60))] for _ in range(2)]   # loners
    kw = {"model_path": write_tiny_config(tmp_path), "load_format": "dummy", "device": "cpu", "dtype": "float32",
          "skip_tokenizer_init": True, "max_total_tokens": 4096}
    params = {"temperature": 0, "max_new_tokens": 6, "ignore_eos": True}
    with Engine(**kw) as eng:
        outs = eng.generate(input_ids=prompts, sampling_params=params)
        m = eng.metrics()
    assert m["prefill_passes_total"] == 1, m          # twins no longer wait a pass for their head's cache hit
    assert m["cached_tokens_total"] >= 5 * 120 + 3 * 70, m
    with Engine(**kw, disable_radix_cache=True) as ref:
        assert_greedy(ref, prompts, outs)
