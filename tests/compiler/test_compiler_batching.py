"""Batched calls on the client: prompts tokenized once (and in one call), common token prefixes."""
from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from fake_engine import CharTokenizer, FakeEngine

import sglc as sgl
from runtime.seq import common_prefix_len
from runtime.tokenizer import encode_many
from sglc.backend.engine import EngineBackend
from sglc.compiler import build
from sglc.compiler.executor import run_plan


@sgl.function
def fanout(s, topic):
    s += "Ideas about " + topic + ":\n"
    forks = s.fork(3)
    for i, f in enumerate(forks):
        f += "Idea number " + str(i + 1) + ": " + sgl.gen("idea", max_tokens=3)
    forks.join()
    s += "Best: " + forks[1]["idea"] + sgl.gen("best", max_tokens=2)


class CountingTokenizer(CharTokenizer):
    def __init__(self) -> None:
        self.encoded: Counter[str] = Counter()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self.encoded[text] += 1
        return super().encode(text, add_special_tokens)


class IdsEngine(FakeEngine):
    """Records, per generate call, whether it got text prompts or token ids; tokenizes like the Engine."""

    def __init__(self) -> None:
        super().__init__()
        self.tokenizer = CountingTokenizer()
        self.kinds: list[tuple[str, int]] = []

    def generate(self, prompt: Any = None, sampling_params: Any = None, input_ids: Any = None, **kw: Any) -> Any:
        n = len(prompt) if isinstance(prompt, list) else len(input_ids) if input_ids and isinstance(input_ids[0], list) else 1
        if sampling_params is None or isinstance(sampling_params, list) or sampling_params.get("max_new_tokens") != 0:
            self.kinds.append(("text" if prompt is not None else "ids", n))
        return super().generate(prompt=prompt, sampling_params=sampling_params, input_ids=input_ids, **kw)


def _run(level: int, engine: FakeEngine) -> sgl.ProgramState:
    art = build.compile_graph(fanout.trace(), level)
    return run_plan(art.graph, art.plan, EngineBackend(engine, "chatml"), {}, {"topic": "tea"})


def test_branch_prompts_are_tokenized_once_and_sent_as_ids() -> None:
    e0, e2 = IdsEngine(), IdsEngine()
    s0, s2 = _run(0, e0), _run(2, e2)
    assert s2.text() == s0.text() and s2.variables() == s0.variables()
    # the fork's warm-up tokenized each branch head; the batched gens reuse those ids (the engine would have
    # tokenized every prompt again, one by one)
    assert ("ids", 3) in e2.kinds and ("text", 3) not in e2.kinds
    heads = [f"Ideas about tea:\nIdea number {i}: " for i in (1, 2, 3)]
    assert all(e2.tokenizer.encoded[h] == 1 for h in heads), e2.tokenizer.encoded
    assert all(e0.tokenizer.encoded[h] == 1 for h in heads)   # -O0: the engine's own, once per request


def test_batched_gens_without_a_warm_are_tokenized_in_the_batch() -> None:
    art = build.compile_graph(fanout.trace(), "fold-text,batch-forks")   # no hoist: nothing tokenized ahead
    engine = IdsEngine()
    state = run_plan(art.graph, art.plan, EngineBackend(engine, "chatml"), {}, {"topic": "tea"})
    assert state.text() == _run(0, FakeEngine()).text()
    assert ("ids", 3) in engine.kinds


@pytest.mark.parametrize(("a", "b", "n"), [
    ([], [], 0), ([1], [], 0), ([1, 2, 3], [1, 2, 3], 3), ([1, 2, 3], [1, 2], 2), ([1, 2], [1, 2, 3], 2),
    ([1, 2, 3], [4, 2, 3], 0), ([1, 2, 3, 4, 5], [1, 2, 3, 9, 5], 3), (list(range(1000)), list(range(999)) + [0], 999),
    (list(range(700)), list(range(350)) + [-1] + list(range(351, 700)), 350),
])
def test_common_len(a: list[int], b: list[int], n: int) -> None:
    assert common_prefix_len(a, b) == n


def test_encode_many_is_encode_per_text() -> None:
    from runtime.tokenizer import load_tokenizer

    tok = load_tokenizer()
    texts = ["Hello world", " leading space", "tabs\tand\nnewlines\n\n", "point 1", "point 12", "日本語 ✓ émoji 🙂",
             "", "<|im_start|>user\nHi<|im_end|>\n", "x" * 3000]
    assert encode_many(tok, texts) == [tok.encode(t) for t in texts]
    assert encode_many(CharTokenizer(), ["ab", "c"]) == [[97, 98], [99]]
