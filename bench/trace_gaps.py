"""What the host was doing while the GPU waited: reads a torch.profiler Chrome trace (``profile_window.py --trace``).

The GPU's busy time is the union of its kernels, copies and memsets. Every stretch between them longer than
``--min-gap`` microseconds is a gap: the GPU had nothing queued. Each microsecond of a gap is charged to the
innermost ``sglc.*`` host range open at that instant (``profile_window.py`` marks the step's phases: the next
batch's choice and build, the forward launch, sampling, collecting and applying the previous batch), or to
``(no range)``; the CUDA runtime calls inside gaps are summed by name (a ``cudaEventSynchronize`` there would
mean the host waited for work that had already finished, a ``cudaHostAlloc`` a pinned allocation). A second
table gives each range's host time per step, gap or not.

    python bench/trace_gaps.py TRACE.json [--min-gap 20]
"""
from __future__ import annotations

import argparse
import bisect
import itertools
import json
from collections import defaultdict

GPU_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}


def load(path: str) -> list[dict]:
    with open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X" and "dur" in e]


def merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def gaps_of(busy: list[tuple[float, float]], min_gap: float) -> list[tuple[float, float]]:
    return [(b0, a1) for (_, b0), (a1, _) in itertools.pairwise(busy) if a1 - b0 >= min_gap]


def charge(gaps: list[tuple[float, float]], ranges: list[tuple[float, float, str]]) -> dict[str, float]:
    """Microseconds of ``gaps`` under each range, innermost (latest-starting open range) first; the rest is
    ``(no range)``."""
    ranges = sorted(ranges)
    starts = [r[0] for r in ranges]
    out: dict[str, float] = defaultdict(float)
    for a, b in gaps:
        # the ranges overlapping [a, b): those starting before b and ending after a
        cand = [r for r in ranges[:bisect.bisect_left(starts, b)] if r[1] > a]
        cuts = sorted({a, b, *(t for r in cand for t in r[:2] if a < t < b)})
        for lo, hi in itertools.pairwise(cuts):
            mid = (lo + hi) / 2
            open_ = [r for r in cand if r[0] <= mid < r[1]]
            out[max(open_)[2] if open_ else "(no range)"] += hi - lo
    return dict(out)


def analyze(events: list[dict], min_gap: float = 20.0) -> dict:
    gpu = [(e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") in GPU_CATS]
    if not gpu:
        raise SystemExit("no GPU events in the trace (was it recorded with ProfilerActivity.CUDA?)")
    busy = merge(gpu)
    lo, hi = busy[0][0], busy[-1][1]
    gaps = gaps_of(busy, min_gap)
    marks = [(e["ts"], e["ts"] + e["dur"], e["name"]) for e in events
             if e.get("cat") == "user_annotation" and str(e.get("name", "")).startswith("sglc.")]
    runtime = [(e["ts"], e["ts"] + e["dur"], e["name"]) for e in events if e.get("cat") in ("cuda_runtime",
                                                                                            "cuda_driver")]
    in_gaps: dict[str, float] = defaultdict(float)
    for a, b, name in runtime:
        for g0, g1 in gaps:   # NOTE: few calls overlap a gap; a linear scan per call is fine for a short window
            if g0 < b and a < g1:
                in_gaps[name] += min(b, g1) - max(a, g0)
    steps = sum(1 for m in marks if m[2] == "sglc.step") or 1
    per_step: dict[str, float] = defaultdict(float)
    for a, b, name in marks:
        per_step[name] += (b - a) / steps
    return {"window_us": hi - lo, "busy_us": sum(b - a for a, b in busy), "gaps": len(gaps),
            "gap_us": sum(b - a for a, b in gaps), "steps": steps, "charged": charge(gaps, marks),
            "runtime_in_gaps": dict(in_gaps), "range_us_per_step": dict(per_step)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--min-gap", type=float, default=20.0, help="shortest idle stretch counted, microseconds")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    r = analyze(load(args.trace), args.min_gap)
    n = r["steps"]
    print(f"window {r['window_us'] / 1e3:.1f} ms over {n} steps: GPU busy {r['busy_us'] / 1e3:.1f} ms "
          f"({r['busy_us'] / r['window_us']:.0%}), {r['gaps']} gaps >= {args.min_gap:g} us totalling "
          f"{r['gap_us'] / 1e3:.1f} ms ({r['gap_us'] / n / 1e3:.2f} ms a step)\n")
    print("host range open while the GPU waited | ms a step | share of the gaps")
    print("---|---|---")
    for name, us in sorted(r["charged"].items(), key=lambda x: -x[1])[:args.top]:
        print(f"{name} | {us / n / 1e3:.3f} | {us / max(r['gap_us'], 1e-9):.0%}")
    print("\nCUDA runtime call inside gaps | ms a step")
    print("---|---")
    for name, us in sorted(r["runtime_in_gaps"].items(), key=lambda x: -x[1])[:args.top]:
        print(f"{name} | {us / n / 1e3:.3f}")
    print("\nhost range | ms a step (whole window)")
    print("---|---")
    for name, us in sorted(r["range_us_per_step"].items(), key=lambda x: -x[1]):
        print(f"{name} | {us / 1e3:.3f}")


if __name__ == "__main__":
    main()
