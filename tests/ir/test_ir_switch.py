"""The switch node: printer golden text, JSON round trip, guards and home streams, verifier rules."""
from __future__ import annotations

import pytest

import ir


def build_switch_graph() -> ir.Graph:
    """A select, a switch on it; case "calculator" forks inside, case "search engine" is one gen."""
    g = ir.Graph("tools", ("q",))
    g.add(ir.Argument(stream="s0", name="q"))
    sel = g.add(ir.Select(stream="s0", name="tool", choices=("calculator", "search engine")))
    g.add(ir.Text(stream="s0", text=". "))
    sw = g.add(ir.Switch(stream="s0", name="tool", source=sel, cases=("calculator", "search engine")))
    g.add_edge(sel, sw, "data")
    calc, search = g.new_stream(), g.new_stream()
    g.add_edge(sw, g.add(ir.Case(stream=calc, switch=sw, value="calculator")), "case")
    g.add_edge(sw, g.add(ir.Case(stream=search, switch=sw, value="search engine")), "case")
    g.add(ir.Text(stream=calc, text="Expression:"))
    fork = g.add(ir.Fork(stream=calc, n=2))
    tails = []
    for i in range(2):
        sid = g.new_stream()
        g.add_edge(fork, g.add(ir.GetForkItem(stream=sid, fork=fork, index=i)), "fork")
        tails.append(g.add(ir.Gen(stream=sid, name="expr", params={"max_new_tokens": 4})))
    join = g.add(ir.Join(stream=calc, fork=fork))
    for t in tails:
        g.add_edge(t, join, "join")
    ref = g.add(ir.VarRef(stream=calc, name="tool", source=sel))
    g.add_edge(sel, ref, "data")
    g.add(ir.Text(stream=search, text="Keyword:"))
    g.add(ir.Gen(stream=search, name="word"))
    return g


GOLDEN = """\
graph tools(q) {
  %0 = argument @s0 $q
  %1 = select @s0 "tool" choices=["calculator", "search engine"] method=token_length_normalized
  %2 = text @s0 ". "
  %3 = switch @s0 %1."tool" {"calculator": @s1, "search engine": @s2}
  %4 = case @s1 %3 "calculator"
  %5 = case @s2 %3 "search engine"
  %6 = text @s1 "Expression:"
  %7 = fork @s1 n=2
  %8 = get_fork_item @s3 %7[0]
  %9 = gen @s3 "expr" {max_new_tokens=4}
  %10 = get_fork_item @s4 %7[1]
  %11 = gen @s4 "expr" {max_new_tokens=4}
  %12 = join @s1 %7 mode=gather_variable after=[%9, %11]
  %13 = var_ref @s1 %1."tool"
  %14 = text @s2 "Keyword:"
  %15 = gen @s2 "word" {}
}
"""


def test_switch_prints_its_case_streams():
    assert ir.print_graph(build_switch_graph()) == GOLDEN


def test_switch_json_round_trip():
    g = build_switch_graph()
    back = ir.loads(ir.dumps(g))
    assert back == g and ir.print_graph(back) == GOLDEN
    assert back.node(3).cases == ("calculator", "search engine")
    assert back.edges("case") == [(3, 4, "case"), (3, 5, "case")]


def test_guards_and_home_streams():
    g = build_switch_graph()
    assert g.guards() == {"s0": (), "s1": ((3, "calculator"),), "s2": ((3, "search engine"),),
                          "s3": ((3, "calculator"),), "s4": ((3, "calculator"),)}
    # NOTE: a case continues its switch's stream (one executor); fork children stay their own streams
    assert g.home_streams() == {"s0": "s0", "s1": "s0", "s2": "s0", "s3": "s3", "s4": "s4"}
    assert g.switch_cases(3) == [4, 5]


def test_a_data_edge_between_stream_neighbours_keeps_the_stream_edge():
    g = ir.Graph("p")
    sel = g.add(ir.Select(stream="s0", name="x", choices=("a", "b")))
    sw = g.add(ir.Switch(stream="s0", name="x", source=sel, cases=("a", "b")))
    g.add_edge(sel, sw, "data")
    assert g.edges() == [(0, 1, "stream")]


def _mutated(change):
    g = build_switch_graph()
    change(g)
    return g


def _case_reads_other_case(g: ir.Graph) -> None:
    ref = g.add(ir.VarRef(stream="s2", name="word", source=15))
    g.add_edge(15, ref, "data")
    other = g.add(ir.VarRef(stream="s1", name="word", source=15))
    g.add_edge(15, other, "data")


@pytest.mark.parametrize("change, message", [
    (lambda g: g.replace(3, ir.Switch(stream="s0", name="tool", source=0, cases=("calculator", "search engine"))),
     "not a select defining it"),
    (lambda g: g.replace(3, ir.Switch(stream="s0", name="tool", source=1, cases=("calculator",))),
     "must be the distinct choices of select %1"),
    (lambda g: g.add(ir.Text(stream="s0", text="after")), "a switch must end its stream"),
    (lambda g: g.g.remove_edge(3, 5), "one case edge to a case head"),
    (lambda g: g.replace(5, ir.Case(stream="s2", switch=3, value="abacus")), "one case edge to a case head"),
    (_case_reads_other_case, r"var_ref reads %15, which runs only in switch case\(s\) %3=\"search engine\""),
    (lambda g: g.add_edge(0, 4, "case"), "case edge %0->%4 must go from a switch to a case node"),
])
def test_switch_verifier_errors(change, message):
    with pytest.raises(ir.VerifyError, match=message):
        ir.verify(_mutated(change))


def test_a_join_may_sit_in_a_case_continuing_its_forks_stream():
    g = ir.Graph("p")
    fork = g.add(ir.Fork(stream="s0", n=1))
    g.add_edge(fork, g.add(ir.GetForkItem(stream="s1", fork=fork, index=0)), "fork")
    tail = g.add(ir.Gen(stream="s1", name="g"))
    sel = g.add(ir.Select(stream="s0", name="x", choices=("a",)))
    sw = g.add(ir.Switch(stream="s0", name="x", source=sel, cases=("a",)))
    g.add_edge(sel, sw, "data")
    g.add_edge(sw, g.add(ir.Case(stream="s2", switch=sw, value="a")), "case")
    join = g.add(ir.Join(stream="s2", fork=fork))
    g.add_edge(tail, join, "join")
    assert ir.verify(g) is g


def test_a_stream_ending_in_a_switch_cannot_be_joined():
    g = ir.Graph("p")
    fork = g.add(ir.Fork(stream="s0", n=1))
    g.add_edge(fork, g.add(ir.GetForkItem(stream="s1", fork=fork, index=0)), "fork")
    sel = g.add(ir.Select(stream="s1", name="x", choices=("a",)))
    sw = g.add(ir.Switch(stream="s1", name="x", source=sel, cases=("a",)))
    g.add_edge(sw, g.add(ir.Case(stream="s2", switch=sw, value="a")), "case")
    join = g.add(ir.Join(stream="s0", fork=fork))
    g.add_edge(sw, join, "join")
    with pytest.raises(ir.VerifyError, match="a stream that ends in a switch cannot be joined"):
        ir.verify(g)


def test_a_join_must_wait_on_each_child_streams_tail():
    """Otherwise a join could wait on a node before a switch (not on the switch) and race the taken case."""
    g = ir.Graph("m", ())
    fk = g.add(ir.Fork(stream="s0", n=1))
    c = g.new_stream()
    g.add_edge(fk, g.add(ir.GetForkItem(stream=c, fork=fk, index=0)), "fork")
    sel = g.add(ir.Select(stream=c, name="t", choices=("a", "b")))
    sw = g.add(ir.Switch(stream=c, name="t", source=sel, cases=("a", "b")))
    g.add_edge(sel, sw, "data")
    s1, s2 = g.new_stream(), g.new_stream()
    g.add_edge(sw, g.add(ir.Case(stream=s1, switch=sw, value="a")), "case")
    g.add_edge(sw, g.add(ir.Case(stream=s2, switch=sw, value="b")), "case")
    g.add(ir.Gen(stream=s1, name="x", params={"max_new_tokens": 1}))
    j = g.add(ir.Join(stream="s0", fork=fk, mode="concate_and_append"))
    g.add_edge(sel, j, "join")
    with pytest.raises(ir.VerifyError, match=rf"join waits on %{sel}, which is not the tail of stream {c} "
                                             rf"\(%{sw} follows it\)"):
        ir.verify(g)
