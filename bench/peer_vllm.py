"""vLLM, the peer, on the issue-7 workloads with options the packaged peer scripts lack.

``../shared/tools/peer-vllm/`` ships ``bench_peer.py`` (batch-1, prefill, offline) and ``bench_prefix.py``
(few-shot and fork, prefix caching on *and off*: the off half takes minutes). This script draws exactly the
same prompts with the same generator calls and adds two knobs for a sitting short on device time:

* ``--workloads``: any of ``fewshot,fork`` (bench_prefix's draws) and ``offline`` (bench_peer's draws,
  including the warm-up, batch-1 and prefill prompts it draws first, so the offline prompts are the same);
* ``--kv-cache-dtype fp8``: vLLM's fp8 (e4m3) KV cache, to set beside sglc's ``--kv-cache-dtype fp8_e4m3``.

Run on the GPU machine after the peer payload is unpacked (``/tmp/site``, see docs/gpu.md)::

    PYTHONPATH=/tmp/site python3 bench/peer_vllm.py --workloads fewshot,fork
    PYTHONPATH=/tmp/site python3 bench/peer_vllm.py --workloads offline --kv-cache-dtype fp8

Prints one ``RESULT {json}`` line (and writes ``$OUT/peer_vllm_<dtype>.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

for k, v in {"VLLM_USE_FLASHINFER_SAMPLER": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
             "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}.items():
    os.environ.setdefault(k, v)

V = 128256   # Llama-3 vocabulary: ids are drawn from [1000, V - 1000) like the peer scripts


def model_dir() -> str:
    """The peer's dummy-model folder (config + generation config) or, failing that, the repo's config."""
    for d in (Path(".peer/llama3-8b-dummy"), Path(__file__).resolve().parent / "configs" / "llama3-8b"):
        if (d / "config.json").exists():
            return str(d)
    raise SystemExit("no Llama-3-8B config: carry .peer (../shared/tools/peer-vllm) or bench/configs/llama3-8b")


def prefix_workloads(llm, names: set[str], res: dict) -> None:
    """bench_prefix.py's draws (prefix caching on): few-shot, then fork, from one generator."""
    import numpy as np
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    rng = np.random.default_rng(0)
    one = SamplingParams(max_tokens=1, ignore_eos=True, detokenize=False)
    shared = rng.integers(1000, V - 1000, 1500).tolist()
    ps = [TokensPrompt(prompt_token_ids=shared + rng.integers(1000, V - 1000, 64).tolist()) for _ in range(2000)]
    if "fewshot" in names:
        llm.generate(ps[:4], one, use_tqdm=False)
        t = time.perf_counter()
        llm.generate(ps, one, use_tqdm=False)
        res["fewshot_req_per_s"] = round(2000 / (time.perf_counter() - t), 1)
    ps = []
    for _ in range(8):
        pre = rng.integers(1000, V - 1000, 1000).tolist()
        ps += [TokensPrompt(prompt_token_ids=pre + rng.integers(1000, V - 1000, 16).tolist()) for _ in range(32)]
    if "fork" in names:
        if "fewshot" not in names:   # NOTE: the engine's first generate is not timed (bench_prefix.py ran few-shot first)
            llm.generate(ps[:4], one, use_tqdm=False)
        t = time.perf_counter()
        llm.generate(ps, SamplingParams(max_tokens=128, ignore_eos=True, detokenize=False), use_tqdm=False)
        res["fork_out_tok_per_s"] = round(256 * 128 / (time.perf_counter() - t))


def offline_workload(llm, res: dict) -> None:
    """bench_peer.py's draws: warm-up, batch-1 and prefill prompts (drawn, not timed), then offline."""
    import numpy as np
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    rng = np.random.default_rng(0)

    def tp(n: int) -> TokensPrompt:
        return TokensPrompt(prompt_token_ids=rng.integers(1000, V - 1000, n).tolist())

    warm = [tp(64) for _ in range(8)]
    llm.generate(warm, SamplingParams(max_tokens=8, ignore_eos=True, detokenize=False), use_tqdm=False)
    tp(128)
    [tp(1024) for _ in range(8)]
    ins, outs = rng.integers(256, 1025, 2000), rng.integers(128, 513, 2000)
    prompts = [tp(int(n)) for n in ins]
    sps = [SamplingParams(max_tokens=int(o), ignore_eos=True, detokenize=False) for o in outs]
    t = time.perf_counter()
    r = llm.generate(prompts, sps, use_tqdm=False)
    dt = time.perf_counter() - t
    n_out = sum(len(o.outputs[0].token_ids) for o in r)
    res.update(offline_s=round(dt, 2), offline_out_tok_per_s=round(n_out / dt))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="fewshot,fork",
                    help="comma-separated: fewshot, fork (prefix caching on), offline (prefix caching off)")
    ap.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "fp8"])
    a = ap.parse_args()
    names = set(a.workloads.split(","))
    unknown = names - {"fewshot", "fork", "offline"}
    if unknown:
        ap.error(f"unknown workloads: {sorted(unknown)}")
    import torch
    import vllm
    from vllm import LLM

    res: dict = {"vllm": vllm.__version__, "gpu": torch.cuda.get_device_name(0), "kv_cache_dtype": a.kv_cache_dtype}
    if names & {"fewshot", "fork"}:   # bench_prefix.py's engine settings
        llm = LLM(model=model_dir(), load_format="dummy", skip_tokenizer_init=True, dtype="bfloat16",
                  max_model_len=4096, max_num_seqs=256, gpu_memory_utilization=0.85, enable_prefix_caching=True,
                  seed=0, kv_cache_dtype=a.kv_cache_dtype)
        prefix_workloads(llm, names, res)
        print("PARTIAL " + json.dumps(res), flush=True)
        del llm
        import gc
        gc.collect()
        torch.cuda.empty_cache()
    if "offline" in names:            # bench_peer.py's engine settings
        llm = LLM(model=model_dir(), load_format="dummy", skip_tokenizer_init=True, dtype="bfloat16",
                  max_model_len=2048, max_num_seqs=256, gpu_memory_utilization=0.9, enable_prefix_caching=False,
                  seed=0, kv_cache_dtype=a.kv_cache_dtype)
        offline_workload(llm, res)
    print("RESULT " + json.dumps(res), flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], f"peer_vllm_{a.kv_cache_dtype}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
