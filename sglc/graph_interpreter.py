"""Graph mode: execute an ``ir.Graph`` by issuing its nodes, in dependency order, to stream executors.

Each IR stream gets one :class:`~sglc.executor.StreamExecutor`; issuing never blocks, so fork
branches run in parallel and a var_ref or join waits on its worker thread for the data it needs.
A switch's case streams continue the switch's stream: they go to its executor (``Graph.home_streams``),
which runs only the case the select chose.
"""
from __future__ import annotations

from typing import Any

import ir

from .backend.base import Backend
from .errors import InterpreterError
from .executor import RunContext, StreamExecutor
from .state import ProgramState


class NodeIssuer(ir.NodeVisitor):
    """Sends each node to its stream's executor (creating executors on first use)."""

    def __init__(self, graph: ir.Graph, ctx: RunContext) -> None:
        self.graph = graph
        self.ctx = ctx
        self.executors: dict[str, StreamExecutor] = {}
        self.home = graph.home_streams()

    def executor(self, sid: str) -> StreamExecutor:
        sid = self.home.get(sid, sid)
        if sid not in self.executors:
            self.executors[sid] = self.ctx.new_executor(sid)
        return self.executors[sid]

    def generic_visit(self, nid: int, node: ir.Node) -> None:
        self.executor(node.stream).submit(nid, node)

    def visit_get_fork_item(self, nid: int, node: ir.GetForkItem) -> None:
        # NOTE: register the child before any join of this fork is issued (joins come later in order).
        n = self.graph.node(node.fork).n
        children = self.ctx.fork_children.setdefault(node.fork, [None] * n)  # type: ignore[list-item]
        children[node.index] = self.executor(node.stream)
        self.generic_visit(nid, node)


def run_graph(graph: ir.Graph, backend: Backend, defaults: dict[str, Any], arguments: dict[str, Any],
              stream: bool = False) -> ProgramState:
    """Run ``graph`` with ``arguments`` for its symbolic arguments; returns the root stream's state."""
    ir.verify(graph)
    check_arguments(graph, arguments)
    return execute(graph, RunContext(backend, defaults, arguments, stream), stream)


def check_arguments(graph: ir.Graph, arguments: dict[str, Any], hint: str = "") -> None:
    """Raise ``InterpreterError`` unless ``arguments`` are exactly the graph's arguments."""
    missing = [a for a in graph.arguments if a not in arguments]
    extra = sorted(set(arguments) - set(graph.arguments))
    if missing or extra:
        raise InterpreterError(f"program {graph.name!r} takes arguments {list(graph.arguments)}; "
                               f"missing {missing}, unexpected {extra}{hint}")


def execute(graph: ir.Graph, ctx: RunContext, stream: bool) -> ProgramState:
    """Issue every node to its stream's executor in graph order; the root state (synced unless ``stream``)."""
    issuer = NodeIssuer(graph, ctx)
    root = issuer.executor(ir.ROOT_STREAM)
    for nid, node in graph.items():
        node.accept(issuer, nid)
    ctx.end_all()
    state = ProgramState(root)
    if not stream:
        for ex in list(ctx.executors):
            ex.sync()
    return state
