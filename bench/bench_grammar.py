"""Grammar benchmark: compile time, mask time per token, jump-forward steps (sglc vs others).

Run: .venv/bin/python bench/bench_grammar.py   (optional: xgrammar, llguidance, outlines-core)
Prints a table; results are recorded in docs/PERFORMANCE.md ("Grammar") and docs/grammar.md.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HP_REGEX = (
    r"""\{\n    "name": "[\w\d\s]{1,16}",\n    "house": "(Gryffindor|Slytherin|Ravenclaw|Hufflepuff)",\n"""
    r"""    "blood status": "(Pure-blood|Half-blood|Muggle-born)",\n"""
    r"""    "occupation": "(student|teacher|auror|ministry of magic|death eater|order of the phoenix)",\n"""
    r"""    "wand": \{\n        "wood": "[\w\d\s]{1,16}",\n        "core": "[\w\d\s]{1,16}",\n"""
    r"""        "length": [0-9]{1,2}\.[0-9]{0,2}\n    \},\n    "alive": "(Alive|Deceased)",\n"""
    r"""    "patronus": "[\w\d\s]{1,16}",\n    "bogart": "[\w\d\s]{1,16}"\n\}"""
)
HP_TEXT = ('{\n    "name": "Harry Potter",\n    "house": "Gryffindor",\n    "blood status": "Half-blood",\n'
           '    "occupation": "student",\n    "wand": {\n        "wood": "Holly",\n        "core": "Phoenix feather",\n'
           '        "length": 11.0\n    },\n    "alive": "Alive",\n    "patronus": "Stag",\n    "bogart": "Dementor"\n}')
IPV4 = r"((25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(25[0-5]|2[0-4]\d|[01]?\d\d?)"
NESTED = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}, "required": ["street", "city", "zip"]},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
    "verified": {"type": "boolean"}}, "required": ["name", "age", "address", "tags", "verified"]}
NESTED_TEXT = json.dumps({"name": "Ada Lovelace", "age": 36, "address": {"street": "12 St James's Square",
                          "city": "London", "zip": "10001"}, "tags": ["math", "poetry"], "verified": True})
GENERIC_TEXT = json.dumps({"id": 7, "items": [{"k": "a", "v": [1, 2.5, None]}, {"k": "b", "v": []}],
                           "ok": False, "note": "généralement"}, ensure_ascii=False)
CASES = [("ipv4 regex", "regex", IPV4, "192.168.10.254"), ("harry potter regex", "regex", HP_REGEX, HP_TEXT),
         ("nested json schema", "json_schema", json.dumps(NESTED), NESTED_TEXT),
         ("generic json", "json_object", "", GENERIC_TEXT)]


def stats_us(samples: list[float]) -> tuple[float, float]:
    arr = np.array(samples) * 1e6
    return float(arr.mean()), float(np.percentile(arr, 99))


def mask_walk(fsm, ids: list[int], row: np.ndarray) -> list[float]:
    """Seconds per ``fill_bitmask`` along the token ids ``ids`` (each must be allowed, then accepted)."""
    m, times = fsm.matcher(), []
    for tid in ids:
        t = time.perf_counter()
        m.fill_bitmask(row)
        times.append(time.perf_counter() - t)
        assert (row[tid // 32] >> (tid % 32)) & 1 and m.accept_token(tid), "sample rejected"
    return times


def bench_sglc(tok, kind, source, text, runs: int = 5):
    """Cold compile (no caches: fresh compiler, unit cache cleared), then the first walk (every state's
    mask packed on first visit) and warm walks. Each cold measure is the median of ``runs`` cold runs
    (per token for masks): the box is shared, a preemption would otherwise be a p99."""
    from grammar import GrammarCompiler, TokenizerInfo, bitmask_width
    from grammar.fsm import clear_unit_cache
    info = TokenizerInfo.from_hf(tok)
    ids = tok.encode(text, add_special_tokens=False) + [info.eos_token_id]
    row = np.zeros(bitmask_width(info.vocab_size), dtype=np.int32)

    def walk(fsm) -> list[float]:
        return mask_walk(fsm, ids, row)

    compiles, firsts, first_walks = [], [], []
    for _ in range(runs):
        clear_unit_cache()
        t0 = time.perf_counter()
        fsm = GrammarCompiler(disk=False).compile(kind, source, info, precompute=False)
        compiles.append(time.perf_counter() - t0)
        first_walks.append(walk(fsm))
        firsts.append(first_walks[-1][0])
    warm = [walk(fsm) for _ in range(5)]
    fsm = GrammarCompiler(disk=False).compile(kind, source, info, precompute=False)
    t0 = time.perf_counter()
    fsm.precompute()
    pre_ms = (time.perf_counter() - t0) * 1e3
    # NOTE: per-token medians over the runs (the box is shared; single outliers are noise)
    return {'compile_ms': 1e3 * float(np.median(compiles)), 'first_mask_us': 1e6 * float(np.median(firsts)),
                'precompute_ms': pre_ms, 'cold': stats_us(list(np.median(np.array(first_walks), axis=0))),
                'warm': stats_us(list(np.median(np.array(warm), axis=0))), 'tokens': len(ids) - 1}


def jump_forward_passes(tok, source, text):
    """Model forward passes the runtime's jump-forward (``runtime/constrained.py``) needs to write
    ``text``, teacher-forced: each pass samples the next token of the rest's own tokenization; forced
    text is appended re-tokenized (the forced prefix rides with the prompt's prefill)."""
    from grammar import TokenizerInfo, compile_constraint
    from runtime.constrained import GrammarManager
    from runtime.sampling_params import SamplingParams
    from runtime.scheduler.request import Req
    info = TokenizerInfo.from_hf(tok)
    gm = GrammarManager(tok, info.vocab_size, None)
    req = Req("bench", [0], SamplingParams(max_new_tokens=1024, regex=source))
    req.matcher = compile_constraint("regex", source, info).matcher()
    gm.force_prefix(req)
    passes = 0
    while not req.finished:
        done = tok.decode(req.output_ids)
        assert text.startswith(done), (done, text)
        rest = text[len(done):]
        passes += 1
        nxt = tok.encode(rest, add_special_tokens=False)[0] if rest else info.eos_token_id
        req.output_ids.append(nxt)
        assert req.matcher.accept_token(nxt), (rest, tok.decode([nxt]))
        if req.matcher.is_terminated():  # as OutputProcessor.check_finish: done, no EOS pass
            break
        gm.jump_forward(req)
    assert tok.decode(req.output_ids) == text
    return passes, req.forced_tokens


def bench_xgrammar(tok, kind, source, text):
    import xgrammar as xgr
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
    t0 = time.perf_counter()
    comp = xgr.GrammarCompiler(info, cache_enabled=False)
    compiled = {"regex": lambda: comp.compile_regex(source), "json_schema": lambda: comp.compile_json_schema(source),
                "json_object": lambda: comp.compile_builtin_json_grammar()}[kind]()
    compile_ms = (time.perf_counter() - t0) * 1e3
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)
    times = []
    for tid in tok.encode(text, add_special_tokens=False):
        t = time.perf_counter()
        matcher.fill_next_token_bitmask(bitmask)
        times.append(time.perf_counter() - t)
        if not matcher.accept_token(tid):
            return {'compile_ms': compile_ms, 'note': "rejected the sample"}
    return {'compile_ms': compile_ms, 'warm': stats_us(times)}


def bench_llguidance(tok, kind, source, text):
    import llguidance
    import llguidance.hf
    lltok = llguidance.hf.from_tokenizer(tok)
    grammar = {"regex": lambda: llguidance.grammar_from("regex", source),
               "json_schema": lambda: llguidance.grammar_from("json_schema", source),
               "json_object": lambda: llguidance.grammar_from("json_schema", '{"type": "object"}')}[kind]()
    t0 = time.perf_counter()
    matcher = llguidance.LLMatcher(lltok, grammar)
    compile_ms = (time.perf_counter() - t0) * 1e3
    if matcher.is_error():
        return {'compile_ms': compile_ms, 'note': matcher.get_error()[:40]}
    mask = np.zeros((1, (lltok.vocab_size + 31) // 32), dtype=np.int32)
    times = []
    from llguidance.numpy import fill_next_token_bitmask
    for tid in tok.encode(text, add_special_tokens=False):
        t = time.perf_counter()
        fill_next_token_bitmask(matcher, mask, 0)
        times.append(time.perf_counter() - t)
        if not matcher.consume_token(tid):
            return {'compile_ms': compile_ms, 'note': "rejected the sample"}
    return {'compile_ms': compile_ms, 'warm': stats_us(times)}


def bench_outlines(tok, kind, source, text):
    import outlines_core

    from grammar import TokenizerInfo
    info = TokenizerInfo.from_hf(tok)
    vocab: dict = {}
    for tid, data in enumerate(info.token_bytes):
        if data and tid != info.eos_token_id:
            vocab.setdefault(data, []).append(tid)
    regex = {"regex": lambda: source, "json_schema": lambda: outlines_core.json_schema.build_regex_from_schema(source),
             "json_object": lambda: outlines_core.json_schema.build_regex_from_schema('{"type": "object"}')}[kind]()
    t0 = time.perf_counter()
    index = outlines_core.Index(regex, outlines_core.Vocabulary(info.eos_token_id, vocab))
    compile_ms = (time.perf_counter() - t0) * 1e3
    guide, times = outlines_core.Guide(index), []
    for tid in tok.encode(text, add_special_tokens=False):
        t = time.perf_counter()
        allowed = guide.get_tokens()
        times.append(time.perf_counter() - t)
        if tid not in allowed:
            return {'compile_ms': compile_ms, 'note': "REJECTED the valid sample"}
        guide.advance(tid)
    return {'compile_ms': compile_ms, 'warm': stats_us(times), 'note': "mask = get_tokens() list"}


def fmt(result: dict) -> str:
    if "error" in result:
        return f"skipped ({result['error']})"
    parts = [f"compile {result['compile_ms']:.1f} ms"]
    if "first_mask_us" in result:
        parts.append(f"first mask {result['first_mask_us']:.0f} us")
    if "cold" in result:
        parts.append(f"mask 1st walk mean/p99 {result['cold'][0]:.1f}/{result['cold'][1]:.0f} us")
    if "warm" in result:
        parts.append(f"mask mean/p99 {result['warm'][0]:.1f}/{result['warm'][1]:.1f} us")
    if "precompute_ms" in result:
        parts.append(f"(all rows packed: +{result['precompute_ms']:.0f} ms)")
    if "note" in result:
        parts.append(result["note"])
    return ", ".join(parts)


def main() -> None:
    from runtime.tokenizer import load_tokenizer
    tok = load_tokenizer()
    from grammar import TokenizerInfo
    t0 = time.perf_counter()
    TokenizerInfo.from_hf(tok).token_data()
    print(f"# grammar bench — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}"
          f", python {platform.python_version()}; tokenizer prep {1e3 * (time.perf_counter() - t0):.0f} ms (once per vocab)")
    from grammar import GrammarCompiler
    GrammarCompiler(disk=False).compile("regex", "[0-9]", TokenizerInfo.from_hf(tok))  # one-time imports/tables
    engines = {"sglc": bench_sglc, "xgrammar": bench_xgrammar, "llguidance": bench_llguidance,
               "outlines-core": bench_outlines}
    results = {}
    for engine, fn in engines.items():  # engine by engine: no engine's background threads skew another
        for name, kind, source, text in CASES:
            try:
                results[name, engine] = fn(tok, kind, source, text)
            except Exception as e:  # noqa: BLE001 - optional engines: any failure is reported, not fatal
                results[name, engine] = {"error": f"{type(e).__name__}: {str(e)[:60]}"}
    print("| case | engine | result |\n| --- | --- | --- |")
    for name, *_ in CASES:
        for engine in engines:
            print(f"| {name} | {engine} | {fmt(results[name, engine])} |")
    ids = tok.encode(HP_TEXT, add_special_tokens=False)
    passes, forced = jump_forward_passes(tok, HP_REGEX, HP_TEXT)
    print(f"\nHarry Potter output: {len(ids)} tokens; with the runtime's jump-forward {passes} forward passes "
          f"({forced} tokens forced; the constraint then terminates, no EOS step)")

if __name__ == "__main__":
    main()
