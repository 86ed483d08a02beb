# ruff: noqa: B023  (every closure below is timed inside its own loop iteration)
"""Attention kernel microbenchmarks on the GPU: Triton vs FlashInfer (when it imports) at page size 1,
Llama-3-8B head shapes (32 q heads, 8 KV heads, head dim 128, bf16), plus the fused norm/act/rotary ops.

    python bench/bench_kernels.py [--extend-configs] [--decode-sweep [all|large]] [--kv-dtype fp8_e4m3 [--widen-fp8]]

Decode reports µs and GB/s of KV read (the bytes floor, at the pool's element size); extend reports TFLOP/s
(causal FLOPs). ``--kv-dtype fp8_e4m3`` runs the decode benchmarks (and sweep) over an e4m3 pool, as
``--kv-cache-dtype fp8_e4m3`` gives the engine: half the bytes of bf16, so at the memory bound half the time
(FlashInfer is compared at bf16 only). Over an fp8 pool decode runs its dots in fp16 (the default);
``--widen-fp8`` times the other path, K/V widened to bf16 (``SGLC_FP8_DOT_DTYPE=bf16``). In the extend table,
``triton_*`` is the kernel over the ``(request, block)`` grid (``SGLC_EXTEND_TILES=grid``) and ``lpt_*`` the same
config with its tiles longest-first, the engine's default.
"""
from __future__ import annotations

import argparse

import torch
from gpu_common import gpu_info, print_table, save_json

from runtime.envs import triton_decode_kwargs

H, HKV, D = 32, 8, 128
DT = torch.bfloat16
# the decode kernel's grid as the engine takes it (SGLC_DECODE_GRID, checked by runtime/envs.py)
HEADS_FIRST = triton_decode_kwargs()["heads_first"]
POOL = 450_000


def _bench(fn, quick: bool = False) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=10 if quick else 25, rep=30 if quick else 100, return_mode="median")  # ms


def _indptr(lens):
    out = torch.zeros(len(lens) + 1, dtype=torch.int32, device="cuda")
    out[1:] = torch.tensor(lens, device="cuda").cumsum(0)
    return out


def _fi():
    try:
        import flashinfer
        return flashinfer
    except Exception:  # noqa: BLE001
        return None


def _rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _lens(bs: int, ctx) -> list[int]:
    """A case's context lengths: ``ctx`` tokens each, or ``(lo, hi)``: uniform in [lo, hi] (fixed draw), like
    the offline workload's running requests (prompts U[256, 1024] plus up to 512 outputs)."""
    if isinstance(ctx, int):
        return [ctx] * bs
    g = torch.Generator().manual_seed(bs)
    return torch.randint(ctx[0], ctx[1] + 1, (bs,), generator=g).tolist()


def _ctx_label(ctx) -> str:
    return str(ctx) if isinstance(ctx, int) else f"U[{ctx[0]},{ctx[1]}]"


# the decode sweep's cases and configs: "all" (every batch size, the session-2 space) or "large" (the batch
# sizes of offline decode, where one split holds a row: block sizes, warps and pipeline depth only)
SWEEPS = {
    "all": ([(1, 384), (1, 4096), (32, 288), (64, 1085), (256, 800), (400, 800)],
            (1, 2, 4, 8, 16), (32, 64, 128), (4, 8), (1, 2, 3)),
    "large": ([(256, 800), (400, 800), (470, (256, 1536))], (1,), (32, 64, 128), (2, 4, 8), (2, 3, 4)),
}


def _decode_case(kb, bs: int, ctx):
    """One decode case's inputs over the pool ``kb``: random slots, ``kv_indptr``, queries, an output buffer, and
    the K/V bytes a pass reads (in GB, at the pool's element size)."""
    lens = _lens(bs, ctx)
    total = sum(lens)
    idx = torch.randperm(POOL, device="cuda")[:total]
    q = torch.randn(bs, H, D, dtype=DT, device="cuda")
    return idx, _indptr(lens), q, torch.empty_like(q), total * HKV * D * 2 * kb.element_size() / 1e9


def sweep_decode(kb, vb, which: str = "all", fp16_dots: bool = False) -> list[dict]:
    """Triton decode: every (splits, BLOCK_N, num_warps, num_stages) on each case; the best five each."""
    from runtime.attention.triton_ops.decode_attention import alloc_decode_buffers, decode_attention_fwd

    cases, split_opts, bns, warps, stages = SWEEPS[which]
    rows = []
    for bs, ctx in cases:
        idx, indptr, q, o, gb = _decode_case(kb, bs, ctx)
        res = []
        for splits in [s for s in split_opts if s == 1 or bs * HKV * s <= 8 * 132]:
            mo, ml = alloc_decode_buffers(bs, H, D, splits, "cuda")
            for bn in bns:
                for w in warps:
                    for st in stages:
                        fn = lambda: decode_attention_fwd(q, kb, vb, o, indptr, idx, mo, ml, D ** -0.5,
                                                          block_n=bn, num_warps=w, num_stages=st,
                                                          fp16_dots=fp16_dots, heads_first=HEADS_FIRST)
                        try:
                            res.append((_bench(fn, quick=True), splits, bn, w, st))
                        except Exception as e:  # noqa: BLE001
                            print(f"decode cfg {(splits, bn, w, st)} failed: {type(e).__name__}")
        res.sort()
        for ms, splits, bn, w, st in res[:5]:
            rows.append({"bs": bs, "ctx": _ctx_label(ctx), "splits": splits, "block_n": bn, "warps": w, "stages": st,
                         "us": ms * 1e3, "GB_s": gb / ms * 1e3})
    return rows


def bench_decode(kb, vb, cases, fp16_dots: bool = False) -> list[dict]:
    from runtime.attention.triton_ops.decode_attention import (
        alloc_decode_buffers,
        decode_attention_fwd,
        decode_num_splits,
    )

    fi = _fi()
    rows = []
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for bs, ctx in cases:
        idx, indptr, q, o, gbytes = _decode_case(kb, bs, ctx)
        splits = decode_num_splits(bs, HKV, sms)
        mo, ml = alloc_decode_buffers(bs, H, D, splits, "cuda")
        run_t = lambda: decode_attention_fwd(q, kb, vb, o, indptr, idx, mo, ml, D ** -0.5, fp16_dots=fp16_dots,
                                             heads_first=HEADS_FIRST)
        t_ms = _bench(run_t)
        row = {"bs": bs, "ctx": _ctx_label(ctx), "splits": splits, "triton_us": t_ms * 1e3, "triton_GB_s": gbytes / t_ms * 1e3}
        if kb.dtype != DT:
            # fp8 pool: the first rows against an fp32 softmax over the same (widened) e4m3 values
            run_t()
            errs = []
            for i in range(min(bs, 4)):
                sl = idx[indptr[i]:indptr[i + 1]]
                k, v = kb[sl].float(), vb[sl].float()                        # [n, Hkv, D]
                qi = q[i].float().view(HKV, H // HKV, D)                      # heads of a group share a KV head
                w = torch.softmax(torch.einsum("ghd,ngd->ghn", qi, k) * D ** -0.5, dim=-1)
                errs.append(_rel(o[i], torch.einsum("ghn,ngd->ghd", w, v).reshape(H, D)))
            row["rel_err_vs_fp32"] = max(errs)
        if fi is not None and kb.dtype == DT:
            ws = torch.zeros(256 << 20, dtype=torch.uint8, device="cuda")
            w = fi.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD", use_tensor_cores=True)
            w.plan(indptr.cpu(), idx.int(), torch.ones(bs, dtype=torch.int32), H, HKV, D, 1,
                   pos_encoding_mode="NONE", q_data_type=DT, kv_data_type=DT, sm_scale=D ** -0.5)
            cache = (kb.unsqueeze(1), vb.unsqueeze(1))
            ref = w.run(q, cache)
            f_ms = _bench(lambda: w.run(q, cache))
            row.update(fi_us=f_ms * 1e3, fi_GB_s=gbytes / f_ms * 1e3, triton_vs_fi=f_ms / t_ms,
                       rel_err_vs_fi=_rel(o, ref))
        rows.append(row)
    return rows


def bench_extend(kb, vb, cases, configs) -> list[dict]:
    from runtime.attention.extend_plan import lpt_tiles
    from runtime.attention.triton_ops.extend_attention import (
        extend_attention_fwd,
        extend_block_config,
        extend_block_tokens,
    )
    from runtime.host_copy import h2d

    fi = _fi()
    rows = []
    for name, prefix, ext in cases:
        seq = [p + e for p, e in zip(prefix, ext)]
        idx = torch.randperm(POOL, device="cuda")[:sum(seq)]
        kv_indptr, qo_indptr = _indptr(seq), _indptr(ext)
        q = torch.randn(sum(ext), H, D, dtype=DT, device="cuda")
        o = torch.empty_like(q)
        # this pass's K/V (the new tokens' pool rows), as strided views like the fused QKV projection's
        new = torch.cat([idx[a + p:b] for a, b, p in zip(kv_indptr[:-1].tolist(), kv_indptr[1:].tolist(), prefix)])
        kv = torch.stack([kb[new], vb[new]], dim=1)
        ext_kv = {"k_ext": kv[:, 0], "v_ext": kv[:, 1]}
        flops = sum(4 * e * (p + (e + 1) / 2) * H * D for p, e in zip(prefix, ext))
        row = {"case": name, "q_tokens": sum(ext), "kv_tokens": sum(seq)}
        best = None
        heavy = sum(prefix) >= 4 * sum(ext)
        for cfg in configs or [extend_block_config(D, "cuda", heavy, H // HKV, max(ext), len(ext), HKV)]:
            fn = lambda c=cfg: extend_attention_fwd(q, kb, vb, o, qo_indptr, kv_indptr, idx, max(ext),
                                                    D ** -0.5, config=c, **ext_kv)
            try:
                ms = _bench(fn)
            except Exception as e:  # noqa: BLE001 - e.g. out of shared memory for a config
                print(f"config {cfg} failed: {type(e).__name__}")
                continue
            if configs:
                row[f"cfg{cfg}_TF"] = flops / ms / 1e9
            if best is None or ms < best[0]:
                best = (ms, cfg)
        row.update(triton_us=best[0] * 1e3, triton_TFLOP_s=flops / best[0] / 1e9, best_cfg=str(best[1]))
        # the same kernel reading the new tokens' K/V through the pool's slots (no k_ext/v_ext)
        pool_ms = _bench(lambda: extend_attention_fwd(q, kb, vb, o, qo_indptr, kv_indptr, idx, max(ext),
                                                      D ** -0.5, config=best[1]))
        row.update(via_pool_TFLOP_s=flops / pool_ms / 1e9)
        # the same config with the query tiles taken longest-first from the host's list (the engine's default)
        tb, tm = lpt_tiles(ext, prefix, extend_block_tokens(best[1], H // HKV))
        tiles = (h2d(tb, torch.int32, "cuda"), h2d(tm, torch.int32, "cuda"))
        lpt_ms = _bench(lambda: extend_attention_fwd(q, kb, vb, o, qo_indptr, kv_indptr, idx, max(ext), D ** -0.5,
                                                     config=best[1], tiles=tiles, **ext_kv))
        row.update(lpt_TFLOP_s=flops / lpt_ms / 1e9)
        if fi is not None:
            ws = torch.zeros(256 << 20, dtype=torch.uint8, device="cuda")
            w = fi.BatchPrefillWithPagedKVCacheWrapper(ws, "NHD")
            w.plan(qo_indptr.cpu(), kv_indptr.cpu(), idx.int(), torch.ones(len(ext), dtype=torch.int32), H, HKV,
                   D, 1, causal=True, q_data_type=DT, kv_data_type=DT, sm_scale=D ** -0.5)
            cache = (kb.unsqueeze(1), vb.unsqueeze(1))
            ref = w.run(q, cache)
            f_ms = _bench(lambda: w.run(q, cache))
            extend_attention_fwd(q, kb, vb, o, qo_indptr, kv_indptr, idx, max(ext), D ** -0.5, config=best[1],
                                 tiles=tiles, **ext_kv)
            lpt_err = _rel(o, ref)
            extend_attention_fwd(q, kb, vb, o, qo_indptr, kv_indptr, idx, max(ext), D ** -0.5, config=best[1],
                                 **ext_kv)
            row.update(fi_us=f_ms * 1e3, fi_TFLOP_s=flops / f_ms / 1e9, triton_vs_fi=f_ms / best[0],
                       lpt_vs_fi=f_ms / lpt_ms, rel_err_vs_fi=_rel(o, ref), lpt_rel_err_vs_fi=lpt_err)
        rows.append(row)
    return rows


def bench_fused() -> list[dict]:
    from runtime.layers import basic
    from runtime.layers import triton_fused as tf

    rows = []
    for t in (1, 32, 8192):
        x = torch.randn(t, 4096, dtype=DT, device="cuda")
        r = torch.randn_like(x)
        norm = basic.RMSNorm(4096, 1e-5).to("cuda", DT)
        gu = torch.randn(t, 2 * 14336, dtype=DT, device="cuda")
        rope = basic.RotaryEmbedding(D, 8192, 500000.0).to("cuda")
        qkv = torch.randn(t, (H + 2 * HKV) * D, dtype=DT, device="cuda")
        q, k = qkv[:, :H * D].view(t, H, D), qkv[:, H * D:(H + HKV) * D].view(t, HKV, D)
        pos = torch.randint(0, 8192, (t,), device="cuda")
        pairs = {
            "rmsnorm+res": (lambda: norm(x, r), lambda: tf.rms_norm(x, norm.weight, 1e-5, r)),
            "silu_and_mul": (lambda: basic.silu_and_mul(gu), lambda: tf.silu_and_mul(gu)),
            "rotary": (lambda: rope(pos, q, k), lambda: tf.rotary_embedding(pos, q, k, rope.cos, rope.sin)),
        }
        for name, (ref_fn, fused_fn) in pairs.items():
            rows.append({"op": name, "tokens": t, "torch_us": _bench(ref_fn) * 1e3,
                         "fused_us": _bench(fused_fn) * 1e3})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--extend-configs", action="store_true", help="sweep Triton extend block configs")
    ap.add_argument("--decode-sweep", nargs="?", const="all", choices=sorted(SWEEPS),
                    help="sweep Triton decode configs: all (default) or large (offline batch sizes only)")
    ap.add_argument("--kv-dtype", default="bf16", choices=["bf16", "fp8_e4m3"],
                    help="the pool's element type in the decode benchmarks (extend and FlashInfer stay bf16)")
    ap.add_argument("--decode-only", action="store_true", help="only the decode table (and sweep): no extend or fused ops")
    ap.add_argument("--widen-fp8", action="store_true",
                    help="fp8 pool: decode widens K/V to bf16 (SGLC_FP8_DOT_DTYPE=bf16) instead of its default fp16 dots")
    args = ap.parse_args()
    fp16_dots = args.kv_dtype != "bf16" and not args.widen_fp8
    torch.manual_seed(0)
    kb = torch.randn(POOL + 1, HKV, D, dtype=DT, device="cuda")
    vb = torch.randn(POOL + 1, HKV, D, dtype=DT, device="cuda")
    dkb, dvb = kb, vb
    if args.kv_dtype == "fp8_e4m3":
        dkb, dvb = kb.to(torch.float8_e4m3fn), vb.to(torch.float8_e4m3fn)
    dec = bench_decode(dkb, dvb, [(1, 384), (1, 4096), (32, 288), (64, 1085), (128, 800), (256, 800), (400, 800),
                                  (470, (256, 1536))], fp16_dots)
    dots = "fp16 dots" if fp16_dots else "dots in q's type"
    grid = "(KV heads, rows, splits)" if HEADS_FIRST else "(rows, KV heads, splits)"
    print_table(dec, f"decode attention ({args.kv_dtype} KV, bf16 q, {dots}, grid {grid}, 32/8 heads, d128, page size 1)")
    sweep = []
    if args.decode_sweep:
        sweep = sweep_decode(dkb, dvb, args.decode_sweep, fp16_dots)
        print_table(sweep, "decode sweep: best 5 configs per case")
    if args.decode_only:
        save_json({"info": gpu_info(), "kv_dtype": args.kv_dtype, "fp16_dots": fp16_dots, "heads_first": HEADS_FIRST,
                   "decode": dec, "sweep": sweep}, f"bench_kernels_decode_{args.kv_dtype}.json")
        return
    g = torch.Generator().manual_seed(1)
    rnd_p = torch.randint(0, 1024, (16,), generator=g).tolist()
    rnd_e = torch.randint(1, 512, (16,), generator=g).tolist()
    cases = [("prefill 8x1024", [0] * 8, [1024] * 8), ("fewshot 64x(1500+64)", [1500] * 64, [64] * 64),
             ("fewshot 256x(1500+64)", [1500] * 256, [64] * 256),
             ("fork 32x(1000+16)", [1000] * 32, [16] * 32), ("probe mix 16", rnd_p, rnd_e)]
    configs = None
    if args.extend_configs:
        # (BLOCK_M, BLOCK_N, num_warps, num_stages, PACK): PACK heads of a GQA group share a program's rows
        configs = [(128, 32, 4, 3, 1), (64, 64, 4, 3, 1), (128, 64, 8, 3, 1), (64, 64, 4, 3, 4),
                   (128, 32, 4, 3, 4), (128, 64, 4, 3, 4), (128, 64, 8, 3, 4), (128, 128, 8, 3, 4),
                   (256, 64, 8, 3, 4), (256, 32, 8, 3, 4), (128, 64, 4, 3, 2), (128, 64, 8, 2, 4)]
    ext = bench_extend(kb, vb, cases, configs)
    print_table(ext, "extend attention (causal, cached prefix)")
    fused = bench_fused()
    print_table(fused, "fused ops vs torch layers")
    save_json({"info": gpu_info(), "kv_dtype": args.kv_dtype, "fp16_dots": fp16_dots, "decode": dec, "sweep": sweep, "extend": ext, "fused": fused}, "bench_kernels.json")


if __name__ == "__main__":
    main()
