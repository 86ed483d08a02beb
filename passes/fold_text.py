"""``fold-text``: merge runs of adjacent constant text in a stream into one Text node."""
from __future__ import annotations

from dataclasses import dataclass

import ir

from .base import Pass
from .rewrite import rebuild


@dataclass(frozen=True)
class FoldText(Pass):
    """Merge consecutive ``text`` nodes of a stream (the first keeps its id) and drop empty texts
    that follow another node. Fewer nodes, longer constant runs for ``hoist-prefix`` to see.

    Semantics: appending ``a`` then ``b`` is appending ``a + b``; an empty append is a no-op.
    """

    name = "fold-text"
    drop_empty: bool = True

    def apply(self, graph: ir.Graph) -> ir.Graph:
        nodes: dict[int, ir.Node] = {}
        removed: dict[int, int] = {}
        for ids in graph.streams().values():
            run: int | None = None  # id of the text node that absorbs the following texts
            prev: int | None = None
            for nid in ids:
                node = graph.node(nid)
                if node.kind != "text":
                    run, prev = None, nid
                    continue
                if run is not None:
                    merged = nodes.get(run, graph.node(run))
                    nodes[run] = ir.Text(stream=merged.stream, loc=merged.loc,
                                         text=merged.text + node.text)  # type: ignore[attr-defined]
                    removed[nid] = run
                elif self.drop_empty and not node.text and prev is not None:  # type: ignore[attr-defined]
                    removed[nid] = prev
                else:
                    run = nid
                prev = nid if nid not in removed else prev
        if not removed:
            return graph.copy()
        return rebuild(graph, nodes, removed)
