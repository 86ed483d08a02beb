"""The vLLM peer workloads through sglc's Engine on the GPU (dummy Llama-3-8B, random token ids, no
tokenizer), drawn with the same generator calls as ../shared/tools/peer-vllm/bench_peer.py:

* batch-1 decode: 128 prompt tokens, (257-token run - 1-token run) / 256
* prefill: 8 x 1024 prompt tokens, 1 output token
* offline: 2,000 prompts, input uniform 256-1024, output uniform 128-512, ignore_eos

    python bench/bench_offline_gpu.py [--backend triton] [--num-prompts 2000] [--mixed-chunk off]
                                      [--kv-cache-dtype fp8_e4m3]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from gpu_common import gpu_info, make_engine, print_table, save_json, token_prompt


def _sp(n: int, temperature: float) -> dict:
    return {"max_new_tokens": n, "ignore_eos": True, "temperature": temperature}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="triton")
    ap.add_argument("--num-prompts", type=int, default=2000)
    ap.add_argument("--temperature", type=float, default=1.0, help="vLLM's default sampling (1.0)")
    ap.add_argument("--max-running-requests", type=int, default=None)
    ap.add_argument("--mem-fraction-static", type=float, default=0.88)
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--overlap-schedule", default="auto", choices=["auto", "on", "off"],
                    help="overlap scheduling (auto: on for CUDA)")
    ap.add_argument("--mixed-chunk", default="auto", choices=["auto", "on", "off"],
                    help="running requests' decode rows ride along in prefill passes (auto: on for CUDA)")
    ap.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "fp8_e4m3"],
                    help="fp8_e4m3: an fp8 KV pool (twice the tokens, half the K/V read per decode step)")
    ap.add_argument("--cuda-graph-max-bs", type=int, default=None,
                    help="largest decode batch captured in a CUDA graph (default: the engine's, at most 1024)")
    ap.add_argument("--skip-offline", action="store_true")
    ap.add_argument("--offline-only", action="store_true",
                    help="skip the batch-1 and prefill measurements (the offline prompts stay the same draws)")
    args = ap.parse_args()

    kw = {"mem_fraction_static": args.mem_fraction_static, "overlap_schedule": args.overlap_schedule,
          "mixed_chunk": args.mixed_chunk, "kv_cache_dtype": args.kv_cache_dtype}
    if args.max_running_requests:
        kw["max_running_requests"] = args.max_running_requests
    if args.cuda_graph_max_bs:
        kw["cuda_graph_max_bs"] = args.cuda_graph_max_bs
    if args.model_path:
        kw["model_path"] = args.model_path
    t0 = time.perf_counter()
    eng = make_engine(args.backend, context_length=2048, radix=False, **kw)
    info = eng.model_info()
    vocab = info["vocab_size"]
    res = {"backend": args.backend, "mixed_chunk": args.mixed_chunk, "kv_cache_dtype": args.kv_cache_dtype,
           "init_s": round(time.perf_counter() - t0, 1),
           "kv_tokens": info.get("max_total_tokens")}
    rng = np.random.default_rng(0)
    warm = [token_prompt(rng, 64, vocab) for _ in range(8)]
    eng.generate(input_ids=warm, sampling_params=_sp(8, args.temperature))

    p = token_prompt(rng, 128, vocab)

    def timed(n: int) -> float:   # NOTE: best of 3: the first run of a shape may JIT-compile kernels
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            eng.generate(input_ids=[p], sampling_params=_sp(n, args.temperature))
            best = min(best, time.perf_counter() - t)
        return best

    if not args.offline_only:
        res["bs1_decode_ms_per_token"] = round((timed(257) - timed(1)) / 256 * 1000, 3)

    ps = [token_prompt(rng, 1024, vocab) for _ in range(8)]
    if not args.offline_only:
        t = time.perf_counter()
        eng.generate(input_ids=ps, sampling_params=_sp(1, args.temperature))
        res["prefill_tok_per_s_8x1024"] = round(8 * 1024 / (time.perf_counter() - t))

    if not args.skip_offline:
        n = args.num_prompts
        ins = rng.integers(256, 1025, 2000)[:n]
        outs = rng.integers(128, 513, 2000)[:n]
        prompts = [token_prompt(rng, int(k), vocab) for k in ins]
        sps = [_sp(int(o), args.temperature) for o in outs]
        m0 = eng.metrics()
        t = time.perf_counter()
        r = eng.generate(input_ids=prompts, sampling_params=sps)
        dt = time.perf_counter() - t
        m1 = eng.metrics()
        d = {k: m1[k] - m0[k] for k in ("forward_passes_total", "prefill_passes_total", "decode_tokens_total",
                                       "prefill_tokens_total", "retractions_total")}
        decode_passes = d["forward_passes_total"] - d["prefill_passes_total"]
        # NOTE: with mixed batches, decode rows also ride in prefill passes: decode_batch = decode rows per pass
        # that decodes (pure decode passes + mixed prefill passes).
        mixed = m1["mixed_passes_total"] - m0["mixed_passes_total"]
        res.update(offline_mixed_passes=mixed, offline_prefill_passes=d["prefill_passes_total"],
                   offline_decode_passes=decode_passes, offline_retractions=d["retractions_total"],
                   offline_prefill_tokens=d["prefill_tokens_total"],
                   decode_batch=round(d["decode_tokens_total"] / max(decode_passes + mixed, 1), 1))
        n_out = sum(len(o["output_ids"]) for o in r)
        res.update(offline_prompts=n, offline_s=round(dt, 2), offline_out_tok_per_s=round(n_out / dt),
                   offline_total_tok_per_s=round((n_out + int(ins.sum())) / dt))
    m = eng.metrics()
    res["forward_passes"] = m.get("forward_passes_total")
    eng.shutdown()
    ginfo = gpu_info()
    print("RESULT", res, flush=True)
    print_table([res], f"bench_offline_gpu ({ginfo['gpu']}, {ginfo['date']}, commit {ginfo['commit']}, {ginfo['knobs']})")
    save_json({"info": ginfo, "result": res}, f"bench_offline_{args.backend}.json")


if __name__ == "__main__":
    main()
