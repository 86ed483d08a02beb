"""ModelRunner.warmup: the start-up passes (run on CUDA before the first request) write only the pool's scratch
slot and take no slot from the allocator. Checked on CPU with the torch backend on a tiny random Llama."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from runtime.forward_batch import ForwardMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gpu"))
from gpu_helpers import make_runner, randomize_, write_tiny_config


def test_warmup_writes_only_the_scratch_slot(tmp_path):
    runner = make_runner(write_tiny_config(tmp_path), "cpu", "torch", tokens=512)
    randomize_(runner.model)
    pool = runner.kv_pool
    s = pool.scratch_slot
    before = [b.clone() for b in pool.k_buffer + pool.v_buffer]
    used = pool.allocator.used
    calls = []
    orig = runner.forward
    runner.forward = lambda fb: calls.append((fb.extend_lens_cpu, fb.prefix_lens_cpu, fb.mode)) or orig(fb)
    runner.warmup(num_tokens=100, chunk=48)
    # the largest prefill in chunks, a prefix-heavy pass with two decode rows, many prefix-heavy requests, and
    # (no CUDA graphs here to run the decode kernels at capture) an eager decode pass
    E, D = ForwardMode.EXTEND, ForwardMode.DECODE
    assert calls[0] == ([48, 48, 4], [0, 0, 0], E)
    ctx = min(1024, runner.context_length - 64)
    assert calls[1] == ([64] * 4 + [1] * 2, [ctx] * 6, E)
    assert calls[2] == ([64] * 32, [min(256, ctx)] * 32, E)
    assert calls[3] == ([1] * 8, [ctx] * 8, D) and len(calls) == 4
    assert pool.allocator.used == used
    for old, new in zip(before, pool.k_buffer + pool.v_buffer):
        assert torch.equal(old[:s], new[:s])          # no live slot touched
        assert not torch.equal(old[s], new[s])        # the passes really stored K/V (into the scratch slot)
