"""The FlashInfer backend's glue, end to end on the CPU: a stand-in for ``flashinfer`` computes what its paged
wrappers are documented to compute (page size 1, NHD: each request's query rows are the last of its KV rows,
causal; a decode row attends to all of its KV) with a float32 reference, so the backend's plans (prefill rows on
the prefill wrapper, a mixed pass's decode rows on the decode wrapper, their index slices, the order of the
outputs) must give the torch backend's logits. FlashInfer's kernels themselves are checked on the GPU
(tests/gpu/test_model_parity.py, tests/gpu/test_mixed_gpu.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gpu"))
from gpu_helpers import MiniDriver, make_runner, randomize_, ref_attention, rel_err, write_tiny_config


class _RefWrapper:
    """``plan`` records the CSR arrays; ``run`` attends request by request in float32."""

    def __init__(self, decode: bool, calls: list, *args, **kw) -> None:
        self.decode, self.calls = decode, calls

    def plan(self, *args, **kw):
        if self.decode:
            kv_indptr, indices, _last, heads, _kv_heads, _d, _page = args
            qo_indptr = torch.arange(len(kv_indptr))
        else:
            qo_indptr, kv_indptr, indices, _last, heads, _kv_heads, _d, _page = args
            assert kw["causal"] is True
        self.p = (qo_indptr.tolist(), kv_indptr.tolist(), indices.clone().long(), heads, kw["sm_scale"])

    def run(self, q, cache):
        qo, kvp, idx, heads, scale = self.p
        self.calls.append(("decode" if self.decode else "prefill", len(qo) - 1, q.shape[0]))
        assert q.shape[0] == qo[-1] and q.shape[1] == heads
        k_all, v_all = cache[0][:, 0], cache[1][:, 0]
        out = torch.empty_like(q)
        for i in range(len(qo) - 1):
            sl = idx[kvp[i]:kvp[i + 1]]
            n = qo[i + 1] - qo[i]
            out[qo[i]:qo[i + 1]] = ref_attention(q[qo[i]:qo[i + 1]], k_all[sl], v_all[sl], len(sl) - n,
                                                 scale).to(q.dtype)
        return out


def _store_kv(k_buf, v_buf, loc, k, v):
    k_buf.index_copy_(0, loc, k.to(k_buf.dtype))
    v_buf.index_copy_(0, loc, v.to(v_buf.dtype))


@pytest.fixture
def ref_flashinfer(flashinfer_standin):
    calls: list = []
    flashinfer_standin(lambda *a, **kw: _RefWrapper(True, calls, *a, **kw),
                       lambda *a, **kw: _RefWrapper(False, calls, *a, **kw), _store_kv)
    return calls


P0 = [5, 17, 99, 3, 250, 7, 7, 41, 300, 2, 11, 64, 128, 200, 8, 9, 10, 400, 33]
P1 = [42, 43, 44] * 9


def _passes(runner):
    """Prefill two requests; a mixed pass (a new prompt over P0's cached prefix, then both running requests'
    decode rows); a decode pass; a pass whose every row is one new token. Logits of every pass."""
    d = MiniDriver(runner)
    r0, r1 = d.new_request(), d.new_request()
    out = [runner.forward(d.batch([(r0, P0), (r1, P1)]))]
    r2 = d.new_request(r0, 12)
    out.append(runner.forward(d.batch([(r2, [77, 78, 79, 80, 81]), (r0, [6]), (r1, [7])])))
    out.append(runner.forward(d.batch([(r0, [8]), (r1, [9]), (r2, [10])], decode=True)))
    out.append(runner.forward(d.batch([(r0, [11]), (r2, [12])])))
    return [o.float() for o in out]


def test_flashinfer_glue_matches_torch_backend(ref_flashinfer, tmp_path):
    model_dir = write_tiny_config(tmp_path)
    ref = make_runner(model_dir, "cpu", "torch", dtype="bfloat16")
    fi = make_runner(model_dir, "cpu", "flashinfer", dtype="bfloat16")
    randomize_(ref.model)
    randomize_(fi.model)
    want, got = _passes(ref), _passes(fi)
    for a, b in zip(got, want):
        assert rel_err(a, b) < 2e-2
    layers = fi.hf_config.num_hidden_layers
    per_pass = [ref_flashinfer[i * layers] for i in range(len(ref_flashinfer) // layers)]
    # (wrapper, requests, query rows) of each pass's first layer: the mixed pass is split in two
    assert per_pass == [("prefill", 2, len(P0) + len(P1)), ("prefill", 1, 5), ("decode", 2, 2),
                        ("decode", 3, 3), ("decode", 2, 2)]
