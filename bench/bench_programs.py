"""Program benchmark: SGLang-paper-style workloads at -O0 vs -O2, radix cache on vs off (embedded model).

    .venv/bin/python bench/bench_programs.py [--items 3] [--repeat 3] [--only NAME] [--no-radix-off]

Per workload and configuration (one untimed run per level first; then each run starts from an empty cache,
-O0 and -O2 runs alternate): programs/s (all items run concurrently; median of the runs), forward passes, *prefill tok* = prompt
tokens computed (prefill + decode tokens of ``engine.metrics()`` minus the output tokens whose KV was
computed: jump-forward extends output tokens, which are not prompt prefill), *tok / gen* = output tokens per
gen, the stop token included (1.0: every gen stopped at once and the workload measured only its prompts), *requested tok* = tokens of
the program's requests (warm-ups excluded), *optimal prefill* (``Recorder.optimal``: every reusable prefix
computed once under the runtime's reuse rule), optimal / prefill (100% = no redundant prefill), and the
engine's own cache hit rate (cached / prompt tokens, warm-ups included); passes and token counts are medians
over the runs. *same text*: every gen's output and every program's text equal in all runs of both levels;
"no (-O0 runs differ too)" means the engine itself is not repeatable here (bf16 on a GPU: a batch's shape
changes the rounding, and greedy decoding follows it), so the levels cannot be compared on text.
*-O2 speedup*: the median over the alternating (-O0, -O2) run pairs of -O2's programs/s over -O0's, with the
pairs' range in brackets (each pair saw the same machine load; a range spanning 1.0x is no measured difference).
Definitions: docs/compiler.md.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import git_commit
from program_workloads import Workload, workloads

import sglc as sgl
from sglc.compiler import build
from sglc.compiler.artifact import Artifact

logger = logging.getLogger("bench_programs")


class Recorder:
    """Wraps an Engine; records what programs ask for (warm-ups excluded): each request's token ids with
    the longest prefix the runtime may reuse for it (``Req.prefix_cap``), and each gen's output ids."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.tokenizer = engine, engine.tokenizer
        self.requests: list[tuple[list[int], int]] = []        # (token ids, reusable prefix length)
        self.outputs: list[tuple[list[int], list[int]]] = []   # (prompt ids, output ids) of gens
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate(self, prompt: Any = None, sampling_params: Any = None, input_ids: Any = None, **kw: Any) -> Any:
        out = self.engine.generate(prompt=prompt, sampling_params=sampling_params, input_ids=input_ids, **kw)
        sps = sampling_params if isinstance(sampling_params, list) else [sampling_params or {}]
        if kw.get("return_logprob") or any(sp.get("max_new_tokens") != 0 for sp in sps):   # not a warm-up
            items = ([prompt] if isinstance(prompt, str) else prompt) if prompt is not None else \
                ([input_ids] if input_ids and isinstance(input_ids[0], int) else input_ids)
            ids = [self.tokenizer.encode(x) if isinstance(x, str) else list(x) for x in items]
            start = kw.get("logprob_start_len") if kw.get("return_logprob") else None
            starts = start if isinstance(start, list) else [start] * len(ids)
            with self.lock:
                for x, start, o in zip(ids, starts, out if isinstance(out, list) else [out]):
                    cap = len(x) - 1 if start is None or start < 0 else min(len(x) - 1, max(start - 1, 0))
                    self.requests.append((x, cap))
                    if o["output_ids"]:
                        self.outputs.append((x, list(o["output_ids"])))
        return out

    def score(self, prefix: str, continuations: list[str]) -> list[dict]:
        pre = self.tokenizer.encode(prefix)
        with self.lock:
            for c in continuations:   # NOTE: scoring needs the logits of the position before the continuation
                self.requests.append((pre + self.tokenizer.encode(c, add_special_tokens=False), len(pre) - 1))
        return self.engine.score(prefix, continuations)

    def reset(self) -> None:
        self.requests, self.outputs = [], []

    def requested(self) -> int:
        return sum(len(s) for s, _ in self.requests)

    def output_computed(self) -> int:
        """Output tokens whose KV was computed (all but each gen's last): by decode or jump-forward extends."""
        return sum(max(len(out) - 1, 0) for _, out in self.outputs)

    def optimal(self) -> int:
        """Fewest prompt tokens any run of these requests computes under the runtime's reuse rule: a request
        reuses at most ``ids[:cap]`` (generation: all but the last prompt token; scoring: up to the token
        before the first scored one, whose logits are needed and a KV cache does not keep logits); every
        token in a trie over the reusable prefixes is computed once; KV computed while decoding a gen's
        output is free for later prompts that contain the same token ids."""
        root = _Node()
        for prompt, out in self.outputs:    # output tokens (and the prompt tail the gen computed): paid
            node = root
            for i, t in enumerate(prompt + out[:-1]):
                node = node.child(t)
                node.paid |= i >= len(prompt) - 1
        count = 0
        for ids, cap in self.requests:
            node = root
            for t in ids[:cap]:
                node = node.child(t)
                if not node.paid:
                    node.paid, count = True, count + 1
            count += len(ids) - cap
        return count


class _Node:
    __slots__ = ("kids", "paid")

    def __init__(self) -> None:
        self.kids: dict[int, _Node] = {}
        self.paid = False

    def child(self, t: int) -> _Node:
        node = self.kids.get(t)
        if node is None:
            node = self.kids[t] = _Node()
        return node


def run_workload(wl: Workload, level: int, backend: sgl.EngineBackend, rec: Recorder,
                 cache: dict[tuple[int, int], Artifact]) -> dict[str, Any]:
    arts = []
    for fn, _ in wl.items:
        key = (id(fn), level)
        if key not in cache:
            cache[key] = build.compile_function(fn, {}, level, tokenizer=rec.tokenizer)
        arts.append(cache[key])
    rec.engine.flush_cache()
    rec.reset()
    m0 = rec.engine.metrics()
    t0 = time.perf_counter()
    build.warm_batch([(art, args) for art, (_, args) in zip(arts, wl.items)], backend)   # -O2: entry hoists
    defaults = {"temperature": 0}
    with ThreadPoolExecutor(max_workers=len(wl.items)) as pool:
        futs = [pool.submit(build.run_artifact, art, backend, args, defaults) for art, (_, args) in zip(arts, wl.items)]
        states = [f.result() for f in futs]
    dt = time.perf_counter() - t0
    m1 = rec.engine.metrics()
    computed = (m1["prefill_tokens_total"] - m0["prefill_tokens_total"]
                + m1["decode_tokens_total"] - m0["decode_tokens_total"])
    prefill = computed - rec.output_computed()   # NOTE: prompt tokens only (jump-forward extends output tokens)
    prompt = m1["prompt_tokens_total"] - m0["prompt_tokens_total"]
    cached = m1["cached_tokens_total"] - m0["cached_tokens_total"]
    requested, optimal = rec.requested(), rec.optimal()
    passes = m1["forward_passes_total"] - m0["forward_passes_total"]
    # NOTE: the outputs of every gen, not only the programs' texts: a fork branch's output that differs need not
    # reach its parent's text (tree-of-thought), but changes the prompts after it
    outputs = sorted(tuple(o) for _, o in rec.outputs)
    gen_tok = sum(len(o) for o in outputs) / len(outputs) if outputs else 0.0
    return {"gen_tok": gen_tok, "programs_s": len(states) / dt, "seconds": dt, "prefill": prefill, "requested": requested, "passes": passes,
            "optimal": optimal, "efficiency": optimal / prefill if prefill else 1.0,
            "hit": cached / prompt if prompt else 0.0, "texts": ([s.text() for s in states], outputs)}


def bench(engine_kwargs: dict[str, Any], label: str, wls: list[Workload], rows: list[dict[str, Any]],
          repeat: int = 1) -> None:
    with sgl.Engine(**engine_kwargs) as engine:
        rec = Recorder(engine)
        backend = sgl.EngineBackend(rec)  # type: ignore[arg-type]
        cache: dict[tuple[int, int], Artifact] = {}
        for wl in wls:
            runs: dict[int, list[dict[str, Any]]] = {0: [], 2: []}
            for level in (0, 2):   # NOTE: untimed: a workload's first run compiles its programs and meets cold caches
                run_workload(wl, level, backend, rec, cache)
            for _ in range(repeat):
                for level in (0, 2):   # NOTE: levels alternate, so a change in machine load hits both
                    runs[level].append({**run_workload(wl, level, backend, rec, cache), "load": os.getloadavg()[0]})
            for level in (0, 2):
                xs = runs[level]
                r = {**xs[0], **{k: statistics.median_low(x[k] for x in xs) for k in _MEDIAN_COUNTS},
                     **{k: statistics.median(x[k] for x in xs) for k in _MEDIAN_RATES}}
                rows.append({"workload": wl.name, "radix": label, "level": f"-O{level}", **r})
                logger.info("%s %s -O%d: %s prog/s, passes %s, prefill %d, load %.1f", wl.name, label, level,
                            [round(x["programs_s"], 2) for x in xs], [x["passes"] for x in xs], r["prefill"], r["load"])
            # NOTE: -O2 / -O0 per alternating pair (the two runs saw the same machine load), then the median and range
            ratios = sorted(b["programs_s"] / a["programs_s"] for a, b in zip(runs[0], runs[2]))
            rows[-1].update(speedup=statistics.median(ratios), speedup_range=(ratios[0], ratios[-1]))
            first = runs[0][0]["texts"]
            rows[-1]["same_outputs"] = ("yes" if all(x["texts"] == first for x in runs[0] + runs[2])
                                        else "no" if all(x["texts"] == first for x in runs[0])
                                        else "no (-O0 runs differ too)")


# columns reported as the median over the runs (counts: one run's value); the others are the first run's
_MEDIAN_COUNTS = ("passes", "prefill", "requested", "optimal")
_MEDIAN_RATES = ("programs_s", "load", "efficiency", "gen_tok")   # NOTE: efficiency per run, then the median


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| workload | radix | level | programs/s | forward passes | tok / gen | prefill tok | requested tok | "
            "optimal prefill | optimal / prefill | engine cache hit | -O2 speedup | same text | load |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        speed = ""
        if r["level"] == "-O2" and "speedup" in r:
            lo, hi = r["speedup_range"]
            speed = f"{r['speedup']:.2f}x" + (f" ({lo:.2f}–{hi:.2f})" if hi > lo else "")
        same = r.get("same_outputs", "") if r["level"] == "-O2" else ""
        lines.append(f"| {r['workload']} | {r['radix']} | {r['level']} | {r['programs_s']:.2f} | {r['passes']} | "
                     f"{r['gen_tok']:.1f} | "
                     f"{r['prefill']} | {r['requested']} | {r['optimal']} | {r['efficiency']:.1%} | {r['hit']:.1%} | "
                     f"{speed} | {same} | {r['load']:.1f} |")
    return "\n".join(lines)


def _tokenizer_for(model_path: str) -> str | None:
    """The model's own tokenizer if its directory has one, else the embedded model's (a random model made with
    the embedded model's vocabulary, e.g. ``transformers.LlamaConfig(vocab_size=49152, ...)``, has none)."""
    if any((Path(model_path) / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    from runtime.model_files import default_model_path

    return default_model_path()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=4, help="programs per workload (run concurrently)")
    ap.add_argument("--no-radix-off", action="store_true", help="skip the radix-off engine")
    ap.add_argument("--only", help="run only workloads whose name contains this")
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration (levels alternate); the median "
                    "programs/s is reported")
    ap.add_argument("--regex-json", action="store_true", help="JSON extraction with a regex, not a JSON schema")
    ap.add_argument("--model-path", help="another model (default: the embedded SmolLM2-135M-Instruct); a tiny random "
                    "model on the CPU mimics the GPU's regime, where a forward pass is cheap and overheads dominate")
    ap.add_argument("--tokenizer-path", help="its tokenizer (default: the model's; the embedded GGUF's with a model "
                    "directory that has none)")
    ns = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    wls = [w for w in workloads(ns.items, not ns.regex_json) if not ns.only or ns.only in w.name]
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    base: dict[str, Any] = {"max_total_tokens": 16384}
    if ns.model_path:
        base["model_path"] = ns.model_path
        base["tokenizer_path"] = ns.tokenizer_path or _tokenizer_for(ns.model_path)
    bench(base, "on", wls, rows, ns.repeat)
    if not ns.no_radix_off:
        bench({**base, "disable_radix_cache": True}, "off", wls, rows, ns.repeat)
    commit = git_commit()
    import torch

    where = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
             else f"{platform.machine()} {os.cpu_count()}-core CPU")
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit}, {where}, {ns.model_path or 'embedded SmolLM2-135M-Instruct'}, {ns.items} programs per workload, "
          f"median of {ns.repeat} runs, temperature 0, {time.time() - t0:.0f} s total, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end\n")
    print(table(rows))


if __name__ == "__main__":
    main()
