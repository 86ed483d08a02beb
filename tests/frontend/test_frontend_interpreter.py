"""Eager and graph interpreters on a deterministic fake backend (no model)."""
from __future__ import annotations

import asyncio

import pytest
from frontend_fakes import FakeBackend
from test_frontend_trace import multi_turn, tip_suggestion, tool_use

import sglc as sgl
from sglc.sampling import to_params


@pytest.fixture()
def backend():
    return FakeBackend()


@pytest.mark.parametrize("program, kwargs", [
    (multi_turn, {"question_1": "What is 1+1?", "question_2": "And 2+2?"}),
    (tip_suggestion, {"topic": "staying healthy"}),
    (tool_use, {"question": "what is 3*4"}),
])
def test_eager_equals_graph_mode(backend, program, kwargs):
    eager = program.run(backend=backend, temperature=0, **kwargs)
    graph = program.run_graph(backend=backend, temperature=0, **kwargs)
    assert graph.text() == eager.text()
    assert graph.messages() == eager.messages()
    assert graph.variables() == eager.variables()


def test_roles_and_default_system_prompt():
    be = FakeBackend()
    be.chat_template = sgl.ChatTemplate("t", {r: (f"<{r}>", f"</{r}>") for r in ("system", "user", "assistant")},
                                        default_system_prompt="DEFAULT")

    @sgl.function
    def chat(s, q):
        s += sgl.user(q)
        s += sgl.assistant(sgl.gen("a", max_tokens=2))

    state = chat.run(q="hi", backend=be)
    assert [m["role"] for m in state.messages()] == ["system", "user", "assistant"]
    assert state.messages()[0]["content"] == "DEFAULT"
    assert state.text() == f"<system>DEFAULT</system><user>hi</user><assistant>{state['a']}</assistant>"


def test_forks_run_and_variables_reach_parent(backend):
    state = tip_suggestion.run(topic="sleep", backend=backend)
    tips = state["detailed_tip"]
    assert isinstance(tips, list) and len(tips) == 2 and tips[0] != tips[1]
    assert f"Tip 1:{tips[0]}\nTip 2:{tips[1]}\n" in state.text()
    prompts = [p for kind, p, _ in backend.calls if kind == "gen"]
    assert any(p.endswith("expand tip 2 into a paragraph:\n") for p in prompts)


def test_concate_and_append_join(backend):
    @sgl.function
    def prog(s):
        s += "Start."
        forks = s.fork(2)
        forks += [" one", " two"]
        forks.join(mode="concate_and_append")
        s += " End."

    assert prog.run(backend=backend).text() == "Start. one two End."
    assert prog.run_graph(backend=backend).text() == "Start. one two End."


def test_run_defaults_and_gen_overrides_reach_backend(backend):
    @sgl.function
    def prog(s):
        s += sgl.gen("a", max_tokens=3) + sgl.gen("b", stop=["x"], temperature=0.5)

    prog.run(backend=backend, temperature=0, max_new_tokens=7)
    params = [p for kind, _, p in backend.calls]
    assert params[0] == {"temperature": 0, "max_new_tokens": 3}
    assert params[1] == {"temperature": 0.5, "max_new_tokens": 7, "stop": ["x"]}


def test_unknown_arguments_are_rejected(backend):
    with pytest.raises(TypeError, match="unexpected argument 'topc'"):
        tip_suggestion.run(topc="x", backend=backend)
    with pytest.raises(TypeError, match="unknown sampling argument 'tempreature'"):
        to_params(tempreature=1)


def test_run_batch_matches_run(backend):
    batch = [{"topic": t} for t in ("sleep", "food", "sport")]
    states = tip_suggestion.run_batch(batch, backend=backend, temperature=0, progress_bar=True)
    singles = [tip_suggestion.run(backend=backend, temperature=0, **kw) for kw in batch]
    assert [s.text() for s in states] == [s.text() for s in singles]
    assert len({s.text() for s in states}) == 3
    lazy = tip_suggestion.run_batch(batch, backend=backend, temperature=0, generator_style=True)
    assert not isinstance(lazy, list)
    assert [s.text() for s in lazy] == [s.text() for s in states]


def test_streaming_pieces_join_to_final_text(backend):
    state = multi_turn.run(question_1="a", question_2="b", backend=backend, stream=True)
    pieces = list(state.text_iter())
    assert len(pieces) > 5
    assert "".join(pieces) == state.text()
    var_pieces = list(state.text_iter("answer_1"))
    assert "".join(var_pieces) == state["answer_1"] and len(var_pieces) > 1

    async def collect():
        return [p async for p in multi_turn.run(question_1="a", question_2="b", backend=backend,
                                                stream=True).text_async_iter()]

    assert "".join(asyncio.run(collect())) == state.text()


class FailingBackend(FakeBackend):
    def generate(self, prompt, params, dtype=None):
        raise ValueError("boom: max_new_tokens too large")


def test_errors_carry_the_program_line():
    @sgl.function
    def prog(s):
        s += "hello"
        s += sgl.gen("answer", max_tokens=4)  # the failing line

    with pytest.raises(sgl.InterpreterError, match=r"test_frontend_interpreter.py:\d+: gen\('answer'\) failed .*"
                                                   r"ValueError: boom"):
        prog.run(backend=FailingBackend())
    with pytest.raises(sgl.InterpreterError, match=r"gen\('answer'\) failed"):
        prog.run_graph(backend=FailingBackend())
    states = prog.run_batch([{}, {}], backend=FailingBackend())
    assert all(isinstance(s.error(), sgl.InterpreterError) for s in states)
    with pytest.raises(sgl.InterpreterError):
        states[0].text()


def test_error_in_parent_reaches_forks():
    @sgl.function
    def prog(s):
        s += sgl.gen("x", max_tokens=2)
        forks = s.fork(2)
        forks += sgl.gen("y", max_tokens=2)
        forks.join()

    with pytest.raises(sgl.InterpreterError, match=r"gen\('x'\) failed"):
        prog.run(backend=FailingBackend())


def test_a_streamed_program_that_raises_after_a_fork_ends_its_forks():
    """stream=True: the program raised while its root stream had not run the fork yet; the root then skips the
    fork, and its children waited for the fork's snapshot forever (one blocked thread each, per run)."""
    import threading
    import time

    gate = threading.Event()

    class Slow(FakeBackend):
        def generate(self, prompt, params, dtype=None):
            gate.wait(10)
            return super().generate(prompt, params, dtype)

    @sgl.function
    def prog(s):
        s += sgl.gen("x", max_tokens=2)   # the root stream is here (gate closed) when the program raises
        forks = s.fork(2)
        forks += sgl.gen("y", max_tokens=2)
        raise ValueError("user bug")

    state = prog.run(backend=Slow(), stream=True)
    deadline = time.monotonic() + 10
    while state.error() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    with pytest.raises(sgl.InterpreterError, match="user bug"):
        list(state.text_iter())
    children = [c for kids in state._ex.ctx.fork_children.values() for c in kids]
    assert len(children) == 2
    for child in children:
        child.thread.join(timeout=5)
        assert not child.thread.is_alive()


def test_appending_after_the_run_returned_is_an_error_not_a_hang(backend):
    """The stream's thread stopped at the run's end: a node appended later never ran and the next read waited
    for it forever."""
    @sgl.function
    def prog(s):
        s += "Q:" + sgl.gen("a", max_tokens=2)

    for state in (prog.run(backend=backend), prog.run_graph(backend=backend)):
        with pytest.raises(sgl.InterpreterError, match="already ended"):
            state += " more" + sgl.gen("b", max_tokens=2)
        assert state.text() == "Q:" + state["a"]


def test_no_backend_is_a_clear_error(monkeypatch):
    from sglc import program

    monkeypatch.setattr(program._DEFAULT, "backend", None)
    with pytest.raises(sgl.InterpreterError, match="set_default_backend"):
        multi_turn.run(question_1="a", question_2="b")


def test_bind_and_ret_value(backend):
    @sgl.function
    def prog(s, a, b):
        s += a + b
        return "done"

    state = prog.bind(a="x").run(b="y", backend=backend)
    assert state.text() == "xy" and state.ret_value == "done"


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, sglc; print('torch' in sys.modules, 'openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_calling_a_program_inside_another_inlines_it(backend):
    @sgl.function
    def greet(s, name):
        s += "Hello " + name + "."

    @sgl.function
    def outer(s, name):
        greet(s, name)
        s += " Bye."

    assert outer.run(name="Ada", backend=backend).text() == "Hello Ada. Bye."
    assert [n.kind for _, n in outer.trace().items()] == ["text", "argument", "text", "text"]


def test_dump_ir_logs_the_traced_graph(monkeypatch, caplog):
    import runtime.envs

    monkeypatch.setattr(runtime.envs, "ENV", runtime.envs.Env(dump_ir=True))
    with caplog.at_level("WARNING", logger="sglc.ir_dump"):
        tip_suggestion.trace()
    assert "IR after trace:" in caplog.text and "%3 = fork @s0 n=2  # test_frontend_trace.py:" in caplog.text


def test_runtime_launcher_reports_a_failed_server():
    with pytest.raises(RuntimeError, match="sglc serve exited with status 2"):
        sgl.Runtime(model_path="/nonexistent/model.gguf", start_timeout=60)


def test_sglang_state_forms_roles_setitem_and_fork_lambdas():
    """SGLang's other spellings: ``s.user(expr)`` (the role around it), ``s["x"] = v``, ``forks[i] += ...``,
    ``forks += lambda i: ...``; eager and graph mode give the same text."""
    be = FakeBackend()
    be.chat_template = sgl.ChatTemplate("t", {r: (f"<{r}>", f"</{r}>") for r in ("system", "user", "assistant")})

    @sgl.function
    def prog(s, topic):
        s.system("Be brief.")
        s.user("Tips on " + topic)
        s.assistant(sgl.gen("intro", max_tokens=2))
        forks = s.fork(2)
        forks += lambda i: f" Tip {i + 1}:"
        forks[1] += " (extra)"
        forks += sgl.gen("tip", max_tokens=1)
        forks.join()

    eager = prog.run(topic="sleep", backend=be)
    assert eager.text().startswith(f"<system>Be brief.</system><user>Tips on sleep</user><assistant>{eager['intro']}"
                                   "</assistant>")
    assert [m["role"] for m in eager.messages()] == ["system", "user", "assistant"]
    prompts = [p for kind, p, _ in be.calls if kind == "gen"]
    assert any(p.endswith(" Tip 1:") for p in prompts) and any(p.endswith(" Tip 2: (extra)") for p in prompts)
    assert len(eager["tip"]) == 2
    graph = prog.run_graph(topic="sleep", backend=be)
    assert graph.text() == eager.text() and graph.variables() == eager.variables()

    eager["note"] = "set by hand"
    assert eager["note"] == "set by hand" and "note" in eager.variables()
    forks = [None]

    @sgl.function
    def replace_fork(s):
        forks[0] = s.fork(2)
        forks[0][0] = forks[0][1]

    with pytest.raises(TypeError, match="can't be replaced"):
        replace_fork.run(backend=be)
    with pytest.raises(sgl.TraceError, match="cannot set variable 'x'"):
        sgl.function(lambda s: s.__setitem__("x", 1)).trace()


def test_run_batch_positional_items_and_kwargs_programs():
    be = FakeBackend()

    @sgl.function
    def qa(s, question, suffix="?"):
        s += "Q: " + question + suffix + "\nA:" + sgl.gen("a", max_tokens=2)

    by_tuple = qa.run_batch([("one",), ["two", "!"]], backend=be)
    by_dict = qa.run_batch([{"question": "one"}, {"question": "two", "suffix": "!"}], backend=be)
    assert [s.text() for s in by_tuple] == [s.text() for s in by_dict]
    assert by_tuple[1].text().startswith("Q: two!\nA:")

    @sgl.function
    def kw(s, **kwargs):
        s += f"{kwargs['foo']} " + sgl.gen("a", max_tokens=1)

    assert kw.run(foo="bar", temperature=0, backend=be).text().startswith("bar ")
    assert kw.trace(foo="bar", backend=be).arguments == ()
    with pytest.raises(TypeError, match="unexpected argument 'foo'"):
        qa.run("x", foo="bar", backend=be)
