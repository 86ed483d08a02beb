"""IR well-formedness checks; run before and after every pass."""
from __future__ import annotations

import networkx as nx

from .graph import Graph
from .nodes import (
    CHOICES_METHODS,
    JOIN_MODES,
    ROLES,
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

_DTYPES = (None, "int", "float", "str", "bool")


class VerifyError(ValueError):
    """The IR is malformed; the message names the node (``%id``) and what to fix."""


def verify(graph: Graph) -> Graph:
    """Check ``graph`` and return it; raise :class:`VerifyError` on the first problem found."""
    _check_edges(graph)
    checker = _NodeChecker(graph)
    for nid, node in graph.items():
        node.accept(checker, nid)
    checker.finish()
    return graph


def _fail(nid: int, node: Node, msg: str) -> None:
    where = f" (at {node.loc})" if node.loc else ""
    raise VerifyError(f"%{nid} ({node.kind} @{node.stream}){where}: {msg}")


def _check_edges(graph: Graph) -> None:
    for nid in graph.g.nodes:
        if "node" not in graph.g.nodes[nid]:
            raise VerifyError(f"%{nid} has no node object (an edge names a node that was never added)")
    if not nx.is_directed_acyclic_graph(graph.g):
        cycle = nx.find_cycle(graph.g)
        raise VerifyError(f"the graph has a cycle through {[f'%{u}' for u, _ in cycle]}; IR graphs are DAGs")
    for u, v, kind in graph.edges("stream"):
        if graph.node(u).stream != graph.node(v).stream:
            raise VerifyError(f"stream edge %{u}->%{v} crosses streams "
                              f"({graph.node(u).stream} -> {graph.node(v).stream}); use a data edge")
    for u, v, _ in graph.edges("case"):
        if graph.node(u).kind != "switch" or graph.node(v).kind != "case":
            raise VerifyError(f"case edge %{u}->%{v} must go from a switch to a case node")
    for nid in graph.g.nodes:
        if len(graph.preds(nid, "stream")) > 1 or len(graph.succs(nid, "stream")) > 1:
            raise VerifyError(f"%{nid} has more than one stream predecessor or successor; a stream is a chain")
    for stream, ids in graph.streams().items():
        heads = [i for i in ids if not graph.preds(i, "stream")]
        if len(heads) > 1:
            raise VerifyError(f"stream {stream} is not one chain: it starts at {[f'%{h}' for h in heads]}")


class _NodeChecker(NodeVisitor):
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.open_roles: dict[str, tuple[int, str]] = {}  # stream -> (role_begin id, role)
        self.guards = graph.guards()
        self.parents = graph.stream_parents()

    def finish(self) -> None:
        # NOTE: a role left open at the end of a stream is allowed (the state's text is still valid).
        return None

    def visit_text(self, nid: int, n: Text) -> None:
        if not isinstance(n.text, str):
            _fail(nid, n, f"text must be a string, got {type(n.text).__name__}")

    def visit_argument(self, nid: int, n: Argument) -> None:
        if n.name not in self.graph.arguments:
            _fail(nid, n, f"argument {n.name!r} is not one of the graph's arguments {list(self.graph.arguments)}")

    def visit_gen(self, nid: int, n: Gen) -> None:
        if not n.name:
            _fail(nid, n, "gen needs a variable name")
        if not isinstance(n.params, dict):
            _fail(nid, n, "gen params must be a dict")
        if n.dtype not in _DTYPES:
            _fail(nid, n, f"dtype {n.dtype!r} is not one of {_DTYPES}")

    def visit_select(self, nid: int, n: Select) -> None:
        if not n.name:
            _fail(nid, n, "select needs a variable name")
        if not n.choices or not all(isinstance(c, str) for c in n.choices):
            _fail(nid, n, "select needs a non-empty tuple of string choices")
        if n.choices_method not in CHOICES_METHODS:
            _fail(nid, n, f"choices_method {n.choices_method!r} is not one of {CHOICES_METHODS}")

    def visit_fork(self, nid: int, n: Fork) -> None:
        heads = self.graph.succs(nid, "fork")
        indices = sorted(self.graph.node(h).index for h in heads if self.graph.node(h).kind == "get_fork_item")
        if n.n < 1 or indices != list(range(n.n)) or len(heads) != n.n:
            _fail(nid, n, f"fork n={n.n} must have fork edges to get_fork_item nodes with indices 0..{n.n - 1}, "
                          f"found {indices}")

    def visit_get_fork_item(self, nid: int, n: GetForkItem) -> None:
        if self.graph.preds(nid, "stream"):
            _fail(nid, n, "get_fork_item must head its stream")
        if self.graph.preds(nid, "fork") != [n.fork] or self.graph.node(n.fork).kind != "fork":
            _fail(nid, n, f"get_fork_item must have exactly one fork edge, from fork %{n.fork}")
        if self.graph.node(n.fork).stream == n.stream:
            _fail(nid, n, "a fork's child must be a different stream than its parent")

    def visit_join(self, nid: int, n: Join) -> None:
        if n.fork not in self.graph or self.graph.node(n.fork).kind != "fork":
            _fail(nid, n, f"join refers to %{n.fork}, which is not a fork node")
        if not self._continues(n.stream, self.graph.node(n.fork).stream):
            _fail(nid, n, "join must be in the stream of its fork (or a switch case continuing it)")
        if n.mode not in JOIN_MODES:
            _fail(nid, n, f"join mode {n.mode!r} is not one of {JOIN_MODES}")
        for p in self.graph.preds(nid, "join"):
            if self.graph.node(p).kind == "switch":
                _fail(nid, n, f"join waits on switch %{p}, whose cases continue that stream after it; "
                              "a stream that ends in a switch cannot be joined (join inside the cases instead)")
            after = self.graph.succs(p, "stream")
            if after:
                _fail(nid, n, f"join waits on %{p}, which is not the tail of stream {self.graph.node(p).stream} "
                              f"(%{after[0]} follows it); a join waits on the last node of each child stream")
        child_streams = {self.graph.node(h).stream for h in self.graph.succs(n.fork, "fork")}
        tails = {self.graph.node(p).stream for p in self.graph.preds(nid, "join")}
        if tails != child_streams:
            _fail(nid, n, f"join needs one join edge from the tail of each child stream {sorted(child_streams)}, "
                          f"got {sorted(tails)}")

    def visit_role_begin(self, nid: int, n: RoleBegin) -> None:
        if n.role not in ROLES:
            _fail(nid, n, f"role {n.role!r} is not one of {ROLES}")
        if n.stream in self.open_roles:
            begin, role = self.open_roles[n.stream]
            _fail(nid, n, f"role {n.role!r} begins inside role {role!r} (%{begin}); "
                          "roles cannot nest: end the previous role first")
        self.open_roles[n.stream] = (nid, n.role)

    def visit_role_end(self, nid: int, n: RoleEnd) -> None:
        if n.role not in ROLES:
            _fail(nid, n, f"role {n.role!r} is not one of {ROLES}")
        opened = self.open_roles.pop(n.stream, None)
        if opened is None and not self._inherits_role(n.stream):
            _fail(nid, n, f"role_end {n.role!r} without a matching role_begin")
        if opened is not None and opened[1] != n.role:
            _fail(nid, n, f"role_end {n.role!r} closes role {opened[1]!r} (%{opened[0]})")

    def _inherits_role(self, stream: str) -> bool:
        # NOTE: a child stream (or a case) may end a role its parent opened before the fork (the switch).
        ids = self.graph.streams().get(stream, [])
        return bool(ids) and self.graph.node(ids[0]).kind in ("get_fork_item", "case")

    def _continues(self, stream: str, base: str) -> bool:
        """Whether ``stream`` is ``base`` or a (nested) case stream continuing it."""
        seen = set()
        while stream != base and stream not in seen:
            seen.add(stream)
            parent = self.parents.get(stream)
            if parent is None or parent[1] is None:
                return False
            stream = parent[0]
        return stream == base

    def _visible(self, nid: int, n: Node, source: int, what: str) -> None:
        """A value read at ``nid`` must come from a node that ran whenever ``nid`` runs (not another case)."""
        have, need = self.guards.get(n.stream, ()), self.guards.get(self.graph.node(source).stream, ())
        if have[:len(need)] != need:
            taken = ", ".join(f'%{s}="{v}"' for s, v in need)
            _fail(nid, n, f"{what} reads %{source}, which runs only in switch case(s) {taken} that do not "
                          "enclose this node (cases are mutually exclusive)")

    def visit_image(self, nid: int, n: Image) -> None:
        if not n.path:
            _fail(nid, n, "image needs a path or URL")

    def visit_var_ref(self, nid: int, n: VarRef) -> None:
        if n.source not in self.graph or self.graph.node(n.source).defines != n.name:
            _fail(nid, n, f"var_ref reads {n.name!r} from %{n.source}, which does not define it")
        if n.source not in self.graph.preds(nid, "data") and not nx.has_path(self.graph.g, n.source, nid):
            _fail(nid, n, f"var_ref needs a data edge from %{n.source}")
        self._visible(nid, n, n.source, "var_ref")

    def visit_switch(self, nid: int, n: Switch) -> None:
        src = self.graph.node(n.source) if n.source in self.graph else None
        if not isinstance(src, Select) or src.name != n.name:
            _fail(nid, n, f"switch reads {n.name!r} from %{n.source}, which is not a select defining it "
                          "(only a select's finite set of choices can be switched on)")
        assert isinstance(src, Select)
        if n.cases != tuple(dict.fromkeys(src.choices)):
            _fail(nid, n, f"switch cases {list(n.cases)} must be the distinct choices of select %{n.source} "
                          f"{list(dict.fromkeys(src.choices))}, in order")
        if n.source not in self.graph.preds(nid, "data") and not nx.has_path(self.graph.g, n.source, nid):
            _fail(nid, n, f"switch needs a data edge from %{n.source}")
        self._visible(nid, n, n.source, "switch")
        if self.graph.succs(nid, "stream"):
            _fail(nid, n, "a switch must end its stream: what follows it belongs in its cases")
        heads = [self.graph.node(h) for h in self.graph.succs(nid, "case")]
        values = sorted(getattr(h, "value", "") for h in heads)
        if values != sorted(n.cases) or len({h.stream for h in heads}) != len(heads):
            _fail(nid, n, f"switch needs one case edge to a case head (in its own stream) per value {list(n.cases)}, "
                          f"found {values}")
        if any(h.stream == n.stream for h in heads):
            _fail(nid, n, "a case must be a different stream than its switch")

    def visit_case(self, nid: int, n: Case) -> None:
        if self.graph.preds(nid, "stream"):
            _fail(nid, n, "case must head its stream")
        if self.graph.preds(nid, "case") != [n.switch] or self.graph.node(n.switch).kind != "switch":
            _fail(nid, n, f"case must have exactly one case edge, from switch %{n.switch}")
        if n.value not in self.graph.node(n.switch).cases:  # type: ignore[attr-defined]
            _fail(nid, n, f"case {n.value!r} is not one of switch %{n.switch}'s cases")
