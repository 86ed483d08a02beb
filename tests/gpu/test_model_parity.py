"""Greedy end-to-end parity: tiny random Llama on the GPU (Triton backend, fused ops, CUDA graphs)
vs the CPU torch backend; CUDA-graph replay vs eager."""
from __future__ import annotations

import pytest
import torch
from gpu_helpers import MiniDriver, make_runner, randomize_, rel_err, write_tiny_config

pytestmark = pytest.mark.gpu

P0 = [5, 17, 99, 3, 250, 7, 7, 41, 300, 2, 11, 64, 128, 200, 8, 9, 10, 400, 33]
P1 = P0[:12] + [77, 78]          # shares 12 tokens with P0 (served from P0's cached KV)
P2 = [1]
P3 = [42, 43, 44] * 23


def run_greedy(runner, steps: int = 12, graph=None, forced: list[list[int]] | None = None):
    """Prefill P0; then P1 over P0's cached prefix together with P2, P3 (extend with prefixes);
    then greedy decode of all four. Returns tokens and the per-pass logits (on the CPU).
    ``forced`` (tokens of an earlier run) replaces the argmax: logits compare step by step."""
    d = MiniDriver(runner)
    r0 = d.new_request()
    lg0 = runner.forward(d.batch([(r0, P0)]))
    r1, r2, r3 = d.new_request(r0, 12), d.new_request(), d.new_request()
    lg1 = runner.forward(d.batch([(r1, P1[12:]), (r2, P2), (r3, P3)]))
    toks = [int(lg0[0].argmax())] + [int(x) for x in lg1.argmax(-1).tolist()]
    if forced is not None:
        toks = [s[0] for s in forced]
    logits = [torch.cat([lg0, lg1]).float().cpu()]
    seqs = [[t] for t in toks]
    for _ in range(steps):
        fb = d.batch(list(zip(range(4), [[t] for t in toks])), decode=True)
        lg = graph.replay(fb) if graph is not None and graph.can_run(fb) else runner.forward(fb)
        toks = [int(x) for x in lg.argmax(-1).tolist()]
        if forced is not None:
            toks = [s[len(seqs[0])] for s in forced]
        logits.append(lg.float().cpu())
        for s, t in zip(seqs, toks):
            s.append(t)
    return seqs, logits


def _pair(tmp_path, gpu_backend: str, gpu_dtype: str = "float32"):
    model_dir = write_tiny_config(tmp_path)
    cpu = make_runner(model_dir, "cpu", "torch")
    gpu = make_runner(model_dir, "cuda", gpu_backend, dtype=gpu_dtype)
    randomize_(cpu.model)
    randomize_(gpu.model)
    return cpu, gpu


def test_greedy_parity_triton_vs_cpu_torch(cuda_only, tmp_path):
    """The GPU path as served: Triton attention + fused Triton norm/rotary (ModelRunner enables them)."""
    cpu, gpu = _pair(tmp_path, "triton")
    assert gpu.cuda_graph is None  # make_runner disables graphs: this is the eager path
    ref_toks, ref_logits = run_greedy(cpu)
    toks, logits = run_greedy(gpu)
    for a, b in zip(logits, ref_logits):
        assert rel_err(a, b) < 1e-2
    assert toks == ref_toks


def test_engine_runner_graphs_match_cpu(cuda_only, tmp_path):
    """ModelRunner with its own CUDA graphs (the Engine's configuration) vs the CPU torch backend."""
    from runtime.config import RuntimeConfig
    from runtime.model_runner import ModelRunner

    model_dir = write_tiny_config(tmp_path)
    cpu = make_runner(model_dir, "cpu", "torch")
    randomize_(cpu.model)
    gpu = ModelRunner(RuntimeConfig(model_path=model_dir, load_format="dummy", device="cuda", dtype="float32",
                                    attention_backend="triton", max_total_tokens=8192, max_running_requests=16,
                                    skip_tokenizer_init=True))
    randomize_(gpu.model)
    gpu.cuda_graph = None
    from runtime.cuda_graph_runner import CudaGraphRunner

    gpu.cuda_graph = CudaGraphRunner(gpu, max_bs=16)   # re-capture over the randomized weights' buffers
    ref_toks, ref_logits = run_greedy(cpu)
    toks, logits = run_greedy(gpu)
    for a, b in zip(logits, ref_logits):
        assert rel_err(a, b) < 1e-2
    assert toks == ref_toks


def test_cuda_graph_matches_eager(cuda_only, tmp_path):
    from runtime.cuda_graph_runner import CudaGraphRunner
    from runtime.layers.triton_fused import enable_fused_ops

    model_dir = write_tiny_config(tmp_path)
    gpu = make_runner(model_dir, "cuda", "triton", dtype="bfloat16")
    randomize_(gpu.model)
    enable_fused_ops(gpu.model)
    graph = CudaGraphRunner(gpu, batch_sizes=[1, 2, 8])   # 4 requests run padded in the bs-8 graph
    eager_toks, eager_logits = run_greedy(gpu)
    gpu.kv_pool.allocator.reset()
    graph_toks, graph_logits = run_greedy(gpu, graph=graph)
    assert graph_toks == eager_toks
    for a, b in zip(graph_logits, eager_logits):
        assert rel_err(a, b) < 2e-2


def test_flashinfer_matches_triton(cuda_only, tmp_path):
    """FlashInfer (bf16, GQA 4, head dim 128) vs Triton on the same weights, same tokens (teacher-forced)."""
    pytest.importorskip("flashinfer")
    model_dir = write_tiny_config(tmp_path, hidden_size=1024, num_attention_heads=8, num_key_value_heads=2,
                                  intermediate_size=1024)
    tri = make_runner(model_dir, "cuda", "triton", dtype="bfloat16")
    fi = make_runner(model_dir, "cuda", "flashinfer", dtype="bfloat16")
    randomize_(tri.model)
    randomize_(fi.model)
    toks, ref_logits = run_greedy(tri)
    _, logits = run_greedy(fi, forced=toks)
    for a, b in zip(logits, ref_logits):
        assert rel_err(a, b) < 3e-2


def test_flashinfer_cuda_graph_matches_eager(cuda_only, tmp_path):
    """FlashInfer decode replayed in CUDA graphs (a wrapper per captured size, planned before each replay; the 4
    requests run padded in the bs-8 graph) against FlashInfer eager, teacher-forced on the eager tokens."""
    pytest.importorskip("flashinfer")
    from runtime.cuda_graph_runner import CudaGraphRunner
    from runtime.layers.triton_fused import enable_fused_ops

    model_dir = write_tiny_config(tmp_path, hidden_size=1024, num_attention_heads=8, num_key_value_heads=2,
                                  intermediate_size=1024)
    fi = make_runner(model_dir, "cuda", "flashinfer", dtype="bfloat16")
    randomize_(fi.model)
    enable_fused_ops(fi.model)
    graph = CudaGraphRunner(fi, batch_sizes=[1, 2, 8])
    assert sorted(fi.attn_backend.graph_wrappers) == [1, 2, 8]
    eager_toks, eager_logits = run_greedy(fi)
    fi.kv_pool.allocator.reset()
    _, graph_logits = run_greedy(fi, graph=graph, forced=eager_toks)
    assert len(graph_logits) == len(eager_logits) == 13
    for a, b in zip(graph_logits, eager_logits):
        assert rel_err(a, b) < 2e-2
