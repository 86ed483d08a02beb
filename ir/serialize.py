"""Versioned JSON form of the IR. Loading never executes code (no pickle, no eval).

Document layout::

    {"format": "sglc-ir", "version": 1, "name": "...", "arguments": [...],
     "nodes": [{"id": 0, "kind": "text", "stream": "s0", "loc": "prog.py:3", "attrs": {...}}, ...],
     "edges": [[src, dst, "stream"], ...]}
"""
from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from .graph import EDGE_KINDS, Graph
from .nodes import NODE_KINDS, Node
from .verify import VerifyError

FORMAT = "sglc-ir"
VERSION = 1


def to_dict(graph: Graph) -> dict[str, Any]:
    """The graph as a JSON-ready dict (nodes in stable order)."""
    nodes = [{"id": nid, "kind": n.kind, "stream": n.stream, "loc": n.loc, "attrs": _jsonable(n.attrs())}
             for nid, n in graph.items()]
    return {"format": FORMAT, "version": VERSION, "name": graph.name, "arguments": list(graph.arguments),
            "nodes": nodes, "edges": [list(e) for e in graph.edges()]}


def dumps(graph: Graph, indent: int | None = 1) -> str:
    """Serialize to a JSON string."""
    return json.dumps(to_dict(graph), indent=indent, ensure_ascii=False)


def from_dict(doc: dict[str, Any]) -> Graph:
    """Rebuild a graph from :func:`to_dict` output; raises :class:`VerifyError` on a bad document."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise VerifyError(f"not an sglc IR document (expected \"format\": \"{FORMAT}\")")
    version = doc.get("version")
    if not isinstance(version, int):
        raise VerifyError("sglc IR document has no integer \"version\"")
    if version > VERSION:
        raise VerifyError(f"this sglc IR document has format version {version}, newer than the version "
                          f"this sglc reads ({VERSION}); upgrade sglc or re-export the program")
    graph = Graph(str(doc.get("name", "program")), tuple(doc.get("arguments", ())))
    ids = {}
    for item in doc.get("nodes", []):
        nid = item["id"]
        node = _node_from(item)
        # NOTE: add() links stream edges by insertion order; drop them and restore the stored edges.
        graph.g.add_node(nid, node=node)
        graph._tails[node.stream] = nid
        graph._next_id = max(graph._next_id, nid + 1)
        ids[nid] = node
    for src, dst, kind in doc.get("edges", []):
        if src not in ids or dst not in ids:
            raise VerifyError(f"edge {src}->{dst} names a node that is not in the document")
        if kind not in EDGE_KINDS:
            raise VerifyError(f"edge {src}->{dst} has unknown kind {kind!r}")
        graph.g.add_edge(src, dst, kind=kind)
    _restore_tails(graph)
    return graph


def loads(text: str) -> Graph:
    """Parse a JSON string produced by :func:`dumps`."""
    return from_dict(json.loads(text))


def _node_from(item: dict[str, Any]) -> Node:
    kind = item.get("kind")
    cls = NODE_KINDS.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise VerifyError(f"unknown IR node kind {kind!r} (known: {sorted(NODE_KINDS)})")
    attrs = dict(item.get("attrs", {}))
    known = {f.name: f for f in fields(cls) if f.name not in ("stream", "loc")}
    unknown = sorted(set(attrs) - set(known))
    if unknown:
        raise VerifyError(f"node {item.get('id')} ({kind}) has unknown attribute(s) {unknown}")
    for name, f in known.items():
        if name in attrs and str(f.type).startswith("tuple") and isinstance(attrs[name], list):
            attrs[name] = tuple(attrs[name])
    return cls(stream=str(item["stream"]), loc=str(item.get("loc", "")), **attrs)


def _restore_tails(graph: Graph) -> None:
    for nid in graph.order():
        graph._tails[graph.node(nid).stream] = nid


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v
