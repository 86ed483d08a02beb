"""Which GPU kernels a forward pass spends its time in (torch.profiler), for the shapes the peer benchmarks
stress: prefill 8 x 1024 and a decode step of 256 requests x 1,000 context (eager, so kernels are visible).

    python bench/profile_kernels.py [--top 15]
"""
from __future__ import annotations

import argparse

from bench_latency import _batches
from gpu_common import gpu_info, make_runner, sync


def profile(runner, batch, label: str, top: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    for _ in range(3):   # warm-up: Triton JIT, cuBLAS heuristics
        runner.forward(batch)
    sync()
    with tprofile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            runner.forward(batch)
        sync()
    rows = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.device_time_total for e in rows) / 5
    print(f"\n## {label}: {total / 1e3:.2f} ms of kernels per forward")
    print("kernel | ms/forward | share | calls/forward")
    print("---|---|---|---")
    for e in sorted(rows, key=lambda e: -e.device_time_total)[:top]:
        t = e.device_time_total / 5
        print(f"{e.key[:90]} | {t / 1e3:.3f} | {t / total:.1%} | {e.count // 5}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    runner = make_runner()
    print(gpu_info())
    prefill, _ = _batches(runner, 8, 1024, 1)
    profile(runner, prefill, "prefill 8 x 1024", args.top)
    _, decode = _batches(runner, 256, 1000, 2)
    import torch

    tokens = torch.zeros(256, dtype=torch.long, device=runner.device)
    profile(runner, decode(0, tokens), "decode 256 x 1001 (eager)", args.top)


if __name__ == "__main__":
    main()
