"""Offline throughput on this CPU: sglc vs transformers.generate vs llama.cpp (xllamacpp), same requests.

Workload A (issue 2): N requests, prompt lengths uniform in [16, 512], max_new_tokens uniform in
[16, 256], greedy, ignore_eos, random token ids. Workload B: N requests sharing a ~1,000-token prefix
(+32 own tokens, 16 new tokens), radix cache on vs off. Prints one table; needs a quiet machine.

    python bench/bench_offline.py                   # everything
    python bench/bench_offline.py --skip hf,llamacpp --num 16
"""
from __future__ import annotations

import argparse
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

from gpu_common import git_commit


def workload(n: int, seed: int, lo_in=16, hi_in=512, lo_out=16, hi_out=256):
    rng = random.Random(seed)
    reqs = []
    for _ in range(n):
        p = [rng.randrange(100, 49000) for _ in range(rng.randint(lo_in, hi_in))]
        reqs.append((p, rng.randint(lo_out, hi_out)))
    return reqs


def shared_prefix_workload(n: int, seed: int, prefix_len=1000, own=32, out=16):
    rng = random.Random(seed)
    prefix = [rng.randrange(100, 49000) for _ in range(prefix_len)]
    return [(prefix + [rng.randrange(100, 49000) for _ in range(own)], out) for _ in range(n)]


def run_sglc(reqs, **engine_kw) -> dict:
    from runtime.engine import Engine

    with Engine(**engine_kw) as eng:
        eng.generate(input_ids=[1, 2, 3], sampling_params={"max_new_tokens": 4})  # warm-up
        eng.flush_cache()
        m0 = eng.metrics()
        t = time.perf_counter()
        outs = eng.generate(input_ids=[p for p, _ in reqs],
                            sampling_params=[{"temperature": 0, "max_new_tokens": n, "ignore_eos": True}
                                             for _, n in reqs])
        dt = time.perf_counter() - t
        m1 = eng.metrics()
    toks = sum(o["meta_info"]["completion_tokens"] for o in outs)
    assert toks == sum(n for _, n in reqs)
    return {"seconds": dt, "out_tokens": toks, "prefill_computed": m1["prefill_tokens_total"] - m0["prefill_tokens_total"]}


def run_hf(reqs, batch_size: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from runtime.model_files import default_model_path
    from runtime.model_loader import gguf_to_hf_dir

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(gguf_to_hf_dir(default_model_path()), dtype=torch.float32).eval()
    # NOTE: static batches sorted by prompt length (HF's best case); each batch runs to its longest output.
    order = sorted(reqs, key=lambda r: len(r[0]))
    t = time.perf_counter()
    prefill = 0
    for i in range(0, len(order), batch_size):
        chunk = order[i:i + batch_size]
        L = max(len(p) for p, _ in chunk)
        ids = torch.tensor([[0] * (L - len(p)) + p for p, _ in chunk])
        mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p, _ in chunk])
        prefill += ids.numel()
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(n for _, n in chunk),
                           min_new_tokens=max(n for _, n in chunk), do_sample=False, pad_token_id=0)
    dt = time.perf_counter() - t
    return {"seconds": dt, "out_tokens": sum(n for _, n in reqs), "prefill_computed": prefill}


def run_llamacpp(reqs, parallel: int) -> dict:
    import xllamacpp as xlc

    from runtime.model_files import default_model_path

    params = xlc.CommonParams()
    params.model.path = default_model_path()
    params.n_parallel = parallel
    params.n_ctx = parallel * 800
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    server = xlc.Server(params)

    def one(req):
        p, n = req
        body = {"prompt": p, "n_predict": n, "temperature": 0, "ignore_eos": True, "cache_prompt": False}
        res = server.handle_completions(body)
        if "usage" not in res:
            raise RuntimeError(f"llama.cpp error: {res}")
        return res["usage"]["completion_tokens"]

    one(([1, 2, 3], 4))
    t = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        toks = sum(pool.map(one, reqs))
    dt = time.perf_counter() - t
    return {"seconds": dt, "out_tokens": toks, "prefill_computed": sum(len(p) for p, _ in reqs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=64, help="requests per workload (default 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hf-batch", type=int, default=32, help="transformers static batch size")
    ap.add_argument("--parallel", type=int, default=32, help="llama.cpp parallel slots")
    ap.add_argument("--skip", default="", help="comma list of: hf,llamacpp,prefix")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    reqs = workload(args.num, args.seed)
    rows = [("A: mixed lengths", "sglc", run_sglc(reqs))]
    if "hf" not in skip:
        rows.append(("A: mixed lengths", f"transformers (batch {args.hf_batch})", run_hf(reqs, args.hf_batch)))
    if "llamacpp" not in skip:
        rows.append(("A: mixed lengths", f"llama.cpp (xllamacpp, {args.parallel} slots)",
                     run_llamacpp(reqs, args.parallel)))
    if "prefix" not in skip:
        sp = shared_prefix_workload(args.num, args.seed)
        rows.append(("B: shared 1k prefix", "sglc radix on", run_sglc(sp)))
        rows.append(("B: shared 1k prefix", "sglc radix off", run_sglc(sp, disable_radix_cache=True)))
    commit = git_commit()
    print(f"\n{time.strftime('%Y-%m-%d')} commit {commit}, {args.num} requests per workload\n")
    print("| workload | system | seconds | output tok/s | prefill tokens computed |")
    print("| --- | --- | ---: | ---: | ---: |")
    for w, name, r in rows:
        print(f"| {w} | {name} | {r['seconds']:.1f} | {r['out_tokens'] / r['seconds']:.1f} | {r['prefill_computed']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"workload": w, "system": s, **r} for w, s, r in rows], f, indent=1)


if __name__ == "__main__":
    main()
