"""The batch-1 Triton GEMV (runtime/layers/triton_gemv.py) vs a float64 reference, and its dispatch."""
from __future__ import annotations

import pytest
import torch
from gpu_helpers import kv_dtype, rel_err

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("n,k", [(1, 64), (37, 200), (129, 1000), (4096, 4096), (1000, 14336)])
@pytest.mark.parametrize("config", [None, (1, 256, 2), (16, 128, 4)])
def test_gemv_matches_reference(device, n, k, config):
    """Every output row is written (the output is poisoned first) and equals ``x @ W.T``, for N not a multiple
    of BLOCK_N and K not a multiple of BLOCK_K."""
    from runtime.layers import triton_gemv

    if device == "cpu" and n * k > 2_000_000:
        pytest.skip("too large for the interpreter")
    dtype = kv_dtype(device)
    x = torch.randn(1, k, dtype=dtype, device=device)
    w = torch.randn(n, k, dtype=dtype, device=device)
    y = torch.full((1, n), float("nan"), dtype=dtype, device=device)   # poisoned: every row must be written
    assert triton_gemv.gemv(x, w, config, out=y) is y
    assert y.shape == (1, n) and y.dtype == dtype
    assert rel_err(y, x.double() @ w.double().T) < 1e-2


def test_linear_dispatch(cuda_only, monkeypatch):
    """One bf16 row goes to the GEMV (with the bias added), anything else to ``F.linear``."""
    from runtime.layers import triton_gemv

    calls = []
    real = triton_gemv.gemv
    monkeypatch.setattr(triton_gemv, "gemv", lambda *a, **kw: calls.append(a[0].shape) or real(*a, **kw))
    w = torch.randn(300, 512, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(300, dtype=torch.bfloat16, device="cuda")
    for rows in (1, 3):
        x = torch.randn(rows, 512, dtype=torch.bfloat16, device="cuda")
        assert rel_err(triton_gemv.linear(x, w, b), x.double() @ w.double().T + b.double()) < 1e-2
    assert calls == [(1, 512)]
    triton_gemv.linear(torch.randn(1, 512, device="cuda"), w.float())   # fp32: cuBLAS
    assert calls == [(1, 512)]


def test_enable_fused_ops_routes_linears(cuda_only, tmp_path):
    """With the switch on, every linear layer and the LM head of a CUDA model take one-row inputs to the GEMV;
    ``gemv=False`` leaves them on ``F.linear``."""
    from gpu_helpers import make_runner, write_tiny_config

    from runtime.layers import triton_fused, triton_gemv

    runner = make_runner(write_tiny_config(tmp_path), "cuda", "triton")
    model = runner.model
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    triton_fused.enable_fused_ops(model, gemv=True)
    assert linears and all(m.forward.__func__ is triton_fused._gemv_linear_forward for m in linears)
    assert model.lm_linear is triton_gemv.linear
    x = torch.randn(1, linears[0].in_features, dtype=linears[0].weight.dtype, device="cuda")
    assert rel_err(linears[0](x), x.double() @ linears[0].weight.double().T) < 1e-2
