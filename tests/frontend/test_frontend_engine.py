"""The example programs on the embedded model through the in-process Engine (one Engine per module).

Token budgets are tiny (CPU CI): assertions check structure, not prose.
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

import ir
import sglc as sgl

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def engine():
    from runtime.engine import Engine

    eng = Engine()
    yield eng
    eng.shutdown()


def test_multi_turn_roles(engine):
    state = load_example("multi_turn_chat").main(engine, max_new_tokens=6)
    roles = [m["role"] for m in state.messages()]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert state.messages()[2]["content"] == state["answer_1"] and state["answer_1"].strip()
    assert "<|im_start|>assistant\n" + state["answer_2"] + "<|im_end|>" in state.text()
    assert state.get_meta_info("answer_1")["completion_tokens"] <= 6


def test_tool_use_select_and_control_flow(engine):
    mod = load_example("tool_use")
    state = mod.main(engine, max_new_tokens=4)
    assert state["tool"] in ("calculator", "search engine")
    follow = "The math expression is" if state["tool"] == "calculator" else "The key word to search is"
    assert follow in state.text()
    assert len(state.get_meta_info("tool")["scores"]) == 2
    with pytest.raises(sgl.TraceError, match=r"tool_use.py:\d+: .*compared"):
        mod.tool_use.trace()


def test_tip_suggestion_forks_reach_parent_and_graph_mode_matches(engine):
    mod = load_example("tip_suggestion")
    eager = mod.main(engine, max_new_tokens=5)
    text = eager.text()
    assert text.count("expand tip") == 0  # the branches' prompts stay in the forks
    tip1 = text.split("Tip 1:")[1].split("\nTip 2:")[0]
    assert tip1.strip() and "In summary" in text
    graph = mod.tip_suggestion.trace()
    assert [n.kind for _, n in graph.items()].count("gen") == 3
    again = mod.tip_suggestion.run_graph(backend=engine, temperature=0, max_new_tokens=5)
    assert again.text() == text


def test_regex_ip_full_match(engine):
    mod = load_example("regex_ip")
    state = mod.main(engine)
    assert re.fullmatch(mod.IP_REGEX, state["answer"]), state["answer"]


def test_harry_potter_json_full_match(engine):
    mod = load_example("json_harry_potter")
    state = mod.main(engine)
    out = state["json_output"]
    assert re.fullmatch(mod.character_regex, out), out
    assert json.loads(out)["house"] in ("Gryffindor", "Slytherin", "Ravenclaw", "Hufflepuff")


def test_batch_equals_run(engine):
    mod = load_example("batch_qa")
    states = mod.main(engine, max_new_tokens=6)
    singles = [mod.text_qa.run(question=q, temperature=0, max_new_tokens=6) for q in mod.QUESTIONS]
    assert [s["answer"] for s in states] == [s["answer"] for s in singles]
    assert all(s.text().startswith("Q: " + q) for s, q in zip(states, mod.QUESTIONS))


def test_streaming_pieces_join(engine):
    state, pieces = load_example("streaming").main(engine, max_new_tokens=6, temperature=0)
    assert len(pieces) >= 3
    assert "".join(pieces) == state.text()
    assert state.text().endswith(state["answer"])


@pytest.mark.parametrize("method", ["token_length_normalized", "greedy_token_selection",
                                    "unconditional_likelihood_normalized"])
def test_select_methods_and_gen_int(engine, method):
    @sgl.function
    def prog(s):
        s += "Q: Is the sky blue? A:" + sgl.select("yn", choices=[" yes", " no", " maybe"], choices_method=method)
        s += "\nQ: How many legs does a dog have? A: " + sgl.gen_int("legs", max_tokens=3)

    state = prog.run(backend=engine, temperature=0)
    assert state["yn"] in (" yes", " no", " maybe")
    assert state.get_meta_info("yn")["method"] == method
    assert re.fullmatch(r"[-+]?[0-9]+[ \n]*", state["legs"]), state["legs"]


def test_frontend_demo_graph_equals_eager(engine, monkeypatch, capsys):
    mod = load_example("frontend_demo")
    graph, g, e = mod.main(engine, max_new_tokens=3)
    assert g.text() == e.text()
    assert g["verdict"] in ("yes", "no") and len(g["detail"]) == 2
    assert ir.loads(ir.dumps(graph)) == graph
    assert "%11 = fork @s0 n=2" in capsys.readouterr().out
