"""Static-batch latency on the GPU (SGLang's bench_one_batch): one prefill of ``batch × input_len`` tokens,
then ``output_len - 1`` greedy decode steps, straight on the ModelRunner (no scheduler).

    python bench/bench_latency.py --batch 1,32 --input-len 256 --output-len 32 \\
        --backends triton,flashinfer --load-format dummy

Decode steps build their batch on the device from a static slot table and feed the argmax back on the
device, so the only host sync per step is the one that times it.
"""
from __future__ import annotations

import argparse
import statistics
import time

from gpu_common import LLAMA3_8B, gpu_info, make_runner, print_table, save_json, set_backend, sync


def _batches(runner, bs: int, in_len: int, out_len: int):
    import torch

    from runtime.forward_batch import ForwardBatch, ForwardMode

    dev = runner.device
    max_len = in_len + out_len
    table = torch.arange(bs * max_len, device=dev).view(bs, max_len)
    ar = torch.arange(bs + 1, dtype=torch.int32, device=dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    lo = min(1000, runner.vocab_size // 4)
    ids = torch.randint(lo, runner.vocab_size - lo, (bs * in_len,), device=dev, generator=gen)
    prefill = ForwardBatch(
        mode=ForwardMode.EXTEND, input_ids=ids, positions=torch.arange(in_len, device=dev).repeat(bs),
        out_cache_loc=table[:, :in_len].reshape(-1), qo_indptr=ar * in_len, kv_indptr=ar * in_len,
        kv_indices=table[:, :in_len].reshape(-1), prefix_lens=torch.zeros(bs, dtype=torch.int32, device=dev),
        seq_lens=torch.full((bs,), in_len, dtype=torch.int32, device=dev), extend_lens_cpu=[in_len] * bs,
        prefix_lens_cpu=[0] * bs, logits_rows=ar[1:].long() * in_len - 1)

    def decode(step: int, tokens):
        n = in_len + step + 1  # context length including the new token
        return ForwardBatch(
            mode=ForwardMode.DECODE, input_ids=tokens, positions=torch.full((bs,), n - 1, device=dev),
            out_cache_loc=table[:, n - 1], qo_indptr=ar, kv_indptr=ar * n, kv_indices=table[:, :n].reshape(-1),
            prefix_lens=torch.full((bs,), n - 1, dtype=torch.int32, device=dev),
            seq_lens=torch.full((bs,), n, dtype=torch.int32, device=dev), extend_lens_cpu=[1] * bs,
            prefix_lens_cpu=[n - 1] * bs, logits_rows=None)

    return prefill, decode


def run_one(runner, bs: int, in_len: int, out_len: int, graph, reps: int = 2) -> dict:

    prefill, decode = _batches(runner, bs, in_len, out_len)
    res = {}
    for rep in range(reps):  # the first repetition warms up (Triton JIT, cuBLAS)
        sync()
        t0 = time.perf_counter()
        tokens = runner.forward(prefill).argmax(-1)
        sync()
        t_pf = time.perf_counter() - t0
        steps = []
        for s in range(out_len - 1):
            t = time.perf_counter()
            fb = decode(s, tokens)
            logits = graph.replay(fb) if graph is not None and graph.can_run(fb) else runner.forward(fb)
            tokens = logits.argmax(-1)
            sync()
            steps.append(time.perf_counter() - t)
        total = t_pf + sum(steps)
        res = {"prefill_ms": t_pf * 1e3, "prefill_tok_s": bs * in_len / t_pf,
               "decode_ms_median": statistics.median(steps) * 1e3 if steps else 0.0,
               "decode_tok_s": bs / statistics.median(steps) if steps else 0.0,
               "total_s": total, "overall_tok_s": bs * (in_len + out_len) / total}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", default=LLAMA3_8B)
    ap.add_argument("--load-format", default="dummy", choices=["dummy"])
    ap.add_argument("--batch", default="1,32", help="comma-separated batch sizes")
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--backends", default="triton", help="comma-separated: triton,flashinfer,torch")
    ap.add_argument("--graph", default="on", choices=["on", "off", "both"])
    ap.add_argument("--no-fused", action="store_true", help="keep the torch RMSNorm/rotary layers")
    ap.add_argument("--json", default="bench_latency.json")
    args = ap.parse_args()

    from runtime.cuda_graph_runner import CudaGraphRunner
    from runtime.layers.triton_fused import enable_fused_ops

    sizes = [int(b) for b in args.batch.split(",")]
    tokens = max(sizes) * (args.input_len + args.output_len) + 256
    runner = make_runner(args.model_path, max_total_tokens=tokens)
    if not args.no_fused:
        enable_fused_ops(runner.model)
    rows = []
    for backend in args.backends.split(","):
        try:
            set_backend(runner, backend)
        except Exception as e:  # noqa: BLE001 - report an unavailable backend and go on
            print(f"skip backend {backend}: {e}")
            continue
        for bs in sizes:
            modes = {"on": [True], "off": [False], "both": [False, True]}[args.graph]
            for use_graph in modes:
                graph = None
                if use_graph:
                    if not getattr(runner.attn_backend, "supports_cuda_graph", False):
                        continue
                    graph = CudaGraphRunner(runner, batch_sizes=[bs])
                r = run_one(runner, bs, args.input_len, args.output_len, graph)
                rows.append({"backend": backend, "graph": use_graph, "batch": bs, "in": args.input_len,
                             "out": args.output_len, **r})
                print(rows[-1], flush=True)
                del graph
    info = gpu_info()
    print_table(rows, f"bench_latency ({info['gpu']}, {info['date']}, commit {info['commit']}, {info['knobs']})")
    save_json({"info": info, "rows": rows}, args.json)


if __name__ == "__main__":
    main()
