"""The FlashInfer backend's host side, on the CPU, against a recording stand-in for ``flashinfer``: which decode
kernel it asks for (tensor cores from a GQA group of 4 up: FlashInfer's CUDA-core decode has no kernel for groups
5, 6, 7), what it plans (page-size-1 CSR offsets from the host lengths), and the errors it gives instead of
failing inside FlashInfer. The kernels themselves are checked on the GPU (tests/gpu/test_model_parity.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from runtime.attention import create_attention_backend
from runtime.attention.base import AttentionLayer
from runtime.errors import EngineError
from runtime.forward_batch import ForwardBatch, ForwardMode
from runtime.mem.kv_pool import KVPool


class _Wrapper:
    def __init__(self, log, kind, workspace, layout, **kw):
        self.log, self.kind, self.kw = log, kind, kw
        self.plans: list = []
        self.runs = 0
        log.append((kind, "new", kw))

    def plan(self, *args, **kw):
        buf = self.kw.get("paged_kv_indices_buffer")
        if buf is not None and args[1].numel() > buf.numel():   # as FlashInfer's plan checks in graph mode
            raise ValueError("The size of indices should be less than or equal to the allocated buffer")
        self.log.append((self.kind, "plan", args, kw))
        self.plans.append((args, kw))

    def reset_workspace_buffer(self, float_ws, int_ws):
        self.int_ws = int_ws

    def run(self, q, cache):
        self.runs += 1
        return torch.zeros_like(q)


@pytest.fixture
def fake_flashinfer(flashinfer_standin):
    log: list = []
    flashinfer_standin(lambda *a, **kw: _Wrapper(log, "decode", *a, **kw),
                       lambda *a, **kw: _Wrapper(log, "prefill", *a, **kw), lambda *a: None)
    return log


def _batch(mode, prefix, extend):
    n = sum(p + e for p, e in zip(prefix, extend))
    z = torch.zeros(0, dtype=torch.int64)
    return ForwardBatch(mode=mode, input_ids=z, positions=z, out_cache_loc=z, qo_indptr=z, kv_indptr=z,
                        kv_indices=torch.arange(n, dtype=torch.int64), prefix_lens=z, seq_lens=z,
                        extend_lens_cpu=list(extend), prefix_lens_cpu=list(prefix))


@pytest.mark.parametrize("heads,kv_heads,tensor_cores", [(28, 4, True), (32, 8, True), (12, 2, True),
                                                         (8, 4, False), (4, 4, False)])
def test_decode_kernel_follows_the_gqa_group(fake_flashinfer, heads, kv_heads, tensor_cores):
    pool = KVPool(64, 2, kv_heads, 16, torch.bfloat16, "cpu")
    be = create_attention_backend("flashinfer", pool, num_heads=heads)
    assert [e[0] for e in fake_flashinfer] == ["prefill"]          # no decode wrapper before the head count
    be.init_forward_metadata(_batch(ForwardMode.DECODE, [5, 9], [1, 1]))
    be.init_forward_metadata(_batch(ForwardMode.DECODE, [6, 10], [1, 1]))
    made = [e for e in fake_flashinfer if e[:2] == ("decode", "new")]
    assert len(made) == 1 and made[0][2]["use_tensor_cores"] is tensor_cores


def test_plans_page_size_one_offsets(fake_flashinfer):
    pool = KVPool(64, 2, 2, 16, torch.float16, "cpu")
    be = create_attention_backend("flashinfer", pool, num_heads=8)
    be.init_forward_metadata(_batch(ForwardMode.EXTEND, [0, 7, 3], [4, 2, 3]))
    kind, _, args, kw = fake_flashinfer[-1]
    qo_indptr, kv_indptr, indices, last, heads, kv_heads, head_dim, page = args
    assert kind == "prefill" and kw["causal"] is True and kw["q_data_type"] == torch.float16
    assert qo_indptr.tolist() == [0, 4, 6, 9] and kv_indptr.tolist() == [0, 4, 13, 19]
    assert indices.dtype == torch.int32 and indices.tolist() == list(range(19))
    assert last.tolist() == [1, 1, 1] and (heads, kv_heads, head_dim, page) == (8, 2, 16, 1)
    assert kw["sm_scale"] == pytest.approx(16 ** -0.5)
    be.init_forward_metadata(_batch(ForwardMode.DECODE, [3, 0], [1, 1]))
    kind, _, args, kw = fake_flashinfer[-1]
    assert kind == "decode" and args[0].tolist() == [0, 4, 5] and kw["pos_encoding_mode"] == "NONE"


def test_clear_errors(fake_flashinfer, monkeypatch):
    with pytest.raises(EngineError, match="float16/bfloat16"):
        create_attention_backend("flashinfer", KVPool(8, 1, 2, 16, torch.float32, "cpu"), num_heads=4)
    import runtime.attention.flashinfer_backend as fib

    monkeypatch.setattr(fib, "flashinfer", None)
    with pytest.raises(EngineError, match="needs the `flashinfer` package"):
        create_attention_backend("flashinfer", KVPool(8, 1, 2, 16, torch.bfloat16, "cpu"), num_heads=4)
    # every backend takes the head count the ModelRunner passes
    assert create_attention_backend("torch", KVPool(8, 1, 2, 16, torch.float32, "cpu"), num_heads=4)


def test_model_runner_passes_the_head_count(fake_flashinfer, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gpu"))
    from gpu_helpers import make_runner, write_tiny_config

    runner = make_runner(write_tiny_config(tmp_path, num_attention_heads=16, num_key_value_heads=2), "cpu",
                         "flashinfer", dtype="bfloat16", tokens=256)
    assert runner.attn_backend.num_heads == 16 and runner.attn_backend.decode_wrapper is not None
    assert [e[2]["use_tensor_cores"] for e in fake_flashinfer if e[:2] == ("decode", "new")] == [True]


def _static_batch(bs: int, max_kv: int, scratch: int) -> ForwardBatch:
    """The CUDA-graph runner's static decode batch: row i reads kv_indices[i]; every slot is the scratch slot."""
    z = torch.zeros(bs, dtype=torch.int64)
    return ForwardBatch(mode=ForwardMode.DECODE, input_ids=z, positions=z, out_cache_loc=z,
                        qo_indptr=torch.arange(bs + 1, dtype=torch.int32), kv_indptr=torch.arange(bs + 1, dtype=torch.int32),
                        kv_indices=torch.full((max_kv,), scratch, dtype=torch.int64), prefix_lens=z, seq_lens=z,
                        extend_lens_cpu=[1] * bs, prefix_lens_cpu=[0] * bs)


def test_decode_graphs_get_their_own_wrapper_planned_before_each_replay(fake_flashinfer):
    pool = KVPool(64, 2, 2, 16, torch.bfloat16, "cpu")
    be = create_attention_backend("flashinfer", pool, num_heads=8)
    assert be.supports_cuda_graph
    scratch = pool.scratch_slot
    graphs = {bs: _static_batch(bs, 32, scratch) for bs in (4, 2)}
    for bs, static in graphs.items():
        be.prepare_graph(static, bs)
    w4, w2 = be.graph_wrappers[4], be.graph_wrappers[2]
    assert w4 is not w2 and w4 is not be.decode_wrapper
    kw = w4.kw
    assert kw["use_cuda_graph"] and kw["use_tensor_cores"] is True
    assert kw["paged_kv_indptr_buffer"].shape == (5,) and kw["paged_kv_last_page_len_buffer"].tolist() == [1] * 4
    # one index buffer (int32, the runner's capacity) and one plan workspace for every graph wrapper
    assert kw["paged_kv_indices_buffer"] is w2.kw["paged_kv_indices_buffer"]
    assert kw["paged_kv_indices_buffer"].dtype == torch.int32 and kw["paged_kv_indices_buffer"].numel() == 32
    assert w4.int_ws is w2.int_ws
    (indptr, indices, last, *_), _ = w4.plans[-1]
    assert indptr.tolist() == [0, 1, 2, 3, 4] and indices.tolist() == [scratch] * 4 and last.tolist() == [1] * 4
    # the capture's (and warm-up's) metadata call and forward plan nothing and run the graph wrapper
    plans = len(fake_flashinfer)
    be.init_forward_metadata(graphs[4])
    layer = AttentionLayer(0, 8, 2, 16, 16 ** -0.5)
    q = torch.zeros(4, 8 * 16, dtype=torch.bfloat16)
    out = be.forward(q, None, None, layer, graphs[4])
    assert len(fake_flashinfer) == plans and w4.runs == 1 and out.shape == (4, 8, 16)
    # a replay of three real rows (prefixes 5, 0 and 2) in the 4-row graph: the padding row reads the scratch slot
    real = _batch(ForwardMode.DECODE, [5, 0, 2], [1, 1, 1])
    # as CudaGraphRunner.replay does first: the batch's indices into the graph's buffer, the padding row's scratch
    # slot after them
    graphs[4].kv_indices[:10].copy_(real.kv_indices)
    graphs[4].kv_indices[10:11].fill_(scratch)
    be.prepare_replay(real, graphs[4], 4)
    (indptr, indices, last, heads, kv_heads, head_dim, page), pkw = w4.plans[-1]
    assert indptr.tolist() == [0, 6, 7, 10, 11] and last.tolist() == [1] * 4
    assert indices.dtype == torch.int32 and indices.tolist() == list(range(10)) + [scratch]
    assert (heads, kv_heads, head_dim, page) == (8, 2, 16, 1) and pkw["sm_scale"] == pytest.approx(16 ** -0.5)
    assert len(w2.plans) == 1                     # the other size is not touched
    with pytest.raises(EngineError, match="softmax scale"):
        be.forward(q, None, None, AttentionLayer(0, 8, 2, 16, 0.5), graphs[4])


def test_a_later_graph_runner_with_a_larger_index_buffer_gets_a_buffer_that_fits(fake_flashinfer):
    """bench_latency.py makes one CudaGraphRunner per batch size on one backend, each with an index buffer of
    max_bs x context: the second, larger one must not plan into the first one's smaller buffer (FlashInfer raised
    'The size of indices should be less than or equal to the allocated buffer' on the H100)."""
    pool = KVPool(64, 2, 2, 16, torch.bfloat16, "cpu")
    be = create_attention_backend("flashinfer", pool, num_heads=8)
    scratch = pool.scratch_slot
    small, large = _static_batch(1, 8, scratch), _static_batch(4, 32, scratch)
    be.prepare_graph(small, 1)
    be.prepare_graph(large, 4)
    w = be.graph_wrappers[4]
    assert w.kw["paged_kv_indices_buffer"].numel() == 32
    assert w.int_ws is be.graph_wrappers[1].int_ws     # the plan workspace is still shared
    real = _batch(ForwardMode.DECODE, [9, 6, 2, 7], [1, 1, 1, 1])     # 28 context tokens, more than 8
    large.kv_indices[:28].copy_(real.kv_indices)
    be.prepare_replay(real, large, 4)
    (indptr, indices, *_), _ = w.plans[-1]
    assert indptr.tolist() == [0, 10, 17, 20, 28] and indices.tolist() == list(range(28))


def test_mixed_pass_sends_its_decode_rows_to_the_decode_wrapper(fake_flashinfer):
    """Prefill rows [0+4, 7+2], then two decode rows (prefixes 3 and 5, one new token each)."""
    pool = KVPool(64, 2, 2, 16, torch.bfloat16, "cpu")
    be = create_attention_backend("flashinfer", pool, num_heads=8)
    batch = _batch(ForwardMode.EXTEND, [0, 7, 3, 5], [4, 2, 1, 1])
    be.init_forward_metadata(batch)
    pre, dec = be.prefill_wrapper, be.decode_wrapper
    (qo_indptr, kv_indptr, indices, last, *_), kw = pre.plans[-1]
    assert qo_indptr.tolist() == [0, 4, 6] and kv_indptr.tolist() == [0, 4, 13] and kw["causal"] is True
    assert indices.tolist() == list(range(13)) and last.tolist() == [1, 1]
    (kv_indptr, indices, last, *_), _ = dec.plans[-1]
    assert kv_indptr.tolist() == [0, 4, 10] and indices.dtype == torch.int32
    assert indices.tolist() == list(range(13, 23)) and last.tolist() == [1, 1]
    layer = AttentionLayer(0, 8, 2, 16, 16 ** -0.5)
    q = torch.ones(8, 8 * 16, dtype=torch.bfloat16)
    out = be.forward(q, None, None, layer, batch)
    assert out.shape == (8, 8, 16) and (pre.runs, dec.runs) == (1, 1)
    # every row a one-token extend: all of it through the decode wrapper
    only = _batch(ForwardMode.EXTEND, [3, 0], [1, 1])
    be.init_forward_metadata(only)
    assert len(pre.plans) == 1 and dec.plans[-1][0][0].tolist() == [0, 4, 5]
    assert be.forward(q[:2], None, None, layer, only).shape == (2, 8, 16) and (pre.runs, dec.runs) == (1, 2)
