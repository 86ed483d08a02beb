"""PrefixIds: a text that extends one encoded before encodes only its new part, and the ids are exactly those of
encoding the whole text (the embedded model's tokenizer; random texts built from the pieces that make pre-token
boundaries interesting: whitespace runs, newlines, digits, punctuation, non-ASCII, chat markers)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.model_files import default_model_path
from runtime.tokenizer import PrefixIds, _cuts, _prefix_rule_holds, encode_many, load_tokenizer

PIECES = ["a", "Hello", " world", "  ", " ", "\n", "\n\n", "\n ", " \n", "\t", "\r\n", ".", "?!", "12", "3456", " 7",
          "'s", "é", "中文", "🙂", "<|im_start|>", "<|im_end|>", "user", ":", "Ġ", "\\n", "x\ny"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(default_model_path())


texts = st.lists(st.sampled_from(PIECES), min_size=0, max_size=30).map("".join)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=texts, tails=st.lists(texts, min_size=1, max_size=4), others=st.lists(texts, max_size=3))
def test_extending_texts_encode_exactly(tok, head, tails, others):
    assert _prefix_rule_holds(tok)
    cache = PrefixIds(tok)
    grown = [head]
    for t in tails:
        grown.append(grown[-1] + t)
    for batch in ([head], grown[1:] + others, [grown[-1] + "\nmore text\nand more", *others]):
        assert cache.encode_many(batch) == [tok.encode(t) for t in batch]
    for prefix, ids in cache.entries.items():   # every remembered prefix holds its own exact ids
        assert ids == tok.encode(prefix)


def test_a_long_shared_report_is_encoded_once(tok):
    report = "Report.\n" + "\n".join(f"In year {2000 + i}, the farm harvested {100 + i} tonnes." for i in range(40))
    cache = PrefixIds(tok)
    encoded: list[int] = []   # characters the tokenizer was given, per call

    class Spy:
        def __call__(self, texts, **kw):
            encoded.append(sum(len(t) for t in texts))
            return tok(texts, **kw)

    cache.tok = Spy()
    prompts = [report + f"\nQuestion {i}: which year was best?\nConsider aspect {j}:" for i in range(3)
               for j in range(4)]
    out = cache.encode_many(prompts[:1]) + [ids for p in prompts[1:] for ids in cache.encode_many([p])]
    assert out == [tok.encode(p) for p in prompts]
    assert encoded[0] >= len(report) and sum(encoded[1:]) < 11 * 60   # the 11 others: their last lines only


def test_cuts_are_single_newlines_between_non_space():
    assert list(_cuts("a\nb\n\nc\n d\ne")) == [10, 2]
    assert list(_cuts("\nab\n")) == []


def test_engine_tokenizer_path_uses_it(tok):
    texts = ["System.\nUser: hi\nAssistant:", "System.\nUser: hi\nAssistant: hello\nUser: and?\nAssistant:"]
    assert encode_many(tok, texts) == [tok.encode(t) for t in texts]
    assert PrefixIds.of(tok) is not None and PrefixIds.of(tok).entries
