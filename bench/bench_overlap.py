"""Can decode attention (memory-bound) and the linear layers (compute-bound) share the GPU?

A probe for nano-batching (NanoFlow, arXiv 2408.12757): split a decode pass's rows in two and run the halves'
layer chains on two CUDA streams, so one half's attention overlaps the other half's GEMMs. Llama-3-8B shapes
(hidden 4,096, 32/8 heads of 128, MLP 14,336), bf16 weights (``--weight-sets`` distinct copies cycled so nothing
stays in L2), the engine's Triton decode kernel over a bf16 pool of random slots.

    python bench/bench_overlap.py [--rows 491] [--prefill 543] [--layers 16] [--carveouts 0,24,48]

Prints ms per layer for each schedule, and the share of the serial time it saves:

- ``serial``: one stream, the model's order (qkv, attention, o, gate_up, SiLU-and-mul, down) over all rows;
- ``gemm only`` / ``attn only``: the two parts alone (their sum is about ``serial``);
- ``free``: attention of all rows on one stream, the GEMM chain of all rows on another, no dependencies
  (the bound of what overlap can give); ``gemm first`` / ``attn first``: that stream at the higher priority;
- ``nano2``: the rows in two halves, each half's chain on its own stream, the second half one op behind;
- ``mixed``: ``--prefill`` prefill tokens' GEMM chain beside the decode rows' chain (a mixed pass's two parts).

``--carveouts``: cuBLAS's SM carve-out (``torch._C._set_sm_carveout_experimental``) for every GEMM, so the
attention kernel finds SMs free.
"""
from __future__ import annotations

import argparse
import statistics

import torch
from gpu_common import gpu_info, print_table, save_json

HID, H, HKV, D, INTER = 4096, 32, 8, 128, 14336
DT = torch.bfloat16


class Layer:
    """One decoder layer's weights (the fused qkv and gate_up projections, as the engine holds them)."""

    def __init__(self) -> None:
        def w(n, k):
            return torch.randn(n, k, dtype=DT, device="cuda") * k ** -0.5

        self.qkv, self.o = w((H + 2 * HKV) * D, HID), w(HID, H * D)
        self.gate_up, self.down = w(2 * INTER, HID), w(HID, INTER)


class Attn:
    """Decode attention for ``rows`` requests with context U[lo, hi] over a shared random-slot bf16 pool."""

    def __init__(self, kb, vb, rows: int, lo: int, hi: int, seed: int) -> None:
        from runtime.attention.triton_ops.decode_attention import alloc_decode_buffers, decode_num_splits

        g = torch.Generator().manual_seed(seed)
        lens = torch.randint(lo, hi + 1, (rows,), generator=g)
        self.indptr = torch.zeros(rows + 1, dtype=torch.int32, device="cuda")
        self.indptr[1:] = lens.cumsum(0).cuda()
        self.idx = torch.randint(0, kb.shape[0], (int(lens.sum()),), device="cuda", dtype=torch.int32)
        self.kb, self.vb = kb, vb
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        self.bufs = alloc_decode_buffers(rows, H, D, decode_num_splits(rows, HKV, sms), "cuda")
        self.o = torch.empty(rows, H, D, dtype=DT, device="cuda")

    def __call__(self, q):
        from runtime.attention.triton_ops.decode_attention import decode_attention_fwd

        decode_attention_fwd(q.view(-1, H, D), self.kb, self.vb, self.o, self.indptr, self.idx, *self.bufs,
                             D ** -0.5)
        return self.o.view(-1, H * D)


def ops(x, layer: Layer, attn: Attn | None):
    """One layer's chain as a list of steps (closures over a running value), so schedules can interleave them."""
    st = {"h": x}

    def qkv():
        st["qkv"] = torch.nn.functional.linear(st["h"], layer.qkv)

    def att():
        q = st["qkv"][:, :H * D].contiguous()
        st["a"] = attn(q) if attn is not None else q

    def o():
        st["h2"] = torch.nn.functional.linear(st["a"], layer.o)

    def mlp():
        gu = torch.nn.functional.linear(st["h2"], layer.gate_up)
        act = torch.nn.functional.silu(gu[:, :INTER]) * gu[:, INTER:]
        st["h"] = torch.nn.functional.linear(act, layer.down)

    return [qkv, att, o, mlp]


def timed(fn, reps: int = 5) -> float:
    """Median wall ms of ``fn`` (which runs all its layers), both streams joined."""
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        out.append(a.elapsed_time(b))
    return statistics.median(out)


def run_streams(chains: list[list], lag: int, priorities: tuple | None = None) -> None:
    """Chains on their own streams; chain i's step j waits for chain i-1's step j + lag (lag < 0: no waits).
    ``priorities``: each stream's CUDA priority (lower is higher; the hardware dispatches the higher stream's
    blocks first when SMs free up)."""
    cur = torch.cuda.current_stream()
    streams = [torch.cuda.Stream(priority=p) for p in (priorities or [0] * len(chains))]
    done: list[list] = [[] for _ in chains]
    for s in streams:
        s.wait_stream(cur)
    n = max(len(c) for c in chains)
    for j in range(n):
        for i, (c, s) in enumerate(zip(chains, streams, strict=True)):
            if j >= len(c):
                continue
            with torch.cuda.stream(s):
                if lag >= 0 and i > 0:
                    k = min(j + lag, len(chains[i - 1]) - 1)
                    if k < len(done[i - 1]):
                        s.wait_event(done[i - 1][k])
                c[j]()
                ev = torch.cuda.Event()
                ev.record(s)
                done[i].append(ev)
    for s in streams:
        cur.wait_stream(s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=491, help="decode rows of the pass (the bf16 offline window's)")
    ap.add_argument("--prefill", type=int, default=543, help="prefill tokens of a mixed pass")
    ap.add_argument("--ctx", default="256,1536", help="decode context lengths: uniform in LO,HI")
    ap.add_argument("--layers", type=int, default=16, help="layers per timed run")
    ap.add_argument("--weight-sets", type=int, default=4, help="distinct weight copies cycled over the layers")
    ap.add_argument("--carveouts", default="0,24,48", help="cuBLAS SM carve-outs to try")
    args = ap.parse_args()
    lo, hi = (int(v) for v in args.ctx.split(","))
    torch.manual_seed(0)
    pool = args.rows * hi
    kb = torch.randn(pool, HKV, D, dtype=DT, device="cuda")
    vb = torch.randn(pool, HKV, D, dtype=DT, device="cuda")
    layers = [Layer() for _ in range(args.weight_sets)]
    r, half = args.rows, args.rows // 2
    att_all = Attn(kb, vb, r, lo, hi, 1)
    att_a, att_b = Attn(kb, vb, half, lo, hi, 2), Attn(kb, vb, r - half, lo, hi, 3)
    x = torch.randn(r, HID, dtype=DT, device="cuda") * 0.1
    xp = torch.randn(args.prefill, HID, dtype=DT, device="cuda") * 0.1
    q_all = torch.randn(r, H * D, dtype=DT, device="cuda")
    L = args.layers

    def chain(rows_x, attn, with_attn=True):
        steps = []
        for i in range(L):
            steps += ops(rows_x, layers[i % len(layers)], attn if with_attn else None)
        return steps

    def serial():
        for s in chain(x, att_all):
            s()

    def gemm_only():
        for s in chain(x, None, with_attn=False):
            s()

    def attn_only():
        for _ in range(L):
            att_all(q_all)

    def free(prio=None):
        return lambda: run_streams([[lambda: [att_all(q_all) for _ in range(L)]], chain(x, None, with_attn=False)],
                                   lag=-1, priorities=prio)

    def nano2(lag):
        return lambda: run_streams([chain(x[:half], att_a), chain(x[half:], att_b)], lag=lag)

    def mixed_serial():
        for s in chain(x, att_all) + chain(xp, None, with_attn=False):
            s()

    def mixed_streams():
        run_streams([chain(x, att_all), chain(xp, None, with_attn=False)], lag=-1)

    cases = [("serial", serial), ("gemm only", gemm_only), ("attn only", attn_only), ("free", free()), ("free gemm first", free((0, -1))),
             ("free attn first", free((-1, 0))),
             ("nano2 lag 0", nano2(0)), ("nano2 lag 1", nano2(1)), ("nano2 free", nano2(-1)),
             ("mixed serial", mixed_serial), ("mixed 2 streams", mixed_streams)]
    rows = []
    for co in (int(v) for v in args.carveouts.split(",")):
        torch._C._set_sm_carveout_experimental(co or None)
        base = None
        for name, fn in cases:
            ms = timed(fn) / L
            if name in ("serial", "mixed serial"):   # each block's baseline
                base = ms
            rows.append({"carveout": co, "schedule": name, "ms_per_layer": ms,
                         "vs_serial": f"{base / ms:.3f}x" if name not in ("gemm only", "attn only") else ""})
    torch._C._set_sm_carveout_experimental(None)
    info = gpu_info()
    print(f"# {info['gpu']} torch {info['torch']} triton {info['triton']} {info['date']} commit {info['commit']}")
    print(f"# rows {r} (halves {half}/{r - half}), prefill {args.prefill}, ctx U[{lo},{hi}], {L} layers a run")
    print_table(rows, "ms per layer")
    save_json({"info": info, "rows": rows}, "bench_overlap.json")


if __name__ == "__main__":
    main()
