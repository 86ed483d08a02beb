"""Sibling grouping shared by ``batch-forks`` and ``batch-selects``.

The ``j``-th gen (or select) of every branch of one fork forms a group that the executor issues as
one runtime call: each branch waits at that node until all siblings arrived. That wait must not
deadlock, so a group is kept only if no member depends on another, all members run under the same
switch cases (a member in a case not taken would never arrive), and contracting every kept group to
one node leaves the graph acyclic.
"""
from __future__ import annotations

from collections.abc import Callable

import networkx as nx

import ir

from .rewrite import stream_chain


def sibling_groups(graph: ir.Graph, accept: Callable[[ir.Node], bool], min_size: int = 2) -> list[tuple[int, ...]]:
    """Groups of same-position accepted nodes across the branches of each fork (deadlock-free)."""
    groups: list[tuple[int, ...]] = []
    guards = graph.guards()
    for nid, node in graph.items():
        if not isinstance(node, ir.Fork) or node.n < min_size:
            continue
        per_branch = [[m for m in stream_chain(graph, head) if accept(graph.node(m))]
                      for head in graph.fork_children(nid)]
        depth = min(len(b) for b in per_branch)
        for j in range(depth):
            group = tuple(b[j] for b in per_branch)
            # NOTE: a branch's chain stops at a switch, so members share their fork's guards; checked anyway.
            same_cases = len({guards[graph.node(m).stream] for m in group}) == 1
            if same_cases and _independent(graph, group) and _acyclic(graph, groups + [group]):
                groups.append(group)
    return groups


def _independent(graph: ir.Graph, group: tuple[int, ...]) -> bool:
    return not any(a != b and nx.has_path(graph.g, a, b) for a in group for b in group)


def _acyclic(graph: ir.Graph, groups: list[tuple[int, ...]]) -> bool:
    rep = {m: g[0] for g in groups for m in g}
    contracted = nx.DiGraph()
    contracted.add_nodes_from(rep.get(n, n) for n in graph.g.nodes)
    contracted.add_edges_from((rep.get(u, u), rep.get(v, v)) for u, v in graph.g.edges)
    return nx.is_directed_acyclic_graph(contracted)
