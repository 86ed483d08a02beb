"""ir/: printer golden text, JSON round trip and versioning, verifier errors. No model, no sglc."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import ir


def build_fork_graph() -> ir.Graph:
    g = ir.Graph("tips", ("topic",))
    g.add(ir.Text(stream="s0", text="Tips about "))
    g.add(ir.Argument(stream="s0", name="topic"))
    fork = g.add(ir.Fork(stream="s0", n=2))
    tails = []
    for i in range(2):
        sid = g.new_stream()
        head = g.add(ir.GetForkItem(stream=sid, fork=fork, index=i))
        g.add_edge(fork, head, "fork")
        tails.append(g.add(ir.Gen(stream=sid, name="tip", params={"max_new_tokens": 8, "stop": ["\n"]})))
    join = g.add(ir.Join(stream="s0", fork=fork))
    for t in tails:
        g.add_edge(t, join, "join")
    ref = g.add(ir.VarRef(stream="s0", name="tip", source=tails[1]))
    g.add_edge(tails[1], ref, "data")
    g.add(ir.RoleBegin(stream="s0", role="assistant"))
    g.add(ir.Select(stream="s0", name="pick", choices=("a", "b"), choices_method="greedy_token_selection"))
    g.add(ir.RoleEnd(stream="s0", role="assistant"))
    g.add(ir.Image(stream="s0", path="cat.png"))
    return g


GOLDEN = """\
graph tips(topic) {
  %0 = text @s0 "Tips about "
  %1 = argument @s0 $topic
  %2 = fork @s0 n=2
  %3 = get_fork_item @s1 %2[0]
  %4 = gen @s1 "tip" {max_new_tokens=8, stop=["\\n"]}
  %5 = get_fork_item @s2 %2[1]
  %6 = gen @s2 "tip" {max_new_tokens=8, stop=["\\n"]}
  %7 = join @s0 %2 mode=gather_variable after=[%4, %6]
  %8 = var_ref @s0 %6."tip"
  %9 = role_begin @s0 assistant
  %10 = select @s0 "pick" choices=["a", "b"] method=greedy_token_selection
  %11 = role_end @s0 assistant
  %12 = image @s0 "cat.png"
}
"""


def test_printer_golden():
    assert ir.print_graph(build_fork_graph()) == GOLDEN


def test_printer_shows_locations_on_request():
    g = ir.Graph("p")
    g.add(ir.Text(stream="s0", text="hi", loc="prog.py:3"))
    assert ir.print_graph(g, show_loc=True).splitlines()[1] == '  %0 = text @s0 "hi"  # prog.py:3'


def test_verify_accepts_well_formed_graph():
    g = build_fork_graph()
    assert ir.verify(g) is g


def test_json_round_trip_is_identical():
    g = build_fork_graph()
    text = ir.dumps(g)
    doc = json.loads(text)
    assert doc["format"] == "sglc-ir" and doc["version"] == ir.VERSION
    back = ir.loads(text)
    assert back == g
    assert ir.print_graph(back) == GOLDEN
    assert isinstance(back.node(10).choices, tuple)
    assert ir.dumps(back) == text


def test_loading_a_newer_version_fails_clearly():
    doc = ir.to_dict(build_fork_graph())
    doc["version"] = ir.VERSION + 1
    with pytest.raises(ir.VerifyError, match="newer than the version this sglc reads"):
        ir.from_dict(doc)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(format="other"), "not an sglc IR document"),
    (lambda d: d["nodes"][0].update(kind="exec"), "unknown IR node kind 'exec'"),
    (lambda d: d["nodes"][0]["attrs"].update(code="print(1)"), "unknown attribute"),
    (lambda d: d["edges"].append([0, 99, "data"]), "names a node that is not in the document"),
    (lambda d: d["edges"].append([0, 1, "magic"]), "unknown kind 'magic'"),
])
def test_loading_rejects_bad_documents(mutate, message):
    doc = ir.to_dict(build_fork_graph())
    mutate(doc)
    with pytest.raises(ir.VerifyError, match=message):
        ir.from_dict(doc)


def _graph_with(*nodes: ir.Node, arguments: tuple[str, ...] = ()) -> ir.Graph:
    g = ir.Graph("bad", arguments)
    for n in nodes:
        g.add(n)
    return g


@pytest.mark.parametrize("graph, message", [
    (lambda: _graph_with(ir.Argument(stream="s0", name="x")), "not one of the graph's arguments"),
    (lambda: _graph_with(ir.Gen(stream="s0", name="")), "gen needs a variable name"),
    (lambda: _graph_with(ir.Gen(stream="s0", name="x", dtype="complex")), "dtype 'complex'"),
    (lambda: _graph_with(ir.Select(stream="s0", name="x", choices=())), "non-empty tuple"),
    (lambda: _graph_with(ir.Select(stream="s0", name="x", choices=("a",), choices_method="vote")),
     "choices_method 'vote'"),
    (lambda: _graph_with(ir.RoleBegin(stream="s0", role="user"), ir.RoleBegin(stream="s0", role="assistant")),
     "roles cannot nest"),
    (lambda: _graph_with(ir.RoleEnd(stream="s0", role="user")), "without a matching role_begin"),
    (lambda: _graph_with(ir.RoleBegin(stream="s0", role="user"), ir.RoleEnd(stream="s0", role="assistant")),
     "closes role 'user'"),
    (lambda: _graph_with(ir.RoleBegin(stream="s0", role="robot")), "role 'robot'"),
    (lambda: _graph_with(ir.Fork(stream="s0", n=2)), "fork n=2 must have fork edges"),
    (lambda: _graph_with(ir.Gen(stream="s0", name="x"), ir.VarRef(stream="s0", name="y", source=0)),
     "does not define it"),
    (lambda: _graph_with(ir.Image(stream="s0", path="")), "image needs a path"),
])
def test_verifier_errors(graph, message):
    with pytest.raises(ir.VerifyError, match=message):
        ir.verify(graph())


def test_verifier_rejects_cycles_and_cross_stream_edges():
    g = _graph_with(ir.Text(stream="s0", text="a"), ir.Text(stream="s0", text="b"))
    g.add_edge(1, 0, "data")
    with pytest.raises(ir.VerifyError, match="cycle"):
        ir.verify(g)
    g2 = _graph_with(ir.Text(stream="s0", text="a"), ir.Text(stream="s1", text="b"))
    g2.g.add_edge(0, 1, kind="stream")
    with pytest.raises(ir.VerifyError, match="crosses streams"):
        ir.verify(g2)


def test_join_needs_every_child_tail():
    g = build_fork_graph()
    g.g.remove_edge(4, 7)
    with pytest.raises(ir.VerifyError, match="one join edge from the tail of each child stream"):
        ir.verify(g)


def test_error_names_node_and_location():
    g = _graph_with(ir.Gen(stream="s0", name="", loc="prog.py:7"))
    with pytest.raises(ir.VerifyError, match=r"%0 \(gen @s0\) \(at prog.py:7\)"):
        ir.verify(g)


def test_visitor_dispatches_each_kind_once():
    seen = []

    class Kinds(ir.NodeVisitor):
        def generic_visit(self, nid, node):
            seen.append(node.kind)

    from test_ir_switch import build_switch_graph

    for g in (build_fork_graph(), build_switch_graph()):
        for nid, node in g.items():
            Kinds().visit(nid, node)
    assert set(seen) == set(ir.NODE_KINDS)


def test_ir_imports_nothing_of_ours_or_torch():
    code = ("import sys, ir; bad = [m for m in ('torch', 'sglc', 'passes', 'runtime', 'grammar') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_rebuild_helpers_keep_numbering_stable():
    g = ir.Graph("p")
    g.declare_stream("s1")
    g.reserve_ids(10)
    assert g.new_stream() == "s2"
    assert g.add(ir.Text(stream="s0", text="a")) == 10 and g.next_id == 11


def test_order_follows_every_change_to_the_graph():
    """``Graph.order()`` is memoized; a node or edge added or removed (through Graph or on ``g`` directly),
    or a replaced ``g``, gives a fresh order."""
    g = _graph_with(ir.Text(stream="s0", text="a"), ir.Text(stream="s1", text="b"), ir.Text(stream="s2", text="c"))
    assert g.order() == [0, 1, 2]
    g.add_edge(2, 0, "data")        # 2 must now come before 0
    assert g.order() == [1, 2, 0]
    g.g.remove_edge(2, 0)
    assert g.order() == [0, 1, 2]
    g.add(ir.Text(stream="s0", text="d"))
    assert g.order() == [0, 1, 2, 3]
    g.g.add_edge(3, 1, kind="data")
    assert g.order() == [0, 2, 3, 1]
    h = g.copy()
    h.g.remove_node(1)
    assert h.order() == [0, 2, 3] and g.order() == [0, 2, 3, 1]
    out = g.order()
    out.append(99)                   # callers get their own list
    assert g.order() == [0, 2, 3, 1]
