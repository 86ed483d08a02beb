"""Batch-1 GEMVs of Llama-3-8B (bf16): cuBLAS (``F.linear``) vs the Triton GEMV (``runtime/layers/triton_gemv``).

Each shape runs as 32 launches over 32 distinct weight copies inside one CUDA graph (the weights of a
real decode step are never in L2; graphs remove launch gaps as the decode graphs do). Prints µs per call and
TB/s of weight read, per shape and for the whole step (32 layers x 4 projections + the LM head).

    python bench/bench_gemv.py [--sweep]      # --sweep: every (BLOCK_N, BLOCK_K, warps) candidate
"""
from __future__ import annotations

import argparse
import itertools

from gpu_common import gpu_info, print_table, save_json

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336),
          "lm_head": (128256, 4096)}
PER_STEP = {"qkv": 32, "o": 32, "gate_up": 32, "down": 32, "lm_head": 1}
COPIES = 32


def _graph_time_us(fn, reps: int = 20) -> float:
    """Median µs of one ``fn()`` call (``fn`` = COPIES launches) replayed in a CUDA graph."""
    import torch

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000 / COPIES)
    return sorted(times)[len(times) // 2]


def _bench_shape(name: str, n: int, k: int, cands: list[tuple[int, int, int]]) -> tuple[list[dict], dict]:
    import torch
    import torch.nn.functional as F

    from runtime.layers.triton_gemv import _DEFAULT_CONFIG, gemv

    copies = COPIES if name != "lm_head" else 4
    ws = [torch.empty(n, k, dtype=torch.bfloat16, device="cuda").uniform_(-0.02, 0.02) for _ in range(copies)]
    x = torch.randn(1, k, dtype=torch.bfloat16, device="cuda")
    ref = x.float() @ ws[0].float().T
    wl = ws * (COPIES // copies)
    gb = n * k * 2 / 1e9
    t_cublas = _graph_time_us(lambda: [F.linear(x, w) for w in wl])
    rows = [{"shape": name, "N": n, "K": k, "kernel": "cublas", "us": t_cublas, "TB/s": gb / t_cublas * 1e3,
             "max_err": (F.linear(x, ws[0]).float() - ref).abs().max().item()}]
    res = []
    for cfg in cands:
        err = (gemv(x, ws[0], cfg).float() - ref).abs().max().item()
        t = _graph_time_us(lambda cfg=cfg: [gemv(x, w, cfg) for w in wl])
        res.append((t, cfg, err))
    res.sort()
    default = next(r for r in res if r[1] == _DEFAULT_CONFIG)
    for t, cfg, err in [default] + ([res[0]] if res[0] is not default else []):
        rows.append({"shape": name, "N": n, "K": k, "kernel": f"triton {cfg}", "us": t, "TB/s": gb / t * 1e3,
                     "max_err": err})
    return rows, {"cublas": t_cublas, "default": default[0], "best": res[0][0], "best_cfg": res[0][1],
                  "top5": [(round(t, 2), c) for t, c, _ in res[:5]]}


def main() -> None:
    import torch

    from runtime.layers.triton_gemv import _DEFAULT_CONFIG

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    cands = [_DEFAULT_CONFIG]
    if args.sweep:
        for bn, bk, nw in itertools.product([1, 2, 4, 8, 16], [256, 512, 1024, 2048], [2, 4, 8]):
            per_thread = bn * bk // (32 * nw)
            if 8 <= per_thread <= 128 and (bn, bk, nw) not in cands:
                cands.append((bn, bk, nw))
    rows, best = [], {}
    for name, (n, k) in SHAPES.items():
        r, best[name] = _bench_shape(name, n, k, cands)
        rows += r
        print(name, best[name], flush=True)
        torch.cuda.empty_cache()
    step = {k: sum(best[s][k] * PER_STEP[s] for s in SHAPES) / 1000 for k in ("cublas", "default", "best")}
    rows.append({"shape": "decode step (ms)", "N": "", "K": "", "kernel": "cublas / default / best",
                 "us": f"{step['cublas']:.3f} / {step['default']:.3f} / {step['best']:.3f}", "TB/s": "", "max_err": ""})
    info = gpu_info()
    print_table(rows, f"bench_gemv ({info['gpu']}, {info['date']}, commit {info['commit']})")
    save_json({"info": info, "rows": rows, "best": best}, "bench_gemv.json")


if __name__ == "__main__":
    main()
