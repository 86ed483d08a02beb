"""``sink-joins``: move a fork's join down its stream, so that work after it that does not need the
branches runs while they do.

A ``gather_variable`` join only *waits* for the fork's branches and then sets the variables they defined
(as lists) in the parent's state; it adds no text. Nodes after it that read a branch's value already wait
for that value themselves (a ``var_ref`` has a data edge and blocks on it), so the join's wait protects only
what reads or overwrites the gathered variables. The pass moves each such join past the following nodes of
its stream that cannot observe the difference — text, gens and selects defining names no other stream
defines, var_refs, images, role markers — and stops before anything that can: a fork (it snapshots the
variables), another join, a switch or case, or a gen/select whose name a branch may also define (the join's
late write would then clobber it). A join that reaches the end of its stream waits there, before the program
returns, so the final state is the same.

Why it pays: ``s.fork(4) ... forks.join(); s += "Answer:" + gen(...)`` at ``-O0`` decodes the answer only
after the slowest branch; here the answer decodes in the same batches as the branches (the prompt is the
parent's text, which the join never changes). With branches reading ``forks[i]["x"]`` the continuation starts
as soon as the branches it reads are done.

Semantics: same texts and variables at temperature 0. A branch that fails still fails the program (at the
join's new place, after the continuation's own requests ran). ``concate_and_append`` joins append the
branches' text, so they never move.
"""
from __future__ import annotations

from dataclasses import dataclass

import ir

from .base import Pass
from .rewrite import rebuild_order

# Kinds a join may move past (a gen/select only when its name is not defined in another stream).
_PASSABLE = frozenset({"text", "gen", "select", "var_ref", "image", "role_begin", "role_end", "argument"})


@dataclass(frozen=True)
class SinkJoins(Pass):
    """Move each ``gather_variable`` join past the nodes after it that cannot observe its wait."""

    name = "sink-joins"

    def apply(self, graph: ir.Graph) -> ir.Graph:
        streams = graph.streams()
        defined_in: dict[str, set[str]] = {}
        for sid, ids in streams.items():
            for nid in ids:
                name = graph.node(nid).defines
                if name:
                    defined_in.setdefault(name, set()).add(sid)
        after: dict[int, int] = {}   # join id -> the node it now follows
        for sid, ids in streams.items():
            for i, nid in enumerate(ids):
                node = graph.node(nid)
                if node.kind != "join" or node.mode != "gather_variable":  # type: ignore[attr-defined]
                    continue
                j = i
                while j + 1 < len(ids) and _passable(graph.node(ids[j + 1]), sid, defined_in):
                    j += 1
                if j > i:
                    after[nid] = ids[j]
        if not after:
            return graph.copy()
        return rebuild_order(graph, after)


def _passable(node: ir.Node, stream: str, defined_in: dict[str, set[str]]) -> bool:
    if node.kind not in _PASSABLE:
        return False
    name = node.defines
    return not name or defined_in.get(name, set()) <= {stream}
