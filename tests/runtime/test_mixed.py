"""Mixed batches (``mixed_chunk``) on a tiny random Llama with the torch backend on CPU: prefill passes that
carry the running requests' decode rows give the same greedy tokens as separate passes, with and without
overlap scheduling; the stats count decode rows as decode tokens; nothing is left in the KV pool."""
from __future__ import annotations

import json
import random

import pytest
import torch

from runtime.config import RuntimeConfig
from runtime.worker import Worker

TINY = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128, "intermediate_size": 256,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
    "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
    "torch_dtype": "float32",
}
CHUNK, BUDGET = 48, 64


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("tiny_llama")
    (d / "config.json").write_text(json.dumps(TINY))
    return str(d)


@torch.no_grad()
def _randomize(model: torch.nn.Module) -> None:
    """Peaky random weights (large greedy margins), the same for every worker."""
    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        w = 1.0 + 0.1 * torch.randn(p.shape, generator=g) if "norm" in name else \
            torch.randn(p.shape, generator=g) * (1.5 / p.shape[-1] ** 0.5)
        p.copy_(w.to(p.dtype))


def _serve(model_dir: str, mixed: str, overlap: str):
    """Requests arriving while others decode (fixed arrival steps); returns outputs, stats, batches, worker."""
    cfg = RuntimeConfig.from_kwargs(
        model_path=model_dir, load_format="dummy", device="cpu", dtype="float32", skip_tokenizer_init=True,
        attention_backend="torch", max_total_tokens=4096, max_running_requests=12, chunked_prefill_size=CHUNK,
        max_prefill_tokens=BUDGET, mixed_chunk=mixed, overlap_schedule=overlap)
    w = Worker(cfg)
    _randomize(w.runner.model)
    batches = []
    ex = w.scheduler.executor
    launch = ex.launch

    def spy(sb, prev=None):
        batches.append((sb.mixed, [len(e.new_ids) for e in sb.entries], len({id(e.req) for e in sb.entries})))
        return launch(sb, prev)

    ex.launch = spy
    rng = random.Random(1)
    reqs = [{"rid": f"r{i}", "input_ids": [rng.randrange(1, 256) for _ in range(rng.randint(2, 100))],
             "sampling_params": {"temperature": 0, "max_new_tokens": rng.randint(1, 24), "ignore_eos": True}}
            for i in range(24)]
    outs: dict[str, list[int]] = {}
    step = 0
    while reqs or w.busy:
        if reqs and step % 3 == 0:
            w.add_requests([reqs.pop(0)] if step else [reqs.pop(0), reqs.pop(0)])
        for ev in w.step():
            outs.setdefault(ev["rid"], []).extend(ev["output_ids"])
            assert ev["error"] is None
        step += 1
    assert w.flush_cache()
    assert w.metrics()["kv_used_tokens"] == 0
    return outs, dict(w.scheduler.stats), batches, w


@pytest.fixture(scope="module")
def reference(model_dir):
    return _serve(model_dir, "off", "off")


@pytest.mark.parametrize("overlap", ["off", "on"])
def test_mixed_gives_the_same_tokens(model_dir, reference, overlap):
    ref_out, ref_stats, ref_batches, _ = reference
    assert ref_stats["mixed_passes"] == 0 and all(m == 0 for m, _, _ in ref_batches)
    outs, stats, batches, w = _serve(model_dir, "on", overlap)
    assert w.scheduler.mixed and outs == ref_out
    assert stats["mixed_passes"] > 3
    for mixed, lens, distinct in batches:
        assert distinct == len(lens)                          # no request twice in one pass
        if mixed:
            assert all(n == 1 for n in lens[-mixed:]) and sum(lens) <= BUDGET
            assert max(lens[:-mixed]) <= CHUNK - mixed
    # every output token after a request's first comes from a decode row (ignore_eos: no extra look-ahead)
    assert stats["decode_tokens"] == sum(len(o) - 1 for o in outs.values()) == ref_stats["decode_tokens"]
    assert stats["prefill_tokens"] + stats["decode_tokens"] == sum(sum(lens) for _, lens, _ in batches)


def test_mixed_chunk_option():
    from runtime.config import use_mixed_chunk
    from runtime.errors import EngineError

    assert use_mixed_chunk(RuntimeConfig(), "cuda") and not use_mixed_chunk(RuntimeConfig(), "cpu")
    assert use_mixed_chunk(RuntimeConfig(mixed_chunk="on"), "cpu")
    assert not use_mixed_chunk(RuntimeConfig(mixed_chunk="off"), "cuda:0")
    with pytest.raises(EngineError, match="mixed_chunk"):
        RuntimeConfig.from_kwargs(mixed_chunk="sometimes")


def test_index_arrays_start_16_byte_aligned(model_dir):
    """Triton compiles a kernel variant per pattern of 16-byte-aligned pointer arguments: the int32 arrays a
    pass hands the attention kernels must start aligned whatever the batch (else a server compiles new
    variants mid-serving). They are views into one upload, so their offset into it is what varies."""
    from runtime.host_copy import aligned, h2d_parts

    rng = random.Random(0)
    for _ in range(50):
        parts = [[rng.randrange(100) for _ in range(rng.randrange(7))] for _ in range(rng.randrange(1, 9))]
        flat, starts = h2d_parts(parts, "cpu")
        assert all(s % 4 == 0 for s in starts)
        assert [flat[s:s + len(p)].tolist() for s, p in zip(starts, parts)] == parts
    x = torch.arange(9, dtype=torch.int32)
    assert aligned(x) is x and aligned(x[2:]).tolist() == x[2:].tolist()

    offsets = []
    from runtime.model_runner import ModelRunner

    forward = ModelRunner.forward

    def spy(self, batch):
        for t in (batch.qo_indptr, batch.kv_indptr, batch.prefix_lens, batch.seq_lens, batch.kv_indices):
            offsets.append(t.storage_offset() * t.element_size() % 16)
        return forward(self, batch)

    ModelRunner.forward = spy
    try:
        _serve(model_dir, "on", "off")
    finally:
        ModelRunner.forward = forward
    assert len(offsets) > 50 and set(offsets) == {0}


def test_metrics_do_not_walk_the_frozen_objects(model_dir, monkeypatch):
    """gc.get_freeze_count() walks the frozen list (~20 ms for a worker process's ~200k start-up objects): metrics()
    (a Prometheus scrape) stalled the scheduler that long. The count is taken once, when the worker freezes."""
    import gc

    cfg = RuntimeConfig.from_kwargs(model_path=model_dir, load_format="dummy", device="cpu", dtype="float32",
                                    skip_tokenizer_init=True, attention_backend="torch", max_total_tokens=256)
    w = Worker(cfg)

    def walk():
        raise AssertionError("metrics() walked the frozen objects")

    monkeypatch.setattr(gc, "get_freeze_count", walk)
    assert w.metrics()["gc_frozen_objects"] == 0   # a worker built in this process froze nothing
