"""Fused Triton RMSNorm / SiLU-and-mul / rotary vs the torch layers of runtime/layers/basic.py."""
from __future__ import annotations

import pytest
import torch
from gpu_helpers import kv_dtype, rel_err

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("rows,dim", [(1, 576), (7, 4096), (33, 100)])
@pytest.mark.parametrize("with_res", [False, True])
def test_rms_norm(device, rows, dim, with_res):
    from runtime.layers.basic import RMSNorm
    from runtime.layers.triton_fused import rms_norm

    dtype = kv_dtype(device)
    norm = RMSNorm(dim, 1e-5).to(device=device, dtype=dtype)
    norm.weight.data.normal_()
    x = torch.randn(rows, dim, dtype=dtype, device=device)
    r = torch.randn(rows, dim, dtype=dtype, device=device) if with_res else None
    ref = norm(x.double(), None if r is None else r.double())
    out = rms_norm(x, norm.weight, 1e-5, r)
    if with_res:
        assert rel_err(out[0], ref[0]) < 1e-2 and rel_err(out[1], ref[1]) < 1e-2
    else:
        assert rel_err(out, ref) < 1e-2


@pytest.mark.parametrize("rows,n", [(1, 1536), (5, 14336), (3, 100)])
def test_silu_and_mul(device, rows, n):
    from runtime.layers.basic import silu_and_mul as ref_fn
    from runtime.layers.triton_fused import silu_and_mul

    x = torch.randn(rows, 2 * n, dtype=kv_dtype(device), device=device)
    assert rel_err(silu_and_mul(x), ref_fn(x.double())) < 1e-2


@pytest.mark.parametrize("t,h,hkv,d", [(1, 32, 8, 128), (9, 9, 3, 64), (70, 4, 4, 96)])
def test_rotary(device, t, h, hkv, d):
    from runtime.layers.basic import RotaryEmbedding
    from runtime.layers.triton_fused import rotary_embedding

    dtype = kv_dtype(device)
    rope = RotaryEmbedding(d, 4096, 500000.0).to(device)
    qkv = torch.randn(t, (h + 2 * hkv) * d, dtype=dtype, device=device)
    q = qkv[:, :h * d].view(t, h, d)            # strided views, as a fused QKV projection gives them
    k = qkv[:, h * d:(h + hkv) * d].view(t, hkv, d)
    pos = torch.randint(0, 4096, (t,), device=device)
    rq, rk = rope(pos, q.double(), k.double())
    oq, ok = rotary_embedding(pos, q, k, rope.cos, rope.sin)
    assert rel_err(oq, rq) < 1e-2 and rel_err(ok, rk) < 1e-2


def test_enable_fused_ops_switches_every_layer(cuda_only, tmp_path):
    """Every RMSNorm, rotary and MLP activation of a CUDA model runs the fused kernels (the MLP's was missed
    once: torch's two-pass silu * up cost 12% of a prefill)."""
    from gpu_helpers import make_runner, write_tiny_config

    from runtime.layers import triton_fused

    runner = make_runner(write_tiny_config(tmp_path), "cuda", "triton")
    mlps = [m for m in runner.model.modules() if type(m).__name__ == "MLP"]
    assert mlps and all(m.act is triton_fused.silu_and_mul for m in mlps)
    x = torch.randn(5, 2 * mlps[0].down_proj.in_features, device="cuda")
    assert rel_err(mlps[0].act(x), torch.nn.functional.silu(x.double().chunk(2, -1)[0]) * x.double().chunk(2, -1)[1]) < 1e-3
