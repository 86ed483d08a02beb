"""Token-level behaviour on the embedded model's tokenizer (SmolLM2, byte-level BPE)."""
from __future__ import annotations

import random
import re

import numpy as np
import pytest
from grammar_helpers import HP_REGEX, IPV4_REGEX, random_walk

from grammar import BOOL_REGEX, FLOAT_REGEX, INT_REGEX, TokenizerInfo, bitmask_width, compile_constraint

HP_SAMPLE = """{
    "name": "Harry Potter",
    "house": "Gryffindor",
    "blood status": "Half-blood",
    "occupation": "student",
    "wand": {
        "wood": "Holly",
        "core": "Phoenix feather",
        "length": 11.0
    },
    "alive": "Alive",
    "patronus": "Stag",
    "bogart": "Dementor"
}"""


def walk_text(fsm, hf_tokenizer, text):
    m = fsm.matcher()
    ids = hf_tokenizer.encode(text, add_special_tokens=False)
    return m, all(m.accept_token(i) for i in ids)


@pytest.mark.parametrize("pattern,text", [
    (IPV4_REGEX, "192.168.10.254"), (r"[0-9]+(\.[0-9]+)?", "1.5"), (r"a|ab", "ab"),
    (IPV4_REGEX, "10.0.0.1"), (r"[0-9]+(\.[0-9]+)?", "123"), (r"a|ab", "a"), (HP_REGEX, HP_SAMPLE),
])
def test_outlines_regressions_token_level(info, hf_tokenizer, pattern, text):
    fsm = compile_constraint("regex", pattern, info)
    m, ok = walk_text(fsm, hf_tokenizer, text)
    assert ok and m.is_accepting()
    assert m.accept_token(info.eos_token_id) and m.is_terminated()


def test_rejects_and_eos_only_when_accepting(info, hf_tokenizer):
    fsm = compile_constraint("regex", IPV4_REGEX, info)
    m, ok = walk_text(fsm, hf_tokenizer, "192.168")
    assert ok and not m.is_accepting()
    assert not m.accept_token(info.eos_token_id)
    row = np.zeros(bitmask_width(info.vocab_size), dtype=np.int32)
    m.fill_bitmask(row)
    assert not (row[info.eos_token_id // 32] >> (info.eos_token_id % 32)) & 1
    before = m.state
    assert not m.accept_token(hf_tokenizer.encode("x", add_special_tokens=False)[0])
    assert m.state == before


@pytest.mark.parametrize("pattern", [r'"[^"]*"', r"[\s\S]{0,5}", r".*", HP_REGEX])
def test_special_tokens_never_allowed(info, pattern):
    fsm = compile_constraint("regex", pattern, info)
    fsm.precompute()
    specials = sorted(info.special_ids - {info.eos_token_id})
    for state in range(1, fsm.num_states):
        toks = fsm.row(state)[0]
        assert not np.isin(specials, toks).any()
        assert (info.eos_token_id in toks) is False
        bits = np.unpackbits(fsm.mask(state).view(np.uint8), bitorder="little")
        assert bool(bits[info.eos_token_id]) == fsm.is_accepting(state)
        assert not bits[specials].any()


def test_mask_matches_allowed_ids(info):
    fsm = compile_constraint("regex", r"[a-z]{1,3}(,[a-z]{1,3})*", info)
    m = fsm.matcher()
    rng = random.Random(0)
    row = np.zeros(bitmask_width(info.vocab_size) + 3, dtype=np.int32)  # wider than the vocab
    for _ in range(6):
        m.fill_bitmask(row)
        bits = np.unpackbits(row.view(np.uint8), bitorder="little")
        assert np.array_equal(np.flatnonzero(bits), m.allowed_token_ids())
        choices = m.allowed_token_ids()
        choices = choices[choices != info.eos_token_id]
        assert m.accept_token(int(choices[rng.randrange(len(choices))]))


@pytest.mark.parametrize("pattern", [
    IPV4_REGEX, r"[0-9]+(\.[0-9]+)?", r"a|ab", HP_REGEX, INT_REGEX, FLOAT_REGEX, BOOL_REGEX,
    r"[\u00e0-\u00ff\u4e00-\u9fff]{1,6}", r"(é|ü|中文)+!", r'"([^"\\]|\\.)*"',
])
def test_random_walks_match_regex(info, pattern):
    fsm = compile_constraint("regex", pattern, info)
    rng = random.Random(hash(pattern) & 0xFFFF)
    finished = 0
    for _ in range(25):
        data, done = random_walk(fsm, rng)
        if done:
            finished += 1
            assert re.fullmatch(pattern, data.decode("utf-8")), data
        else:  # any prefix must still be extendable: the matcher state is live
            data.decode("utf-8", errors="ignore")
    assert finished > 0


def test_rollback_restores_state(info, hf_tokenizer):
    fsm = compile_constraint("regex", HP_REGEX, info)
    ids = hf_tokenizer.encode(HP_SAMPLE, add_special_tokens=False)
    m = fsm.matcher()
    states = [m.state]
    for i in ids[:20]:
        assert m.accept_token(i)
        states.append(m.state)
    m.rollback(7)
    assert m.state == states[-8]
    for i in ids[13:]:
        assert m.accept_token(i)
    assert m.is_accepting()
    with pytest.raises(ValueError):
        m.rollback(10_000)


def test_jump_forward_covers_constant_parts(info, hf_tokenizer):
    """Driving the HP regex with forced strings + the sample's free parts reproduces the sample."""
    fsm = compile_constraint("regex", HP_REGEX, info)
    m = fsm.matcher()
    assert m.forced_string() == '{\n    "name": "'
    text, forced_chars = "", 0
    while len(text) < len(HP_SAMPLE):
        forced = m.forced_string()
        if forced:
            assert HP_SAMPLE.startswith(text + forced)
            assert m.accept_string(forced)
            text += forced
            forced_chars += len(forced)
            continue
        ch = HP_SAMPLE[len(text)]
        assert m.accept_string(ch), text
        text += ch
    assert m.is_accepting() and text == HP_SAMPLE
    assert forced_chars > 0.6 * len(HP_SAMPLE)


def test_forced_string_only_complete_characters(info):
    fsm = compile_constraint("regex", r"中文(a|b)", info)
    m = fsm.matcher()
    assert m.forced_string() == "中文"
    assert m.accept_string("中".encode()[:2])
    assert m.forced_string() == ""  # mid-character: nothing to force as text
    assert m.accept_string("中".encode()[2:])
    assert m.forced_string() == "文"


def test_sentencepiece_style_vocab():
    vocab = ["<unk>", "<s>", "</s>", "<0x0A>", "<0xC3>", "<0xA9>", "▁a", "b", "▁", "ab", "é", "<|im_start|>"]
    info = TokenizerInfo.from_vocab(vocab, eos_token_id=2, special_ids=[0, 1, 11])
    assert info.token_bytes[3] == b"\n" and info.token_bytes[6] == b" a" and info.token_bytes[4] == b"\xc3"
    assert info.token_bytes[0] is None and info.token_bytes[11] is None
    fsm = compile_constraint("regex", r" ab\né?", info)
    m = fsm.matcher()
    assert list(m.allowed_token_ids()) == [6, 8]
    for tid in (6, 7, 3, 4, 5):  # " a" "b" "\n" then é as two byte tokens
        assert m.accept_token(tid), tid
    assert m.is_accepting() and list(m.allowed_token_ids()) == [2]
    m.rollback(2)
    assert sorted(m.allowed_token_ids().tolist()) == [2, 4, 10]


def test_tokenizer_info_is_cached(hf_tokenizer, info):
    assert TokenizerInfo.from_hf(hf_tokenizer) is info
    assert len(info.fingerprint) == 64 and info.vocab_size == 49152


def test_jump_forward_retokenization_recipe(info, hf_tokenizer):
    """The docs' recipe: accept the forced text, roll back, re-tokenize the boundary, re-accept."""
    fsm = compile_constraint("regex", HP_REGEX, info)
    m = fsm.matcher()
    text, last = "", None
    while not m.is_terminated():
        forced = m.forced_string()
        if forced and last is not None:
            assert m.accept_string(forced)
            m.rollback(2)
            for tid in hf_tokenizer.encode(hf_tokenizer.decode([last]) + forced, add_special_tokens=False):
                assert m.accept_token(tid)
            text += forced
            last = None
            continue
        if forced:
            assert m.accept_string(forced)
            text += forced
            continue
        last = hf_tokenizer.encode(HP_SAMPLE[len(text):], add_special_tokens=False)[0]
        assert m.accept_token(last)
        text += hf_tokenizer.decode([last])
    assert text == HP_SAMPLE and m.is_accepting()


def _reference_next(dfa, info, q, data):
    """Scalar reference: walk ``data`` from char state ``q`` byte string by character; None if dead."""
    from grammar.fsm import DEAD
    from grammar.tokenizer_info import split_utf8, tail_interval
    if not data or data[0] & 0xC0 == 0x80:
        return None
    text, tail = split_utf8(data)
    if text is None:
        return None
    for ch in text:
        q = int(dfa.trans[q, dfa.alphabet.symbol_of(ord(ch))])
        if q == DEAD:
            return None
    if not tail:
        return q
    lo, hi = tail_interval(tail)
    alpha = dfa.alphabet
    ends = np.append(alpha.atom_starts[1:], 0x110000)
    for start, end, sym in zip(alpha.atom_starts.tolist(), ends.tolist(), alpha.atom_sym.tolist()):
        if max(start, lo) < min(end, hi + 1) and not 0xD800 <= start < 0xE000 and dfa.trans[q, sym] != DEAD:
            return (q, tail)
    return None


def _random_vocab(rng: random.Random):
    chars = "abcdxyzqr0123456789.-+@ \n\t_éà中ç٣\u2003comrg\"{}"
    toks = {bytes([c]) for c in range(32, 127)} | {b"\n", b"\t"}
    while len(toks) < 400:
        text = "".join(rng.choice(chars) for _ in range(rng.randint(1, 6))).encode()
        if rng.random() < 0.3:  # split multi-byte characters
            text = "".join(rng.choice("éü中文٣\u2003a\"") for _ in range(3)).encode()
            a = rng.randrange(len(text))
            text = text[a:a + rng.randint(1, 6)]
        toks.add(text)
    return [None] + sorted(toks)  # id 0: EOS (special)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("pattern", [
    IPV4_REGEX, r"[0-9]+(\.[0-9]+)?", r"a|ab", r"(ab|a)(bc|c)?", r"\w+@\w+\.(com|org)", r"[^abc]{2,4}x?",
    r"a.{0,3}b", r"(?s)a.b", r"[\u00e0-\u00ff\u4e00-\u4e0f]+", r"(a|b|c|)+d", r"[-+]?\d*\.?\d+",
    r'"([^"\\]|\\.){0,5}"', r"(é|ü|中文)+!", r"[\w\d\s]{1,4}",
])
def test_alive_set_index_matches_scalar_walks(pattern, seed):
    """The backward alive-set index vs a per-(state, token) scalar walk, on a small random vocabulary
    with split UTF-8 characters and continuation-only tokens (masks, next states, mid states)."""
    from grammar import TokenizerInfo
    from grammar.fsm import DEAD, compile_rx
    from grammar.matcher import TokenFSM
    from grammar.regex_parser import parse_regex
    info = TokenizerInfo(tuple(_random_vocab(random.Random(seed))), 0, frozenset({0}))
    fsm = TokenFSM.build(compile_rx(parse_regex(pattern)), info)
    num = fsm.num_states
    for q in range(1, num):
        bits = np.unpackbits(fsm.mask(q).view(np.uint8), bitorder="little")[:info.vocab_size]
        assert bool(bits[0]) == fsm.is_accepting(q)  # EOS
        for tid, data in enumerate(info.token_bytes[1:], start=1):
            ref = _reference_next(fsm.dfa, info, q, data)
            got = fsm.next_state(q, tid)
            assert bool(bits[tid]) == (ref is not None), (q, data)
            if ref is None:
                assert got == DEAD
            elif isinstance(ref, tuple):
                assert got >= num and fsm.index.mid[got - num] == ref
                for cid, cont in enumerate(info.token_bytes):  # the mid state's row
                    want = _reference_next(fsm.dfa, info, ref[0], ref[1] + cont) if cont and cont[0] & 0xC0 == 0x80 else None
                    nxt = fsm.next_state(got, cid)
                    assert (nxt != DEAD) == (want is not None)
            else:
                assert got == ref
        toks, nexts = fsm.row(q)
        assert np.array_equal(toks, np.flatnonzero(bits[1:]) + 1)
        assert all(fsm.next_state(q, int(t)) == int(n) for t, n in zip(toks, nexts))
        assert fsm.has_tokens(q) == bool(len(toks))
