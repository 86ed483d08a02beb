"""Text form of the IR: one SSA-like line per node in a stable topological order.

Example::

    graph multi_turn(question) {
      %0 = role_begin @s0 user
      %1 = argument @s0 $question
      %2 = role_end @s0 user
      %3 = gen @s0 "answer" {max_new_tokens=64, temperature=0}
      %4 = fork @s0 n=2
      %5 = get_fork_item @s1 %4[0]
      %7 = var_ref @s0 %3."answer"
      %9 = join @s0 %4 mode=gather_variable after=[%6, %8]
    }

A switch names the stream of each case; each case stream starts with its ``case`` head::

      %6 = switch @s0 %4."tool" {"calculator": @s1, "search engine": @s2}
      %7 = case @s1 %6 "calculator"
      %8 = case @s2 %6 "search engine"
"""
from __future__ import annotations

import json
from typing import Any

from .graph import Graph
from .nodes import (
    Argument,
    Case,
    Fork,
    Gen,
    GetForkItem,
    Image,
    Join,
    Node,
    NodeVisitor,
    RoleBegin,
    RoleEnd,
    Select,
    Switch,
    Text,
    VarRef,
)


def fmt_value(v: Any) -> str:
    """A deterministic one-line rendering of an attribute value (JSON, keys sorted)."""
    if isinstance(v, tuple):
        v = list(v)
    return json.dumps(v, sort_keys=True, ensure_ascii=False)


def fmt_params(params: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={fmt_value(params[k])}" for k in sorted(params)) + "}"


class _LinePrinter(NodeVisitor):
    """Renders the right-hand side of one node's line."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def visit_text(self, nid: int, n: Text) -> str:
        return fmt_value(n.text)

    def visit_argument(self, nid: int, n: Argument) -> str:
        return f"${n.name}"

    def visit_gen(self, nid: int, n: Gen) -> str:
        out = f"{fmt_value(n.name)} {fmt_params(n.params)}"
        return out + (f" dtype={n.dtype}" if n.dtype else "")

    def visit_select(self, nid: int, n: Select) -> str:
        out = f"{fmt_value(n.name)} choices={fmt_value(n.choices)} method={n.choices_method}"
        return out + (f" temperature={fmt_value(n.temperature)}" if n.temperature else "")

    def visit_fork(self, nid: int, n: Fork) -> str:
        return f"n={n.n}"

    def visit_get_fork_item(self, nid: int, n: GetForkItem) -> str:
        return f"%{n.fork}[{n.index}]"

    def visit_join(self, nid: int, n: Join) -> str:
        after = ", ".join(f"%{p}" for p in self.graph.preds(nid, "join"))
        return f"%{n.fork} mode={n.mode} after=[{after}]"

    def visit_role_begin(self, nid: int, n: RoleBegin) -> str:
        return n.role

    def visit_role_end(self, nid: int, n: RoleEnd) -> str:
        return n.role

    def visit_image(self, nid: int, n: Image) -> str:
        return fmt_value(n.path)

    def visit_var_ref(self, nid: int, n: VarRef) -> str:
        return f"%{n.source}.{fmt_value(n.name)}"

    def visit_switch(self, nid: int, n: Switch) -> str:
        streams = {self.graph.node(h).value: self.graph.node(h).stream  # type: ignore[attr-defined]
                   for h in self.graph.succs(nid, "case")}
        cases = ", ".join(f"{fmt_value(v)}: @{streams.get(v, '?')}" for v in n.cases)
        return f"%{n.source}.{fmt_value(n.name)} {{{cases}}}"

    def visit_case(self, nid: int, n: Case) -> str:
        return f"%{n.switch} {fmt_value(n.value)}"


def print_node(graph: Graph, nid: int, show_loc: bool = False) -> str:
    """One line for node ``nid``: ``%id = kind @stream <attrs>`` (plus ``  # loc`` if asked)."""
    node: Node = graph.node(nid)
    rhs = node.accept(_LinePrinter(graph), nid)
    line = f"%{nid} = {node.kind} @{node.stream} {rhs}"
    return line + (f"  # {node.loc}" if show_loc and node.loc else "")


def print_graph(graph: Graph, show_loc: bool = False) -> str:
    """The whole graph as text; identical graphs print identically (golden-test friendly)."""
    lines = [f"graph {graph.name}({', '.join(graph.arguments)}) {{"]
    lines += ["  " + print_node(graph, nid, show_loc) for nid in graph.order()]
    lines.append("}")
    return "\n".join(lines) + "\n"


__all__ = ["fmt_params", "fmt_value", "print_graph", "print_node"]
