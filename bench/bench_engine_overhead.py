"""Host overhead of the Engine's process boundary on the few-shot workload (issue 7).

The few-shot shape of bench/bench_prefix.py (N requests = one shared 1,500-token prefix + 64 own tokens,
``max_new_tokens=1``, one ``generate`` batch of token ids) through

* (a) the Worker in this process (scheduler + executor + sampler: ``add_requests`` then ``step`` until idle),
* (b) the Engine with its worker in a separate process (``Engine.generate``), and
* (c) the Engine with a thread worker (no pickling; shares this process's GIL),

on a tiny Llama config whose forward pass is replaced by an instant fake (zero logits), so only host work is
measured: request intake, IPC, scheduling, radix matching, batch building, sampling and output events.
Prints req/s and wall microseconds per request ("overhead" is a path's minus (a)'s), and CPU microseconds
per request of this process and of the worker process. Rounds of the paths are interleaved so that all see
the same machine load; req/s and us/req are the best round, "median" the median round.

    python bench/bench_engine_overhead.py [--requests 2000] [--repeat 5] [--paths worker,engine,engine-thread]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_FAKE_ENV = "SGLC_BENCH_FAKE_FORWARD"


def install_fake_forward() -> None:
    """Replace ``ModelRunner.forward`` with zero logits of the right shape (no model compute)."""
    import torch

    from runtime.model_runner import ModelRunner

    def forward(self, batch):
        rows = batch.num_tokens if batch.logits_rows is None else int(batch.logits_rows.shape[0])
        return torch.zeros(rows, self.vocab_size, dtype=torch.float32, device=batch.input_ids.device)

    ModelRunner.forward = forward


if __name__ == "__mp_main__" and os.environ.get(_FAKE_ENV) == "1":
    # NOTE: the Engine's worker process (spawn) runs this module as __mp_main__ before worker_main
    install_fake_forward()


def tiny_model(vocab: int) -> str:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=vocab, max_position_embeddings=4096)
    d = Path(tempfile.mkdtemp(prefix="sglc-tiny-llama-"))
    transformers.LlamaForCausalLM(cfg).save_pretrained(d, safe_serialization=True)
    return str(d)


def runtime_kw(args) -> dict:
    # the GPU scheduler defaults (runtime/config.py: scheduler_defaults) so the steps have the H100's shape
    return {"skip_tokenizer_init": True, "context_length": 4096, "max_total_tokens": args.max_total_tokens,
            "chunked_prefill_size": 8192, "max_prefill_tokens": 16384, "max_running_requests": 512,
            "overlap_schedule": args.overlap, "num_threads": 1, "dtype": "float32", "device": "cpu"}


def workload(vocab: int, n: int):
    import numpy as np

    def token_prompt(rng, k):
        lo = min(1000, vocab // 4)
        return rng.integers(lo, vocab - lo, k).tolist()

    rng = np.random.default_rng(0)
    shared = token_prompt(rng, 1500)
    ps = [shared + token_prompt(rng, 64) for _ in range(n)]
    wrng = np.random.default_rng(1)
    other = token_prompt(wrng, 1500)
    warm = [other + token_prompt(wrng, 64) for _ in range(64)]
    return ps, warm


ONE = {"max_new_tokens": 1, "ignore_eos": True, "temperature": 1.0}


def proc_cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system, all threads) of this process, or of ``pid`` (Linux /proc)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WorkerPath:
    """(a): the Worker in this process, fed request dicts as bench/profile_step.py does."""

    def __init__(self, model: str, args) -> None:
        from runtime.config import RuntimeConfig
        from runtime.worker import Worker

        self.w = Worker(RuntimeConfig(model_path=model, **runtime_kw(args)))
        self.seq = iter(range(10**9))

    def _run(self, batch) -> tuple[float, float, float]:
        items = [{"rid": f"r{next(self.seq)}", "input_ids": ids, "sampling_params": dict(ONE)} for ids in batch]
        t, c = time.perf_counter(), proc_cpu_s()
        self.w.add_requests(items)
        done = 0
        while self.w.busy:
            done += sum(1 for ev in self.w.step() if ev["finished"])
        assert done == len(batch), done
        return time.perf_counter() - t, proc_cpu_s() - c, 0.0

    def round(self, ps, warm) -> tuple[float, float, float]:
        self.w.flush_cache()
        self._run(warm)
        self._run(ps[:4])
        return self._run(ps)

    def close(self) -> None:
        pass


class EnginePath:
    """(b)/(c): ``Engine.generate`` with a process or thread worker."""

    def __init__(self, model: str, args, mode: str) -> None:
        from runtime.engine import Engine

        self.eng = Engine(model, worker_mode=mode, **runtime_kw(args))
        self.pid = self.eng._proc.pid if mode == "process" else None

    def round(self, ps, warm) -> tuple[float, float, float]:
        eng, pid = self.eng, self.pid
        assert eng.flush_cache()
        eng.generate(input_ids=warm, sampling_params=ONE)
        eng.generate(input_ids=ps[:4], sampling_params=ONE)
        t, c, cw = time.perf_counter(), proc_cpu_s(), proc_cpu_s(pid) if pid else 0.0
        outs = eng.generate(input_ids=ps, sampling_params=ONE)
        res = (time.perf_counter() - t, proc_cpu_s() - c, proc_cpu_s(pid) - cw if pid else 0.0)
        assert len(outs) == len(ps) and all(len(o["output_ids"]) == 1 for o in outs)
        return res

    def close(self) -> None:
        self.eng.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5, help="measured rounds per path")
    ap.add_argument("--vocab", type=int, default=4096, help="small: sampling over it stands in for the GPU")
    ap.add_argument("--max-total-tokens", type=int, default=200_000)
    ap.add_argument("--overlap", default="off", choices=["on", "off"])
    ap.add_argument("--real-forward", action="store_true", help="run the tiny model instead of the fake forward")
    ap.add_argument("--paths", default="worker,engine,engine-thread")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args()
    model = tiny_model(args.vocab)
    ps, warm = workload(args.vocab, args.requests)
    n = len(ps)
    if not args.real_forward:
        os.environ[_FAKE_ENV] = "1"   # the Engine's worker process installs it too
        install_fake_forward()        # the in-process Worker and the thread worker
    paths = args.paths.split(",")
    runners = {p: WorkerPath(model, args) if p == "worker" else
               EnginePath(model, args, "thread" if p == "engine-thread" else "process") for p in paths}
    times: dict[str, list] = {p: [] for p in paths}
    for _ in range(args.repeat):   # NOTE: rounds interleaved: every path sees the same machine load
        for p, r in runners.items():
            times[p].append(r.round(ps, warm))
    for r in runners.values():
        r.close()
    rows = []
    for path in paths:
        ts = sorted(times[path])
        best, median = ts[0], ts[len(ts) // 2]
        cpu = min(c + cw for _, c, cw in ts)
        rows.append({"path": path, "req_per_s": n / best[0], "us_per_req": best[0] / n * 1e6,
                     "median_us_per_req": median[0] / n * 1e6,
                     "cpu_us_per_req": cpu / n * 1e6, "main_cpu_us": best[1] / n * 1e6,
                     "worker_cpu_us": best[2] / n * 1e6, "rounds_s": [round(t[0], 3) for t in times[path]]})
    base = next((r["us_per_req"] for r in rows if r["path"] == "worker"), None)
    print(f"\n## bench_engine_overhead: {n} x (1500 shared + 64) -> 1, "
          f"{'real tiny forward' if args.real_forward else 'fake forward'}, overlap {args.overlap}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'path':<14} | {'req/s':>8} | {'us/req':>8} | {'median':>8} | {'overhead us/req':>15} | "
          f"{'CPU us/req':>10} | {'this proc':>9} | {'worker proc':>11} | rounds (s)")
    for r in rows:
        over = "" if base is None or r["path"] == "worker" else f"{r['us_per_req'] - base:.1f}"
        print(f"{r['path']:<14} | {r['req_per_s']:8.1f} | {r['us_per_req']:8.1f} | {r['median_us_per_req']:8.1f} | "
              f"{over:>15} | "
              f"{r['cpu_us_per_req']:10.1f} | {r['main_cpu_us']:9.1f} | {r['worker_cpu_us']:11.1f} | "
              f"{r['rounds_s']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
