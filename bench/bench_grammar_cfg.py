"""Context-free constraint bench: the pushdown matcher (grammar/pda.py) on a JSON grammar written in lark EBNF
and on a recursive-$ref JSON schema, SmolLM2 tokenizer. A row alongside bench/bench_grammar.py's table.

Run: .venv/bin/python bench/bench_grammar_cfg.py
Measures: cold compile (grammar → byte PDA), ``precompute`` (level-1 masks of every state), and per-token
``fill_bitmask`` time on a deeply nested sample: cold (first visit of each stack context; with and without
precompute) and warm (mean / p99 over 5 passes, per-token medians).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_grammar import mask_walk

from grammar.ebnf import JSON_GRAMMAR as JSON_EBNF

TREE = {"$defs": {"node": {"type": "object", "properties": {
    "name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
    "required": ["name", "children"], "additionalProperties": False}}, "$ref": "#/$defs/node"}


def _doc(depth: int) -> dict:
    leaf = {"id": 7, "items": [{"k": "a", "v": [1, 2.5, None]}, {"k": "b", "v": []}], "ok": False, "note": "généralement"}
    for i in range(depth):
        leaf = {"level": i, "child": [leaf, "x"]}
    return leaf


def _tree(depth: int) -> dict:
    return {"name": f"n{depth}", "children": [_tree(depth - 1), {"name": "leaf", "children": []}] if depth else []}


CASES = [("json grammar (lark ebnf)", "ebnf", JSON_EBNF, json.dumps(_doc(12), ensure_ascii=False, indent=1)),
         ("recursive $ref tree schema", "json_schema", json.dumps(TREE), json.dumps(_tree(12)))]


def stats(samples) -> str:
    a = np.asarray(samples) * 1e6
    return f"{a.mean():.1f}/{np.percentile(a, 99):.0f}"


def bench_cfg(tok, kind: str, source: str, text: str) -> str:
    """One row: compile, precompute, cold/warm per-token mask mean/p99 (µs)."""
    from grammar import GrammarCompiler, TokenizerInfo, bitmask_width
    from grammar.cfg import _COMPILED
    info = TokenizerInfo.from_hf(tok)
    ids = tok.encode(text, add_special_tokens=False) + [info.eos_token_id]
    row = np.zeros(bitmask_width(info.vocab_size), dtype=np.int32)

    def walk(fsm) -> list[float]:
        return mask_walk(fsm, ids, row)

    _COMPILED.clear()
    t0 = time.perf_counter()
    fsm = GrammarCompiler(disk=False).compile(kind, source, info, precompute=False)
    compile_ms = (time.perf_counter() - t0) * 1e3
    lazy = walk(fsm)
    fsm = GrammarCompiler(disk=False).compile(kind, source, info, precompute=False)
    t0 = time.perf_counter()
    fsm.precompute()
    pre_ms = (time.perf_counter() - t0) * 1e3
    cold = walk(fsm)
    warm = np.median(np.array([walk(fsm) for _ in range(5)]), axis=0)
    return (f"{len(ids) - 1} tokens; compile {compile_ms:.0f} ms, "
            f"precompute +{pre_ms:.0f} ms; mask mean/p99 us: lazy 1st pass {stats(lazy)}, "
            f"precomputed 1st pass {stats(cold)}, warm {stats(warm)}")


def main() -> None:
    from runtime.tokenizer import load_tokenizer
    tok = load_tokenizer()
    print("| case | engine | result |\n| --- | --- | --- |")
    for name, kind, source, text in CASES:
        print(f"| {name} | sglc (pushdown) | {bench_cfg(tok, kind, source, text)} |")


if __name__ == "__main__":
    main()
