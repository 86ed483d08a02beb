"""End-to-end constrained decoding with and without jump-forward on the embedded model (CPU).

The Harry Potter character regex (SGLang's README) and a JSON schema, greedy: wall time, model forward
passes and output tokens per request, jump-forward on vs off. Prints a table.

    python bench/bench_jump_forward.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "runtime"))
from gpu_common import git_commit
from test_constrained import HP, SCHEMA

CASES = [
    ("harry potter regex", "Harry Potter is a wizard. Describe him in JSON:\n", {"regex": HP}),
    ("json schema", "Describe a programmer as JSON:\n", {"json_schema": json.dumps(SCHEMA)}),
]


def run(disable_jump_forward: bool, repeat: int) -> list[dict]:
    from runtime.engine import Engine

    rows = []
    with Engine(disable_jump_forward=disable_jump_forward, disable_radix_cache=True) as eng:
        for name, prompt, c in CASES:
            sp = {"temperature": 0, "max_new_tokens": 256, **c}
            eng.generate(prompt, sp)  # compile + warm-up
            best = None
            for _ in range(repeat):
                t = time.perf_counter()
                out = eng.generate(prompt, sp)
                dt = time.perf_counter() - t
                best = dt if best is None else min(best, dt)
            if "regex" in c:
                assert re.fullmatch(c["regex"], out["text"]), out["text"]
            else:
                json.loads(out["text"])
            m = out["meta_info"]
            rows.append({"case": name, "jump_forward": not disable_jump_forward, "seconds": best,
                         "tokens": m["completion_tokens"], "forward_passes": m["forward_passes"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    on, off = run(False, args.repeat), run(True, args.repeat)
    commit = git_commit()
    print(f"\n{time.strftime('%Y-%m-%d')} commit {commit}, embedded SmolLM2-135M-Instruct, CPU, best of {args.repeat}\n")
    print("| case | jump-forward | seconds | output tokens | forward passes | speedup |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for a, b in zip(on, off):
        for r in (b, a):
            sp = f"{b['seconds'] / r['seconds']:.2f}x" if r is a else ""
            print(f"| {r['case']} | {'on' if r['jump_forward'] else 'off'} | {r['seconds']:.2f} | {r['tokens']} | "
                  f"{r['forward_passes']} | {sp} |")


if __name__ == "__main__":
    main()
