"""Property tests: random graphs survive JSON and print identically; nodes hash by value."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import ir

text = st.text(max_size=12)
name = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)
params = st.dictionaries(st.sampled_from(["max_new_tokens", "temperature", "stop", "regex"]),
                         st.one_of(st.integers(0, 64), st.floats(0, 2, allow_nan=False), st.lists(text, max_size=2),
                                   text), max_size=3)
leaf = st.one_of(
    st.builds(lambda t: ir.Text(stream="s0", text=t), text),
    st.builds(lambda n, p: ir.Gen(stream="s0", name=n, params=p), name, params),
    st.builds(lambda n, c: ir.Select(stream="s0", name=n, choices=tuple(c)), name, st.lists(text, min_size=1, max_size=3)),
    st.builds(lambda r, t: [ir.RoleBegin(stream="s0", role=r), ir.Text(stream="s0", text=t),
                            ir.RoleEnd(stream="s0", role=r)], st.sampled_from(ir.ROLES), text),
)


def build(items: list, forks: int) -> ir.Graph:
    g = ir.Graph("prop", ("q",))
    g.add(ir.Argument(stream="s0", name="q"))
    for item in items:
        for node in item if isinstance(item, list) else [item]:
            g.add(node)
    if forks:
        fork = g.add(ir.Fork(stream="s0", n=forks))
        tails = []
        for i in range(forks):
            sid = g.new_stream()
            head = g.add(ir.GetForkItem(stream=sid, fork=fork, index=i))
            g.add_edge(fork, head, "fork")
            tails.append(g.add(ir.Gen(stream=sid, name="b", params={"max_new_tokens": i + 1})))
        join = g.add(ir.Join(stream="s0", fork=fork))
        for t in tails:
            g.add_edge(t, join, "join")
        ref = g.add(ir.VarRef(stream="s0", name="b", source=tails[0]))
        g.add_edge(tails[0], ref, "data")
    return g


@settings(max_examples=60, deadline=None)
@given(st.lists(leaf, max_size=8), st.integers(0, 3))
def test_random_graphs_round_trip(items, forks):
    g = ir.verify(build(items, forks))
    back = ir.loads(ir.dumps(g))
    assert back == g
    assert ir.print_graph(back, show_loc=True) == ir.print_graph(g, show_loc=True)
    ir.verify(back)


def test_nodes_hash_by_value():
    a = ir.Gen(stream="s0", name="x", params={"stop": ["\n"]})
    b = ir.Gen(stream="s0", name="x", params={"stop": ["\n"]}, loc="elsewhere.py:1")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert hash(a) != hash(ir.Gen(stream="s0", name="y", params={"stop": ["\n"]}))
