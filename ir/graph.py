"""The program graph: IR nodes in a ``networkx.DiGraph`` with typed edges.

Edge kinds (the ``kind`` edge attribute):

- ``stream``: consecutive nodes of one stream (each node has at most one stream predecessor
  and one stream successor);
- ``fork``: from a Fork node to the GetForkItem heading each child stream;
- ``join``: from the last node of each child stream to the Join that waits for it;
- ``data``: from the Gen/Select defining a variable to a VarRef (or Switch) reading it;
- ``case``: from a Switch node to the Case heading each of its case streams.

A case stream *continues* its switch's stream (one executor runs both, see :meth:`Graph.home_streams`);
:meth:`Graph.guards` says which switch cases must be taken for a stream to run.
"""
from __future__ import annotations

from collections.abc import Iterator

import networkx as nx

from .nodes import Case, GetForkItem, Node

EDGE_KINDS = ("stream", "fork", "join", "data", "case")
ROOT_STREAM = "s0"


class Graph:
    """A traced program. Node ids are small ints in creation order; streams are named ``s0``, ``s1``, ...

    Build it with :meth:`add` (which links the node after the stream's current tail) and
    :meth:`add_edge` for cross-stream edges. ``arguments`` lists the program's symbolic arguments.
    """

    def __init__(self, name: str = "program", arguments: tuple[str, ...] = ()) -> None:
        self.name = name
        self.arguments: tuple[str, ...] = tuple(arguments)
        self.g = nx.DiGraph()
        self._next_id = 0
        self._tails: dict[str, int | None] = {ROOT_STREAM: None}
        self._order: tuple[tuple[int, int, int], tuple[int, ...]] | None = None   # (graph id and size, order())

    # -- building ---------------------------------------------------------------------------
    def new_stream(self) -> str:
        """Allocate a fresh stream name."""
        sid = f"s{len(self._tails)}"
        self._tails[sid] = None
        return sid

    def declare_stream(self, sid: str) -> None:
        """Make ``sid`` known (possibly empty), e.g. when a pass rebuilds a graph, so that
        :meth:`new_stream` numbering stays stable."""
        self._tails.setdefault(sid, None)

    @property
    def next_id(self) -> int:
        """The id :meth:`add` gives the next node when none is passed."""
        return self._next_id

    def reserve_ids(self, upto: int) -> None:
        """Never hand out ids below ``upto`` (keeps ids of a rebuilt graph disjoint from removed ones)."""
        self._next_id = max(self._next_id, upto)

    def add(self, node: Node, nid: int | None = None) -> int:
        """Append ``node`` to its stream (a ``stream`` edge from the stream's tail); return its id."""
        if nid is None:
            nid = self._next_id
        self._next_id = max(self._next_id, nid + 1)
        self._tails.setdefault(node.stream, None)
        tail = self._tails[node.stream]
        self.g.add_node(nid, node=node)
        self._order = None
        if tail is not None:
            self.g.add_edge(tail, nid, kind="stream")
        self._tails[node.stream] = nid
        return nid

    def add_edge(self, src: int, dst: int, kind: str) -> None:
        """Add a cross-stream edge (``fork``, ``join``, ``data`` or ``case``)."""
        if kind not in EDGE_KINDS:
            raise ValueError(f"unknown edge kind {kind!r}; expected one of {EDGE_KINDS}")
        if kind == "data" and self.g.has_edge(src, dst):
            return  # NOTE: one edge per pair; the stream edge already orders a value before its reader
        self.g.add_edge(src, dst, kind=kind)
        self._order = None

    def tail(self, stream: str) -> int | None:
        """The last node added to ``stream`` (``None`` for an empty stream)."""
        return self._tails.get(stream)

    def replace(self, nid: int, node: Node) -> None:
        """Swap the node object at ``nid`` (same id and edges), e.g. in a pass."""
        self.g.nodes[nid]["node"] = node

    # -- reading ----------------------------------------------------------------------------
    def node(self, nid: int) -> Node:
        return self.g.nodes[nid]["node"]

    def __len__(self) -> int:
        return self.g.number_of_nodes()

    def __contains__(self, nid: object) -> bool:
        return nid in self.g

    def order(self) -> list[int]:
        """All node ids in a stable topological order (ties broken by id)."""
        # NOTE: memoized: a run reads the order of its compiled graph several times (streams(), executors, the
        # batch's heads), ~0.7 ms each on a 60-node program. Every change to the graph changes its node or edge
        # count (or replaces ``g``), or goes through add/add_edge (which drop the memo), except direct edits of ``g``
        # that keep both counts (remove an edge, add another), which nothing does: passes build new graphs.
        key = (id(self.g), self.g.number_of_nodes(), self.g.number_of_edges())
        memo = self._order
        if memo is None or memo[0] != key:
            memo = self._order = (key, tuple(nx.lexicographical_topological_sort(self.g)))
        return list(memo[1])

    def items(self) -> Iterator[tuple[int, Node]]:
        """``(id, node)`` pairs in :meth:`order`."""
        for nid in self.order():
            yield nid, self.node(nid)

    def edges(self, kind: str | None = None) -> list[tuple[int, int, str]]:
        """Edges as ``(src, dst, kind)`` sorted, optionally only one kind."""
        out = [(u, v, d["kind"]) for u, v, d in self.g.edges(data=True) if kind in (None, d["kind"])]
        return sorted(out)

    def preds(self, nid: int, kind: str) -> list[int]:
        return sorted(u for u, _, d in self.g.in_edges(nid, data=True) if d["kind"] == kind)

    def succs(self, nid: int, kind: str) -> list[int]:
        return sorted(v for _, v, d in self.g.out_edges(nid, data=True) if d["kind"] == kind)

    def streams(self) -> dict[str, list[int]]:
        """Each stream's node ids in stream order (streams sorted by number)."""
        out: dict[str, list[int]] = {s: [] for s in sorted(self._tails, key=_stream_key)}
        for nid in self.order():
            out.setdefault(self.node(nid).stream, []).append(nid)
        return out

    def fork_children(self, fork_id: int) -> list[int]:
        """The GetForkItem node ids of a Fork, by index."""
        heads = self.succs(fork_id, "fork")
        return sorted(heads, key=lambda h: self._index(h))

    def switch_cases(self, switch_id: int) -> list[int]:
        """The Case head ids of a Switch, in the order of its ``cases``."""
        order = {v: i for i, v in enumerate(getattr(self.node(switch_id), "cases", ()))}
        return sorted(self.succs(switch_id, "case"),
                      key=lambda h: (order.get(getattr(self.node(h), "value", None), len(order)), h))

    def stream_parents(self) -> dict[str, tuple[str, tuple[int, str] | None]]:
        """Per stream that starts another one's branch: ``(parent stream, (switch, value) or None)``.

        A fork's child stream has its fork's stream as parent (``None``: it always runs once the fork
        ran); a case stream has its switch's stream and the case it is (it runs only if taken).
        """
        out: dict[str, tuple[str, tuple[int, str] | None]] = {}
        for sid, ids in self.streams().items():
            if not ids:
                continue
            head = self.node(ids[0])
            if isinstance(head, GetForkItem) and head.fork in self:
                out[sid] = (self.node(head.fork).stream, None)
            elif isinstance(head, Case) and head.switch in self:
                out[sid] = (self.node(head.switch).stream, (head.switch, head.value))
        return out

    def guards(self) -> dict[str, tuple[tuple[int, str], ...]]:
        """Per stream, the ``(switch id, case value)`` pairs that must all be taken for it to run, outermost
        first: ``()`` for streams that always run. Fork children inherit their fork's stream's guards."""
        parents = self.stream_parents()
        out: dict[str, tuple[tuple[int, str], ...]] = {}

        def guard(sid: str, seen: frozenset[str] = frozenset()) -> tuple[tuple[int, str], ...]:
            if sid in out:
                return out[sid]
            parent = parents.get(sid)
            if parent is None or parent[0] in seen or parent[0] == sid:  # NOTE: malformed graphs: the verifier says why
                out[sid] = ()
                return ()
            base = guard(parent[0], seen | {sid})
            out[sid] = base + ((parent[1],) if parent[1] is not None else ())
            return out[sid]

        for sid in self.streams():
            guard(sid)
        return out

    def home_streams(self) -> dict[str, str]:
        """Per stream, the stream whose executor runs it: a case stream continues its switch's stream
        (transitively); every other stream is its own home."""
        parents = self.stream_parents()
        out: dict[str, str] = {}
        for sid in self.streams():
            home, seen = sid, {sid}
            while home in parents and parents[home][1] is not None and parents[home][0] not in seen:
                home = parents[home][0]
                seen.add(home)
            out[sid] = home
        return out

    def _index(self, head: int) -> int:
        node = self.node(head)
        return node.index if isinstance(node, GetForkItem) else -1

    def copy(self) -> Graph:
        """A structural copy (node objects are immutable and shared)."""
        other = Graph(self.name, self.arguments)
        other.g = self.g.copy()
        other._next_id = self._next_id
        other._tails = dict(self._tails)
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return (self.name == other.name and self.arguments == other.arguments
                and self.edges() == other.edges()
                and [(i, n) for i, n in self.items()] == [(i, n) for i, n in other.items()])

    def __str__(self) -> str:
        from .printer import print_graph

        return print_graph(self)


def _stream_key(sid: str) -> tuple[int, str]:
    digits = sid[1:]
    return (int(digits), sid) if digits.isdigit() else (1 << 30, sid)
