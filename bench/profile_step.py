"""Where a scheduler step's time goes on the GPU: host work vs the model forward.

Drives the Worker (scheduler + executor + ModelRunner) in this process and times, per step, the batch
build, the forward (device-synchronized before and after, so it is GPU time plus launch), sampling
(incl. its ``.tolist()`` sync) and the rest (scheduler bookkeeping, outputs). Workloads: batch-1 decode,
an offline slice (256 prompts of the 2,000-prompt workload) and the fork workload (prefill tokens
computed vs the distinct tokens of its prefix tree).

    python bench/profile_step.py
"""
from __future__ import annotations

import os
import time
from collections import defaultdict

import numpy as np
from gpu_common import LLAMA3_8B, gpu_info, print_table, save_json, token_prompt
from gpu_common import sync as sync_fn


class StepTimer:
    """Wraps the executor's phases with synchronized wall-clock timers."""

    def __init__(self, worker, wrap: bool = True) -> None:
        self.t: dict[str, float] = defaultdict(float)
        if not wrap:   # overlap scheduling: synchronizing inside a step would serialize it
            return
        ex = worker.scheduler.executor
        runner, sampler = ex.runner, ex.sampler
        self._wrap(ex, "_build", "build")
        self._wrap(runner, "forward", "forward", sync=True)
        self._wrap(sampler, "sample", "sample", sync=True)

    def _wrap(self, obj, name: str, key: str, sync: bool = False) -> None:
        fn = getattr(obj, name)

        def timed(*a, **k):
            if sync:
                sync_fn()
            t0 = time.perf_counter()
            out = fn(*a, **k)
            if sync:
                sync_fn()
            self.t[key] += time.perf_counter() - t0
            return out

        setattr(obj, name, timed)


def run(worker, timer: StepTimer, items: list[dict], label: str, max_steps: int = 10**9) -> dict:
    worker.add_requests(items)
    s0 = dict(worker.scheduler.stats)
    steps = {"prefill": [0, 0.0], "decode": [0, 0.0]}
    phase = defaultdict(lambda: defaultdict(float))
    n = 0
    t_start = time.perf_counter()
    while worker.busy and n < max_steps:
        before = dict(timer.t)
        dec0 = worker.scheduler.stats["decode_tokens"]
        t0 = time.perf_counter()
        worker.step()
        dt = time.perf_counter() - t0
        kind = "decode" if worker.scheduler.stats["decode_tokens"] > dec0 else "prefill"
        steps[kind][0] += 1
        steps[kind][1] += dt
        for k, v in timer.t.items():
            phase[kind][k] += v - before.get(k, 0.0)
        n += 1
    worker.abort(None)  # whatever max_steps left running
    st = worker.scheduler.stats
    row = {"workload": label, "wall_s": round(time.perf_counter() - t_start, 3),
           "prefill_tokens": st["prefill_tokens"] - s0["prefill_tokens"]}
    for kind in ("prefill", "decode"):
        c, tot = steps[kind]
        if not c:
            continue
        fwd, build, samp = (phase[kind][k] / c * 1e3 for k in ("forward", "build", "sample"))
        row[f"{kind}_steps"] = c
        row[f"{kind}_ms_step"] = tot / c * 1e3
        row[f"{kind}_forward_ms"] = fwd
        row[f"{kind}_host_ms"] = tot / c * 1e3 - fwd
        row[f"{kind}_build_ms"] = build
        row[f"{kind}_sample_ms"] = samp
    if steps["decode"][0]:
        row["decode_tokens_per_step"] = (st["decode_tokens"] - s0["decode_tokens"]) / steps["decode"][0]
    print(row, flush=True)
    return row


def _req(i: int, ids: list[int], out: int) -> dict:
    return {"rid": f"p{i}", "input_ids": ids,
            "sampling_params": {"max_new_tokens": out, "ignore_eos": True, "temperature": 1.0}}


def _fork(w, timer: StepTimer, rng, vocab: int) -> dict:
    items = []
    for p in range(8):
        pre = token_prompt(rng, 1000, vocab)
        items += [_req(1000 + 32 * p + b, pre + token_prompt(rng, 16, vocab), 128) for b in range(32)]
    return run(w, timer, items, "fork 8x32 (distinct prompt tokens 12096)")


def main() -> None:
    import argparse

    from runtime.config import RuntimeConfig
    from runtime.worker import Worker

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=LLAMA3_8B)
    ap.add_argument("--fewshot", type=int, default=512, help="few-shot requests (after 64 warm-up ones)")
    ap.add_argument("--only-fewshot", action="store_true")
    ap.add_argument("--only-fork", action="store_true", help="just the fork workload (8 x 32 branches)")
    ap.add_argument("--overlap-schedule", default="off", choices=["on", "off"],
                    help="on: whole-step times only (the phase timers synchronize and would serialize it)")
    args = ap.parse_args()
    device = os.environ.get("SGLC_BENCH_DEVICE", "cuda")
    cfg = RuntimeConfig(model_path=args.model, load_format="dummy",
                        dtype="bfloat16" if device == "cuda" else "float32", device=device,
                        skip_tokenizer_init=True, context_length=4096, mem_fraction_static=0.85,
                        overlap_schedule=args.overlap_schedule)
    w = Worker(cfg)
    vocab = w.runner.vocab_size
    timer = StepTimer(w, wrap=args.overlap_schedule == "off")
    rng = np.random.default_rng(0)
    if args.only_fork:
        rows = [_fork(w, timer, rng, vocab)]
        print_table(rows, "profile_step fork")
        return
    shared = token_prompt(rng, 1500, vocab)
    one = [_req(5000 + i, shared + token_prompt(rng, 64, vocab), 1) for i in range(64 + args.fewshot)]
    run(w, timer, one[:64], "few-shot warm-up")
    rows = [run(w, timer, one[64:], f"few-shot {args.fewshot} x (1500 shared + 64) -> 1")]
    w.flush_cache()
    if args.only_fewshot:
        print_table(rows, "profile_step few-shot")
        return
    rows.append(run(w, timer, [_req(0, token_prompt(rng, 128, vocab), 256)], "bs1 128->256"))
    ins, outs = rng.integers(256, 1025, 256), rng.integers(128, 513, 256)
    rows.append(run(w, timer, [_req(i, token_prompt(rng, int(a), vocab), int(b)) for i, (a, b) in enumerate(zip(ins, outs))],
                    "offline slice 256 prompts", max_steps=400))
    w.flush_cache()
    rows.append(_fork(w, timer, rng, vocab))
    info = gpu_info()
    print_table(rows, f"profile_step ({info['gpu']}, {info['date']}, commit {info['commit']})")
    save_json({"info": info, "rows": rows}, "profile_step.json")


if __name__ == "__main__":
    main()
