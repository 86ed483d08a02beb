"""Host time of a decode step at large batches, on the CPU (issue 7: the fp8 offline decode passes wait for the host).

The Worker (overlap scheduler, executor, sampler) runs in this process with the model's forward replaced by an
instant fake (zero logits, ``bench_engine_overhead.install_fake_forward``) over a 1,024-token vocabulary, so a step
is host work only: choosing the rows, building the batch and its index arrays, the cascade plan (on, as the Triton
backend has it on a GPU), applying the previous step's tokens and finish checks, the output events. The sampler's
time is taken out (on a GPU it is a few launches). ``N`` requests of 64 prompt tokens decode 400 tokens each; after
40 warm-up steps, ``--rounds`` rounds of ``--steps`` steps are timed with ``time.perf_counter`` around the phases.

    python bench/bench_host_step.py [--rows 256,640,1024] [--steps 30] [--rounds 3]

Columns: ``host_ms`` the best round's host time per step (the median round's in ``median_ms``), ``us_row`` per
decode row, then the phases of the best round (ms per step): ``ahead`` the look-ahead batch (rows, slots, entries),
``build`` the executor's ForwardBatch (index arrays, request-to-token table, cascade plan; its table updates and
``kv_indices`` gather are torch ops, which the CPU computes here and a GPU only launches), ``drain`` collecting
and applying the previous step (``apply`` of it: the per-row bookkeeping), ``events`` the Worker's output events.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_engine_overhead import install_fake_forward, tiny_model
from gpu_common import print_table, save_json, wrap_methods


def measure(model: str, rows: int, steps: int, rounds: int) -> dict:
    import gc

    import numpy as np

    from runtime.attention.cascade import CascadePlanner, chunk_members
    from runtime.config import RuntimeConfig
    from runtime.worker import Worker, tune_gc

    cfg = RuntimeConfig(model_path=model, device="cpu", dtype="float32", skip_tokenizer_init=True,
                        overlap_schedule="on", mixed_chunk="on", max_running_requests=max(rows, 1),
                        max_total_tokens=rows * 600 + 4096, context_length=1024, num_threads=1)
    w = Worker(cfg)
    thresholds = gc.get_threshold()
    tune_gc()   # as the Engine's worker process does (SGLC_GC_FREEZE, SGLC_GC_FULL_EVERY)
    sch, ex = w.scheduler, w.scheduler.executor
    ex.cascade = CascadePlanner(chunk_members(4))   # as on a GPU (Triton backend): planned every decode step
    acc: dict[str, float] = defaultdict(float)

    keys = {"sample": "sample", "_build": "build", "_drain": "drain", "_apply": "apply", "_decode_ahead": "ahead",
            "event": "events"}

    def timed(name, fn):
        key = keys[name]

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[key] += time.perf_counter() - t
        return wrapper

    wrap_methods([(ex.sampler, "sample"), (ex, "_build"), (sch, "_drain"), (sch, "_apply"), (sch, "_decode_ahead"),
                  (w.out, "event")], timed)
    rng = np.random.default_rng(0)
    w.add_requests([{"rid": f"r{i}", "input_ids": rng.integers(10, 1000, 64).tolist(),
                     "sampling_params": {"max_new_tokens": 400, "ignore_eos": True, "temperature": 1.0}}
                    for i in range(rows)])
    for _ in range(40):
        w.step()
    results = []
    for _ in range(rounds):
        acc.clear()
        t0 = time.perf_counter()
        for _ in range(steps):
            w.step()
        wall = time.perf_counter() - t0
        results.append(((wall - acc["sample"]) / steps * 1e3, {k: v / steps * 1e3 for k, v in acc.items()}))
    assert len(sch.running) + len(sch.waiting) == rows, "requests finished inside the timed steps"
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    best, phases = min(results, key=lambda r: r[0])
    return {"rows": rows, "host_ms": best, "median_ms": statistics.median(r[0] for r in results),
            "us_row": best / rows * 1e3, "ahead": phases.get("ahead", 0.0), "build": phases.get("build", 0.0),
            "drain": phases.get("drain", 0.0), "apply": phases.get("apply", 0.0), "events": phases.get("events", 0.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="256,640,1024", help="running requests (decode rows a step), comma-separated")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    install_fake_forward()
    model = tiny_model(1024)
    out = [measure(model, int(n), args.steps, args.rounds) for n in args.rows.split(",")]
    print_table(out, "bench_host_step: host time of a decode step (CPU, fake forward, overlap on, cascade planned)")
    save_json(out, "bench_host_step.json")


if __name__ == "__main__":
    main()
