"""Shared-prefix workloads through sglc's Engine on the GPU (dummy Llama-3-8B), drawn with the same
generator calls as ../shared/tools/peer-vllm/bench_prefix.py:

* few-shot: 2,000 requests = one 1,500-token prefix + 64 own tokens, 1 output token  -> req/s
* fork: 8 prefixes of 1,000 tokens x 32 branches of 16 own tokens, 128 output tokens -> output tok/s

    python bench/bench_prefix.py [--backend triton] [--no-cache-too] [--no-cascade-too]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from gpu_common import gpu_info, make_engine, print_table, save_json, token_prompt


def run(radix: bool, backend: str, kw: dict, n_fewshot: int = 2000, n_prefix: int = 8,
        n_branch: int = 32) -> dict:
    eng = make_engine(backend, context_length=4096, radix=radix, **kw)
    vocab = eng.model_info()["vocab_size"]
    rng = np.random.default_rng(0)
    one = {"max_new_tokens": 1, "ignore_eos": True, "temperature": 1.0}
    shared = token_prompt(rng, 1500, vocab)
    ps = [shared + token_prompt(rng, 64, vocab) for _ in range(n_fewshot)]
    # NOTE: warm-up on another prefix: compiles the kernels of these shapes without caching the measured one
    wrng = np.random.default_rng(1)   # (its own generator: the measured prompts match the peer's draws)
    other = token_prompt(wrng, 1500, vocab)
    eng.generate(input_ids=[other + token_prompt(wrng, 64, vocab) for _ in range(64)], sampling_params=one)
    eng.generate(input_ids=ps[:4], sampling_params=one)
    t = time.perf_counter()
    eng.generate(input_ids=ps, sampling_params=one)
    dt = time.perf_counter() - t
    res = {"radix": radix, "cascade": not kw.get("disable_cascade_attention", False),
           "fewshot_req_per_s": round(n_fewshot / dt, 1)}
    ps = []
    for _ in range(n_prefix):
        pre = token_prompt(rng, 1000, vocab)
        ps += [pre + token_prompt(rng, 16, vocab) for _ in range(n_branch)]
    sp = {"max_new_tokens": 128, "ignore_eos": True, "temperature": 1.0}
    t = time.perf_counter()
    out = eng.generate(input_ids=ps, sampling_params=sp)
    dt = time.perf_counter() - t
    res["fork_out_tok_per_s"] = round(sum(len(o["output_ids"]) for o in out) / dt)
    m = eng.metrics()
    res["cache_hit_rate"] = round(m.get("cache_hit_rate", 0.0), 3)
    res["cascade_rows"] = m.get("cascade_rows_total", 0)
    eng.shutdown()
    print("PARTIAL", res, flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="triton")
    ap.add_argument("--no-cache-too", action="store_true", help="also run with the radix cache off (slow)")
    ap.add_argument("--no-cascade-too", action="store_true",
                    help="also run with shared-prefix (cascade) decode attention off")
    ap.add_argument("--mem-fraction-static", type=float, default=0.85)
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--overlap-schedule", default="auto", choices=["auto", "on", "off"],
                    help="overlap scheduling (auto: on for CUDA)")
    ap.add_argument("--small", action="store_true", help="a smoke run: 20 few-shot requests, 2 x 4 forks")
    ap.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "fp8_e4m3"], help="fp8_e4m3: an fp8 KV pool")
    args = ap.parse_args()
    kw = {"mem_fraction_static": args.mem_fraction_static, "overlap_schedule": args.overlap_schedule,
          "kv_cache_dtype": args.kv_cache_dtype}
    if args.model_path:
        kw["model_path"] = args.model_path
    sizes = (20, 2, 4) if args.small else (2000, 8, 32)
    rows = [run(True, args.backend, kw, *sizes)]
    if args.no_cascade_too:
        rows.append(run(True, args.backend, {**kw, "disable_cascade_attention": True}, *sizes))
    if args.no_cache_too:
        rows.append(run(False, args.backend, kw, *sizes))
    info = gpu_info()
    print_table(rows, f"bench_prefix ({info['gpu']}, {info['date']}, commit {info['commit']}, {info['knobs']})")
    save_json({"info": info, "rows": rows}, f"bench_prefix_{args.backend}.json")


if __name__ == "__main__":
    main()
