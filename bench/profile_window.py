"""Where the GPU time goes in the production step loop (overlap scheduling and mixed batches on): the Worker
runs a workload in this process, and torch.profiler records a window of steps in its steady state.

Per workload it prints the window's wall time, the GPU's busy time (the sum of kernel times; one stream, so
wall - busy is the time the GPU waited for the host), the passes by kind, and the top kernels grouped into
GEMM / attention / other. Workloads are the peer benchmarks' (bench_peer.py, bench_prefix.py):

* ``offline``: prompts in U[256,1024], outputs in U[128,512]; window = passes 300-400 (the pool is full)
* ``fork``: 8 prefixes of 1,000 x 32 branches of 16, 128 outputs; window = passes 20-60 (decode)
* ``fewshot``: (1,500 shared + 64) -> 1 token, after a 64-request warm-up; window = the whole run
* ``bs1``: batch-1 decode 128 -> 256; window = passes 100-200
* ``prefill``: 8 x 1,024 -> 1 token (bench_peer.py's prefill), after one warm-up run; window = the whole run

    python bench/profile_window.py [--workloads offline,fork,fewshot,bs1] [--top 14]

``--trace DIR`` writes each window's Chrome trace (``DIR/<workload>.trace.json``; ``--trace-passes`` shortens the
window so the file stays small) with the host phases marked (``sglc.*`` ranges: building the next batch, the
forward launch, sampling, collecting and applying the previous one); ``bench/trace_gaps.py`` reads it and says
what the host was doing while the GPU waited.
"""
from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import numpy as np
from gpu_common import LLAMA3_8B, gpu_info, print_table, save_json, sync, token_prompt, wrap_methods


def _req(rid: str, ids: list[int], out: int) -> dict:
    return {"rid": rid, "input_ids": ids,
            "sampling_params": {"max_new_tokens": out, "ignore_eos": True, "temperature": 1.0}}


def _mem_stats() -> dict:
    """Counters of the CUDA caching allocator: an alloc retry frees cached blocks (cudaFree syncs the device)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    st = torch.cuda.memory_stats()
    return {k: st.get(k, 0) for k in ("num_alloc_retries", "num_device_alloc", "num_device_free",
                                       "num_sync_all_streams", "num_ooms")}


class _time_phases:
    """Host wall time of the executor's phases per launch (build, forward, sample), without synchronizing:
    a phase that takes as long as the GPU work before it is waiting for the GPU somewhere inside."""

    def __init__(self, w) -> None:
        ex = w.scheduler.executor
        self.log: list[dict] = []
        self.restore = wrap_methods([(ex, "_build"), (ex.runner, "forward"), (ex.sampler, "sample"),
                                     (ex, "collect")], self._wrap)

    def _wrap(self, name, fn):
        import torch

        def timed(*a, **k):
            t0 = time.perf_counter()
            if name != "collect" and os.environ.get("SGLC_PROFILE_SYNC") and torch.cuda.is_available():
                # NOTE: find a hidden host sync in the launch path: the first one raises; print where, go on
                torch.cuda.set_sync_debug_mode("error")
                try:
                    out = fn(*a, **k)
                except RuntimeError:
                    import traceback
                    print(f"SYNC in {name}:\n{traceback.format_exc()[-2500:]}", flush=True)
                    torch.cuda.set_sync_debug_mode(0)
                    out = fn(*a, **k)
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            else:
                out = fn(*a, **k)
            if name == "_build" or not self.log:
                self.log.append({})
            self.log[-1][name] = round((time.perf_counter() - t0) * 1e3, 2)
            return out
        return timed


def _annotate(w):
    """Mark the host phases of a step as ``sglc.*`` ranges in a torch.profiler trace; returns the restorer.
    (Methods an object lacks, e.g. the overlap scheduler's ``_decode_ahead``, are skipped.)"""
    from torch.profiler import record_function

    def mark(name, fn):
        tag = "sglc." + name.lstrip("_")

        def marked(*a, **k):
            with record_function(tag):
                return fn(*a, **k)
        return marked

    sch, ex = w.scheduler, w.scheduler.executor
    return wrap_methods([(sch, "_prefill_batch"), (sch, "_decode_ahead"), (sch, "_decode_batch"), (sch, "_drain"),
                         (ex, "launch"), (ex, "_build"), (ex.runner, "forward"), (ex.sampler, "sample"),
                         (ex, "collect"), (w, "step")], mark)


class _GcClock:
    """Time the garbage collector spends per generation while it runs (``gc.callbacks``)."""

    def __init__(self) -> None:
        import gc

        self.ms = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self.worst = 0.0
        self._t = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            dt = (time.perf_counter() - self._t) * 1e3
            g = info["generation"]
            self.ms[g] += dt
            self.count[g] += 1
            self.worst = max(self.worst, dt)

    def stop(self) -> None:
        import gc

        gc.callbacks.remove(self._cb)

    def __str__(self) -> str:
        return ", ".join(f"gen{g} {c} x, {t:.1f} ms" for g, (c, t) in enumerate(zip(self.count, self.ms))) + \
            f"; longest {self.worst:.1f} ms"


def _category(name: str) -> str:
    n = name.lower()
    if any(k in n for k in ("gemm", "nvjet", "cutlass", "sm90_", "cublas", "gemv", "splitk")):
        return "gemm"
    if any(k in n for k in ("decode", "extend", "attn", "attention", "_fwd", "cascade", "_stage", "flash")):
        return "attention"
    return "other"


def host_profile(w, items: list[dict], label: str, window: tuple[int, int], top: int) -> dict:
    """cProfile of the host over the window (no torch.profiler): which Python functions the steps spend in."""
    import cProfile
    import io
    import pstats

    w.add_requests(items)
    n, lo, hi = 0, *window
    prof, t0 = cProfile.Profile(), 0.0
    while w.busy:
        if n == lo:
            sync()
            t0 = time.perf_counter()
            prof.enable()
        w.step()
        n += 1
        if n == hi:
            break
    prof.disable()
    sync()
    wall = time.perf_counter() - t0
    while w.busy:
        w.step()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    steps = min(n, hi) - lo
    print(f"\n## host profile {label}: {steps} steps, {wall * 1e3:.0f} ms wall (cProfile on)\n{buf.getvalue()}", flush=True)
    return {"workload": label, "host_profile_steps": steps, "wall_ms": round(wall * 1e3)}


def profile(w, items: list[dict], label: str, window: tuple[int, int], top: int, trace: str | None = None) -> dict:
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    # NOTE: on CPU (SGLC_BENCH_DEVICE=cpu, a smoke run of the script) the "kernels" are CPU ops
    cuda = torch.cuda.is_available()
    act = ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU
    acts = [act] if not trace or not cuda else [ProfilerActivity.CPU, act]   # the trace needs the host ranges

    def dev_time(e) -> float:   # microseconds
        return e.device_time_total if cuda else e.self_cpu_time_total

    sched = w.scheduler
    phases = _time_phases(w) if os.environ.get("SGLC_PROFILE_PHASES") else None
    unmark = _annotate(w) if trace else (lambda: None)
    w.add_requests(items)
    s0 = dict(sched.stats)
    m0 = _mem_stats()
    n, t_all = 0, time.perf_counter()
    lo, hi = window
    prof, t0, w0 = None, 0.0, None
    kinds: dict[str, int] = defaultdict(int)
    timeline: list[tuple] = []   # (ms since the requests were added, pass kind, decode rows, prefill tokens)
    while w.busy:
        if n == lo:
            sync()
            prof = tprofile(activities=acts)
            prof.__enter__()
            t0, w0 = time.perf_counter(), dict(sched.stats)
            gcs = _GcClock()
        before = dict(sched.stats)
        w.step()
        d = {k: sched.stats[k] - before[k] for k in before}
        kind = ("mixed" if d["mixed_passes"] else "prefill" if d["prefill_passes"] else "decode") \
            if d["forward_passes"] else "apply"
        timeline.append((round((time.perf_counter() - t_all) * 1e3, 1), kind, d["decode_tokens"], d["prefill_tokens"]))
        if prof is not None and d["forward_passes"]:
            kinds[kind] += 1
        n += 1
        if n == hi and prof is not None:
            break
    if prof is None:
        unmark()
        print(f"{label}: only {n} steps, no window", flush=True)
        return {"workload": label}
    sync()
    wall = time.perf_counter() - t0
    prof.__exit__(None, None, None)
    gcs.stop()
    print(f"{label}: garbage collections in the window: {gcs}", flush=True)
    unmark()
    if trace:
        os.makedirs(trace, exist_ok=True)
        path = os.path.join(trace, label.split()[0] + ".trace.json")
        prof.export_chrome_trace(path)
        print(f"{label}: trace written to {path} (bench/trace_gaps.py {path})", flush=True)
    w1 = dict(sched.stats)
    while w.busy:   # the rest of the workload, unprofiled
        before = dict(sched.stats)
        w.step()
        timeline.append((round((time.perf_counter() - t_all) * 1e3, 1), "",
                         sched.stats["decode_tokens"] - before["decode_tokens"],
                         sched.stats["prefill_tokens"] - before["prefill_tokens"]))
    total_wall = time.perf_counter() - t_all
    m1 = _mem_stats()
    print(f"{label}: CUDA allocator during the run: " + ", ".join(f"{k} +{m1[k] - m0[k]}" for k in m0))
    if phases is not None:
        phases.restore()
        print(f"{label}: host ms per phase of the first steps (no syncs added): {phases.log[:12]}")
    print(f"{label}: steps launched (ms since added, kind, decode rows, prefill tokens): first {timeline[:8]}, "
          f"last {timeline[-3:]}")
    st = sched.stats
    # NOTE: kernels only: with the host recorded too (--trace), a host op's device time counts its kernels again,
    # and so does the GPU-side copy of each sglc.* range
    rows = [e for e in prof.key_averages() if dev_time(e) > 0 and not e.key.startswith("sglc.")
            and (not cuda or e.device_type != DeviceType.CPU)]
    busy = sum(dev_time(e) for e in rows) / 1e6
    cats: dict[str, float] = defaultdict(float)
    for e in rows:
        cats[_category(e.key)] += dev_time(e) / 1e6
    passes = w1["forward_passes"] - w0["forward_passes"]
    print(f"\n## {label}: window of {passes} passes ({dict(kinds)}), wall {wall * 1e3:.1f} ms, GPU busy "
          f"{busy * 1e3:.1f} ms ({busy / wall:.0%}); per pass: wall {wall / passes * 1e3:.2f} ms, busy "
          f"{busy / passes * 1e3:.2f} ms; decode rows/pass {(w1['decode_tokens'] - w0['decode_tokens']) / passes:.0f}, "
          f"prefill tokens/pass {(w1['prefill_tokens'] - w0['prefill_tokens']) / passes:.0f}")
    print("category | ms/pass | share of busy")
    for c, t in sorted(cats.items(), key=lambda x: -x[1]):
        print(f"{c} | {t / passes * 1e3:.3f} | {t / busy:.1%}")
    print("kernel | ms/pass | share | calls/pass")
    print("---|---|---|---")
    for e in sorted(rows, key=lambda e: -dev_time(e))[:top]:
        t = dev_time(e) / 1e6
        print(f"{e.key[:100]} | {t / passes * 1e3:.3f} | {t / busy:.1%} | {e.count / passes:.1f}")
    row = {"workload": label, "total_wall_s": round(total_wall, 2), "passes": st["forward_passes"] - s0["forward_passes"],
           "mixed": st["mixed_passes"] - s0["mixed_passes"], "prefill": st["prefill_passes"] - s0["prefill_passes"],
           "retractions": st["retractions"] - s0["retractions"],
           "win_passes": passes, "win_ms_pass": wall / passes * 1e3, "win_busy_ms_pass": busy / passes * 1e3,
           "gpu_util": round(busy / wall, 3),
           **{f"{c}_ms_pass": t / passes * 1e3 for c, t in cats.items()}}
    print(row, flush=True)
    return row


def main() -> None:
    from runtime.config import RuntimeConfig
    from runtime.worker import Worker, tune_gc

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=LLAMA3_8B)
    ap.add_argument("--workloads", default="offline,fork,fewshot,bs1")
    ap.add_argument("--offline-prompts", type=int, default=1000)
    ap.add_argument("--top", type=int, default=14)
    ap.add_argument("--mem-fraction-static", type=float, default=0.85)
    ap.add_argument("--mixed-chunk", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--disable-radix-cache", action="store_true", help="as bench_offline_gpu.py runs offline")
    ap.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "fp8_e4m3"],
                    help="fp8_e4m3: an fp8 KV pool, as bench_offline_gpu.py --kv-cache-dtype")
    ap.add_argument("--trace", metavar="DIR", help="write each window's Chrome trace here, host phases marked")
    ap.add_argument("--trace-passes", type=int, default=0,
                    help="with --trace: profile only this many passes from the window's start (0: the whole window)")
    ap.add_argument("--cuda-graph-max-bs", type=int, default=None, help="the engine's cuda_graph_max_bs")
    ap.add_argument("--no-gc-freeze", action="store_true",
                    help="leave the garbage collector as Python sets it (the worker process tunes it: tune_gc)")
    ap.add_argument("--cprofile", action="store_true",
                    help="profile the host (cProfile) over each window instead of the GPU kernels")
    args = ap.parse_args()
    device = os.environ.get("SGLC_BENCH_DEVICE", "cuda")
    cfg = RuntimeConfig(model_path=args.model, load_format="dummy",
                        dtype="bfloat16" if device == "cuda" else "float32", device=device,
                        skip_tokenizer_init=True, context_length=4096, mem_fraction_static=args.mem_fraction_static,
                        mixed_chunk=args.mixed_chunk, disable_radix_cache=args.disable_radix_cache,
                        kv_cache_dtype=args.kv_cache_dtype, cuda_graph_max_bs=args.cuda_graph_max_bs)
    w = Worker(cfg)
    vocab = w.runner.vocab_size
    rng = np.random.default_rng(0)
    # warm-up: kernels of the shapes below compile here, not in the windows
    w.add_requests([_req(f"w{i}", token_prompt(rng, 300 + 50 * i, vocab), 40) for i in range(16)])
    while w.busy:
        w.step()
    if not args.no_gc_freeze:
        tune_gc()   # as worker_main does in the Engine's worker process (SGLC_GC_FREEZE)
    rows = []

    def run(items, label, window):
        if args.trace_passes and args.trace:
            window = (window[0], min(window[1], window[0] + args.trace_passes))
        if args.cprofile:
            return host_profile(w, items, label, window, args.top)
        return profile(w, items, label, window, args.top, args.trace)
    for name in args.workloads.split(","):
        w.flush_cache()
        if name == "offline":
            n = args.offline_prompts
            ins, outs = rng.integers(256, 1025, n), rng.integers(128, 513, n)
            items = [_req(f"o{i}", token_prompt(rng, int(a), vocab), int(b)) for i, (a, b) in enumerate(zip(ins, outs))]
            rows.append(run(items, f"offline {n}", (300, 400)))
        elif name == "fork":
            items = []
            for p in range(8):
                pre = token_prompt(rng, 1000, vocab)
                items += [_req(f"f{p}.{b}", pre + token_prompt(rng, 16, vocab), 128) for b in range(32)]
            rows.append(run(items, "fork 8x32", (20, 60)))
        elif name == "fewshot":
            shared = token_prompt(rng, 1500, vocab)
            one = [_req(f"s{i}", shared + token_prompt(rng, 64, vocab), 1) for i in range(64 + 1000)]
            w.add_requests(one[:64])
            while w.busy:
                w.step()
            rows.append(run(one[64:], "fewshot 1000", (0, 10**9)))
        elif name == "prefill":
            for tag in ("w", "p"):   # a warm-up run of the same shape, then the profiled one
                items = [_req(f"{tag}{i}", token_prompt(rng, 1024, vocab), 1) for i in range(8)]
                if tag == "w":
                    w.add_requests(items)
                    while w.busy:
                        w.step()
            rows.append(run(items, "prefill 8x1024", (0, 10**9)))
        elif name == "bs1":
            rows.append(run([_req("b", token_prompt(rng, 128, vocab), 256)], "bs1", (100, 200)))
        else:
            raise SystemExit(f"unknown workload {name!r}")
    info = gpu_info()
    print_table(rows, f"profile_window ({info['gpu']}, {info['date']}, commit {info['commit']}, {info['knobs']})")
    save_json({"info": info, "rows": rows}, "profile_window.json")


if __name__ == "__main__":
    main()
