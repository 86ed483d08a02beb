"""The cascade (shared-prefix) decode stage on fork-shaped batches: its configs swept against the engine's.

A fork decode batch (bench_prefix.py's fork: 8 prefixes of 1,000 tokens x 32 branches, each branch 16 own
tokens plus what it has decoded) runs two kernels per layer: the shared stage (each chunk of branches reads its
prefix once for all their queries and writes fp32 partials per row) and stage 1 (each row's own tokens, merging
those partials). This times both together for every config of the shared stage:

* ``chunk``: branches per chunk (the engine: ``cascade.chunk_members`` = 64 query rows / GQA group = 16);
* ``splits``: splits of the prefix (the engine: ``cascade_num_splits``); each split writes a partial per row,
  which stage 1 reads back, so more splits = more parallel programs but more fp32 traffic;
* ``block_n`` / ``warps``: the shared stage's key block and warps (the engine: 64 / 4).

    python bench/bench_cascade.py [--own 24,80,144] [--top 5]
    TRITON_INTERPRET=1 SGLC_TRITON_INTERPRET=1 python bench/bench_cascade.py --smoke    # CPU: the script's logic

Each row is checked against plain decode (no cascade) on the same batch before it is timed.
"""
from __future__ import annotations

import argparse
import itertools

import torch
from gpu_common import gpu_info, print_table, save_json

from runtime.attention.cascade import chunk_members, plan_cascade
from runtime.forward_batch import CascadeMeta

H, HKV, D = 32, 8, 128
GROUP = H // HKV


class _Node:
    """A radix node as ``plan_cascade`` reads it: ``key`` (its tokens) and ``parent``."""

    def __init__(self, n: int, parent=None) -> None:
        self.key, self.parent = [0] * n, parent


def fork_batch(groups: int, members: int, prefix: int, own: int, dev: str):
    """Row b of group g: the group's ``prefix`` slots, then ``own`` slots of its own; returns the radix nodes,
    kv_indptr and kv_indices."""
    root = _Node(0)
    nodes, rows, nxt = [], [], 0
    for _ in range(groups):
        pnode = _Node(prefix, root)
        head = torch.arange(nxt, nxt + prefix)
        nxt += prefix
        for _ in range(members):
            nodes.append(_Node(own, pnode))
            rows.append(torch.cat([head, torch.arange(nxt, nxt + own)]))
            nxt += own
    lens = [r.numel() for r in rows]
    indptr = torch.zeros(len(lens) + 1, dtype=torch.int32)
    indptr[1:] = torch.tensor(lens).cumsum(0)
    return nodes, indptr.to(dev), torch.cat(rows).to(dev), nxt


def cascade_meta(nodes, indptr, chunk: int, splits: int, dev: str) -> CascadeMeta:
    plan = plan_cascade(nodes, indptr[:-1].tolist(), chunk, max_chunks=len(nodes))
    t = lambda x: torch.tensor(x, dtype=torch.int32, device=dev)
    meta = CascadeMeta(t(plan.skip), t(plan.rows).view(-1, chunk), t(plan.start), t(plan.length))
    meta.splits = splits
    return meta


def sweep(case: dict, configs, dev: str, bench, top: int) -> tuple[list[dict], dict]:
    from runtime.attention.triton_ops.decode_attention import (
        alloc_decode_buffers,
        cascade_num_splits,
        decode_attention_fwd,
        decode_num_splits,
    )

    nodes, indptr, idx, slots = fork_batch(case["groups"], case["members"], case["prefix"], case["own"], dev)
    b = len(nodes)
    dt = torch.bfloat16 if dev == "cuda" else torch.float32
    g = torch.Generator(device=dev).manual_seed(0)
    kb = torch.randn(slots, HKV, D, dtype=dt, device=dev, generator=g)
    vb = torch.randn(slots, HKV, D, dtype=dt, device=dev, generator=g)
    q = torch.randn(b, H, D, dtype=dt, device=dev, generator=g)
    scale = D ** -0.5
    own_splits = decode_num_splits(b, HKV)

    def run(meta, **kw):
        o = torch.empty_like(q)
        mo, ml = alloc_decode_buffers(b, H, D, own_splits + (meta.splits if meta else 0), dev)
        fn = lambda: decode_attention_fwd(q, kb, vb, o, indptr, idx, mo, ml, scale, cascade=meta, **kw)
        fn()
        return o, fn

    ref, plain = run(None)
    base = {"case": case["name"], "plain_us": bench(plain) * 1e3}
    engine = (chunk_members(GROUP), cascade_num_splits(b, HKV), 64, 4)
    rows = []
    for chunk, splits, block_n, warps in configs:
        try:
            out, fn = run(cascade_meta(nodes, indptr, chunk, splits, dev), shared_block_n=block_n,
                          shared_warps=warps)
        except Exception as e:   # a config past the SM's shared memory or registers is skipped
            if type(e).__name__ != "OutOfResources":
                raise
            continue
        err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
        if err > 2e-2:
            raise AssertionError(f"{case['name']} chunk {chunk} splits {splits} block_n {block_n} warps {warps}: "
                                 f"rel err {err:.3g} against plain decode")
        rows.append({"case": case["name"], "chunk": chunk, "splits": splits, "block_n": block_n, "warps": warps,
                     "us": bench(fn) * 1e3, "engine": (chunk, splits, block_n, warps) == engine})
    rows.sort(key=lambda r: r["us"])
    eng = next((r for r in rows if r["engine"]), None)
    best = rows[0]
    summary = {**base, "engine_us": eng["us"] if eng else None,
               "best": f"chunk {best['chunk']} splits {best['splits']} block_n {best['block_n']} warps {best['warps']}",
               "best_us": best["us"], "engine / best": eng["us"] / best["us"] if eng else None}
    shown = rows[:top] + ([eng] if eng and eng not in rows[:top] else [])
    return shown, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--own", default="24,80,144",
                    help="own tokens per branch (16 of its prompt + those decoded so far), comma-separated")
    ap.add_argument("--top", type=int, default=5, help="configs shown per case (plus the engine's)")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and two configs: check the script (CPU)")
    args = ap.parse_args()
    if args.smoke:
        dev = "cpu"
        cases = [{"name": "smoke 2x4x(40+6)", "groups": 2, "members": 4, "prefix": 40, "own": 6}]
        configs = [(4, 1, 16, 4), (2, 2, 16, 4)]
        bench = lambda fn: 0.0
    else:
        from triton.testing import do_bench

        dev = "cuda"
        cases = [{"name": f"fork 8x32x(1000+{n})", "groups": 8, "members": 32, "prefix": 1000, "own": n}
                 for n in map(int, args.own.split(","))]
        cases.append({"name": "small groups 64x4x(500+40)", "groups": 64, "members": 4, "prefix": 500, "own": 40})
        configs = list(itertools.product([8, 16, 32], [1, 2, 4, 8], [32, 64, 128], [4, 8]))
        bench = lambda fn: do_bench(fn, warmup=25, rep=100, return_mode="median")
    shown, summary = [], []
    for case in cases:
        s, m = sweep(case, configs, dev, bench, args.top)
        shown += s
        summary.append(m)
    print_table(shown, "cascade decode (shared stage + stage 1), best configs per case and the engine's (µs)")
    print_table(summary, "per case: plain decode, the engine's cascade config, the best one (µs)")
    save_json({"info": gpu_info(), "rows": shown, "summary": summary}, "bench_cascade.json")


if __name__ == "__main__":
    main()
