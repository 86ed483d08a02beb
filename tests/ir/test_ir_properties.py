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


def add_switch(g: ir.Graph, choices: list[str], case_items: list) -> ir.Graph:
    """End the root stream with a select and a switch on it; each case gets ``case_items`` and a gen."""
    sel = g.add(ir.Select(stream="s0", name="pick", choices=tuple(choices)))
    cases = tuple(dict.fromkeys(choices))
    sw = g.add(ir.Switch(stream="s0", name="pick", source=sel, cases=cases))
    g.add_edge(sel, sw, "data")
    for i, value in enumerate(cases):
        sid = g.new_stream()
        g.add_edge(sw, g.add(ir.Case(stream=sid, switch=sw, value=value)), "case")
        for item in case_items:
            for node in item if isinstance(item, list) else [item]:
                g.add(ir.Text(stream=sid, text=node.text) if isinstance(node, ir.Text) else
                      type(node)(**{**node.attrs(), "stream": sid}))
        ref = g.add(ir.VarRef(stream=sid, name="pick", source=sel))
        g.add_edge(sel, ref, "data")
        g.add(ir.Gen(stream=sid, name=f"c{i}"))
    return g


@settings(max_examples=60, deadline=None)
@given(st.lists(leaf, max_size=8), st.integers(0, 3),
       st.one_of(st.none(), st.lists(text, min_size=1, max_size=3)), st.lists(leaf, max_size=3))
def test_random_graphs_round_trip(items, forks, switch_choices, case_items):
    g = build(items, forks)
    if switch_choices is not None:
        g = add_switch(g, switch_choices, case_items)
    g = ir.verify(g)
    back = ir.loads(ir.dumps(g))
    assert back == g
    assert ir.print_graph(back, show_loc=True) == ir.print_graph(g, show_loc=True)
    ir.verify(back)


def test_nodes_hash_by_value():
    a = ir.Gen(stream="s0", name="x", params={"stop": ["\n"]})
    b = ir.Gen(stream="s0", name="x", params={"stop": ["\n"]}, loc="elsewhere.py:1")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert hash(a) != hash(ir.Gen(stream="s0", name="y", params={"stop": ["\n"]}))
