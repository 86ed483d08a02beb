"""Regex frontend + symbol DFA vs Python's re (accept/reject tables and hypothesis)."""
from __future__ import annotations

import re

import pytest
from grammar_helpers import HP_REGEX, IPV4_REGEX
from hypothesis import given, settings
from hypothesis import strategies as st

from grammar import GrammarError
from grammar.fsm import compile_rx
from grammar.regex_parser import parse_regex

REGEXES = [
    IPV4_REGEX, r"[0-9]+(\.[0-9]+)?", r"a|ab", r"(ab|a)(bc|c)?", r"\w+@\w+\.(com|org)",
    r"[^abc]{2,4}x?", r"\d{3}-\d{4}", r"(?:x|y)*z+", r"a.{0,3}b", r"[\s\S]{2}", r"(?s)a.b",
    r"(?P<n>q+)r?", r"[a-f\d]{1,3}?", r"\W\D\S", r"colou?r", r"^(ab)+$", r"(?a)\w\d\s",
    r"[\u00e0-\u00ff\u4e00-\u4e0f]+", r"x{2,}", r"[-+]?\d*\.?\d+", r"(a|b|c|)+d",
    # separated lists "x (s x)*" (x built once in the NFA, looping back through s)
    r"a(-a)*", r"(x|yz)( (x|yz))*", r"ba(ca)*d?", r"(ab)(c(ab))*(c(ab))*", r"(q\d*)(\.(q\d*))*r?",
]
ALPHABET = "abcdxyzqr0123456789.-+@ \n\t_éà中ç٣\u2003" + "comrg"


@pytest.fixture(scope="module")
def dfas():
    return {p: compile_rx(parse_regex(p)) for p in REGEXES}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=12), st.sampled_from(REGEXES))
def test_dfa_agrees_with_re(dfas, text, pattern):
    assert dfas[pattern].fullmatch(text) == bool(re.fullmatch(pattern, text))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(REGEXES), st.data())
def test_dfa_accepts_re_examples(dfas, pattern, data):
    """Strings generated *from* the regex are accepted (hypothesis.from_regex)."""
    text = data.draw(st.from_regex(pattern, fullmatch=True).filter(lambda s: len(s) < 40))
    assert re.fullmatch(pattern, text)
    assert dfas[pattern].fullmatch(text)


@pytest.mark.parametrize("text,ok", [
    ("192.168.10.254", True), ("255.255.255.255", True), ("0.0.0.0", True),
    ("256.1.1.1", False), ("1.1.1", False), ("01.2.3.4", True), ("1.2.3.4.", False),
])
def test_ipv4_table(dfas, text, ok):
    assert dfas[IPV4_REGEX].fullmatch(text) is ok
    assert bool(re.fullmatch(IPV4_REGEX, text)) is ok


def test_unicode_classes_follow_python():
    dfa = compile_rx(parse_regex(r"\w\d\s"))
    for text in ["é٣\u3000", "_0 ", "中९\u2029", "a\u0661\x1c"]:
        assert dfa.fullmatch(text) == bool(re.fullmatch(r"\w\d\s", text)), text
    assert not dfa.fullmatch("-0 ")


@pytest.mark.parametrize("pattern,word", [
    (r"(a)\1", "backreference"), (r"a(?=b)", "lookaround"), (r"a(?!b)", "lookaround"),
    (r"(?<=a)b", "lookaround"), (r"a\bb", "anchor"), (r"a^b", "anchor"), (r"(?i)abc", "IGNORECASE"),
    (r"(a)?(?(1)b|c)", "conditional"), (r"(", "invalid"), (r"(?>ab)", "atomic"),
])
def test_refused_constructs(pattern, word):
    with pytest.raises(GrammarError, match=word):
        parse_regex(pattern)


def test_hp_regex_compiles_small():
    dfa = compile_rx(parse_regex(HP_REGEX))
    assert dfa.num_states < 1000
    assert not dfa.fullmatch("{}")
