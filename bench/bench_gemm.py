# ruff: noqa: B023  (every closure below is timed inside its own loop iteration)
"""The linear layers' GEMMs at the row counts of offline passes: cuBLAS as the engine calls it, against the other
ways to run the same product, in TFLOP/s.

    python bench/bench_gemm.py [--rows 256,491,1034,2048] [--inductor]

Llama-3-8B shapes (``N x K`` weight, bf16): qkv 6,144 x 4,096, o 4,096 x 4,096, gate_up 28,672 x 4,096,
down 4,096 x 14,336, lm_head 128,256 x 4,096 (the LM head at decode row counts only). Columns:

- ``cublas``: ``F.linear(x, W)``, the engine's call (``W`` stored ``[N, K]``);
- ``cublaslt``: the same with ``torch.backends.cuda.preferred_blas_library("cublaslt")``;
- ``nn``: ``x @ Wt`` with the weight stored transposed, ``[K, N]`` (cuBLAS picks other kernels per layout);
- ``inductor`` (``--inductor``): ``torch.compile(mode="max-autotune-no-cudagraphs")`` per shape, which times
  cuBLAS against Triton GEMM templates and keeps the faster (its choice is printed in the log).

Timings are ``triton.testing.do_bench`` medians (it clears L2 between runs), in µs and TFLOP/s.
"""
from __future__ import annotations

import argparse

import torch
from gpu_common import gpu_info, print_table, save_json

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336),
          "lm_head": (128256, 4096)}


def _bench(fn) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="256,491,512,1034,2048,4096", help="row counts (M) to time")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="which projections")
    ap.add_argument("--inductor", action="store_true", help="also torch.compile max-autotune per shape")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in args.shapes.split(","):
        n, k = SHAPES[name]
        w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda") * k ** -0.5
        wt = w.t().contiguous()
        for m in (int(v) for v in args.rows.split(",")):
            if name == "lm_head" and m > 1100:
                continue
            x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
            flop = 2 * m * n * k
            row = {"shape": name, "M": m}
            ref = torch.nn.functional.linear(x, w)
            cands = {"cublas": lambda: torch.nn.functional.linear(x, w), "nn": lambda: x @ wt}
            for label, fn in cands.items():
                row[f"{label}_us"] = _bench(fn) * 1e3
            torch.backends.cuda.preferred_blas_library("cublaslt")
            row["cublaslt_us"] = _bench(lambda: torch.nn.functional.linear(x, w)) * 1e3
            torch.backends.cuda.preferred_blas_library("default")
            if args.inductor:
                f = torch.compile(lambda a, b: torch.nn.functional.linear(a, b), mode="max-autotune-no-cudagraphs",
                                  dynamic=False)
                out = f(x, w)
                assert (out.float() - ref.float()).abs().max().item() < 0.05 * ref.float().abs().max().item()
                row["inductor_us"] = _bench(lambda: f(x, w)) * 1e3
                torch._dynamo.reset()
            best_us, best = min((v, kk.removesuffix("_us")) for kk, v in row.items() if kk.endswith("_us"))
            row["cublas_TF"] = flop / row["cublas_us"] / 1e6
            row["best_TF"] = flop / best_us / 1e6
            row["best"] = best
            rows.append(row)
            print(row, flush=True)
    info = gpu_info()
    print(f"# {info['gpu']} torch {info['torch']} triton {info['triton']} {info['date']} commit {info['commit']}")
    print_table(rows, "GEMM µs and TFLOP/s by shape and rows")
    save_json({"info": info, "rows": rows}, "bench_gemm.json")


if __name__ == "__main__":
    main()
