"""Graph surgery helpers for passes (``ir.Graph`` has no node removal: passes rebuild instead)."""
from __future__ import annotations

from collections.abc import Mapping

import ir

from .plan import PLAN_KEY


def rebuild(graph: ir.Graph, nodes: Mapping[int, ir.Node], removed: Mapping[int, int]) -> ir.Graph:
    """A new graph with the same ids: ``nodes`` replaces node objects, ``removed`` maps each dropped
    node id to the id that takes over its cross-stream edges (e.g. the text node it was merged into).

    Stream edges are re-derived from the stable order, so a dropped node's stream neighbours are linked.
    """
    out = ir.Graph(graph.name, graph.arguments)
    for sid in graph.streams():
        out._tails.setdefault(sid, None)  # NOTE: keep stream names (and new_stream numbering) stable
    for nid in graph.order():
        if nid in removed:
            continue
        out.add(nodes.get(nid, graph.node(nid)), nid)
    for src, dst, kind in graph.edges():
        if kind == "stream":
            continue
        src, dst = _follow(src, removed), _follow(dst, removed)
        if src != dst and not out.g.has_edge(src, dst):
            out.add_edge(src, dst, kind)
    out._next_id = max(out._next_id, graph._next_id)
    if PLAN_KEY in graph.g.graph:
        out.g.graph[PLAN_KEY] = graph.g.graph[PLAN_KEY]
    return out


def rebuild_order(graph: ir.Graph, after: Mapping[int, int]) -> ir.Graph:
    """A new graph with the same nodes, ids and cross-stream edges, where node ``m`` of each ``after`` item
    ``m -> a`` moves down its stream to follow ``a`` (a later node of the same stream): stream edges are
    re-linked, everything else is kept."""
    out = ir.Graph(graph.name, graph.arguments)
    for sid in graph.streams():
        out._tails.setdefault(sid, None)  # NOTE: keep stream names (and new_stream numbering) stable
    follows: dict[int, list[int]] = {}
    for moved, anchor in sorted(after.items()):
        follows.setdefault(anchor, []).append(moved)

    def place(nid: int) -> None:
        out.add(graph.node(nid), nid)
        for moved in follows.get(nid, ()):
            place(moved)

    for nid in graph.order():
        if nid not in after:
            place(nid)
    for src, dst, kind in graph.edges():
        if kind != "stream":
            out.add_edge(src, dst, kind)
    out._next_id = max(out._next_id, graph._next_id)
    if PLAN_KEY in graph.g.graph:
        out.g.graph[PLAN_KEY] = graph.g.graph[PLAN_KEY]
    return out


def _follow(nid: int, removed: Mapping[int, int]) -> int:
    while nid in removed:
        nid = removed[nid]
    return nid


def stream_chain(graph: ir.Graph, head: int) -> list[int]:
    """Node ids of ``head``'s stream from ``head`` to the stream's end."""
    out = [head]
    while True:
        nxt = graph.succs(out[-1], "stream")
        if not nxt:
            return out
        out.append(nxt[0])


def leading_text(graph: ir.Graph, first: int | None) -> str:
    """The constant text of consecutive Text nodes starting at ``first`` (stops at any other kind)."""
    text = ""
    while first is not None:
        node = graph.node(first)
        if node.kind != "text":
            break
        text += node.text  # type: ignore[attr-defined]
        nxt = graph.succs(first, "stream")
        first = nxt[0] if nxt else None
    return text
