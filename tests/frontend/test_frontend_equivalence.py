"""Property: for random static programs, eager mode and graph mode give the same state (fake backend)."""
from __future__ import annotations

from frontend_fakes import FakeBackend
from hypothesis import given, settings
from hypothesis import strategies as st

import sglc as sgl

step = st.one_of(
    st.tuples(st.just("text"), st.text(alphabet="abc \n", max_size=5)),
    st.tuples(st.just("arg"), st.just(None)),
    st.tuples(st.just("gen"), st.integers(1, 3)),
    st.tuples(st.just("select"), st.lists(st.sampled_from(["x", "y", "zz"]), min_size=1, max_size=3, unique=True)),
    st.tuples(st.just("role"), st.sampled_from(["system", "user", "assistant"])),
    st.tuples(st.just("fork"), st.tuples(st.integers(1, 3), st.sampled_from(["gather_variable",
                                                                             "concate_and_append"]))),
)


def make_program(steps):
    @sgl.function
    def prog(s, topic):
        for i, (kind, arg) in enumerate(steps):
            if kind == "text":
                s += arg
            elif kind == "arg":
                s += "<" + topic + ">"
            elif kind == "gen":
                s += sgl.gen(f"g{i}", max_tokens=arg)
            elif kind == "select":
                s += sgl.select(f"c{i}", choices=arg)
            elif kind == "role":
                s += getattr(sgl, arg)("r" + sgl.gen(f"r{i}", max_tokens=1))
            else:
                n, mode = arg
                forks = s.fork(n)
                for j, f in enumerate(forks):
                    f += f"[{j}]" + sgl.gen(f"f{i}", max_tokens=j + 1)
                forks.join(mode)
                s += "|" + forks[n - 1][f"f{i}"]
    return prog


@settings(max_examples=40, deadline=None)
@given(st.lists(step, max_size=6))
def test_eager_and_graph_mode_agree(steps):
    prog = make_program(steps)
    backend = FakeBackend()
    eager = prog.run(topic="tea", backend=backend)
    graph = prog.run_graph(topic="tea", backend=backend)
    assert graph.text() == eager.text()
    assert graph.messages() == eager.messages()
    assert graph.variables() == eager.variables()
