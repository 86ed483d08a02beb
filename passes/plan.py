"""The optimization plan: what passes decided, kept beside the IR (the IR's node kinds stay unchanged).

A :class:`Plan` is an immutable value stored in the graph's attribute dict (``graph.g.graph``) under
:data:`PLAN_KEY`; ``Graph.copy()`` carries it along. It says

- ``hoists``: at a fork (or a select, or the program entry for ``run_batch``), which constant text
  the branches share, so the executor sends ``stream text + text`` to the runtime's ``warm`` first;
- ``gen_batches`` / ``select_batches``: groups of sibling gens / selects issued as one runtime call;
- ``constraints``: gen constraints compiled ahead of time, referenced by grammar cache key.

:func:`format_graph` prints the IR followed by a ``plan { ... }`` block (what golden tests compare).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import ir

PLAN_KEY = "sglc.plan"
HOIST_KINDS = ("fork", "select", "entry")


@dataclass(frozen=True)
class Hoist:
    """Warm ``<stream text at node at> + text`` before node ``at`` runs; ``fanout`` requests will share it."""

    at: int
    kind: str
    text: str = ""
    fanout: int = 1


@dataclass(frozen=True)
class ConstraintRef:
    """Gen ``node``'s constraint, compiled ahead of time; ``key`` is the grammar cache key (sha256)."""

    node: int
    kind: str
    source: str
    key: str = ""
    states: int = 0


@dataclass(frozen=True)
class Plan:
    """Everything the optimizing passes decided; empty at ``-O0``."""

    hoists: tuple[Hoist, ...] = ()
    gen_batches: tuple[tuple[int, ...], ...] = ()
    select_batches: tuple[tuple[int, ...], ...] = ()
    constraints: tuple[ConstraintRef, ...] = ()

    def replace(self, **changes: Any) -> Plan:
        return dataclasses.replace(self, **changes)

    def is_empty(self) -> bool:
        return not (self.hoists or self.gen_batches or self.select_batches or self.constraints)

    def hoist_at(self) -> dict[int, Hoist]:
        """Fork and select hoists by node id (the ``entry`` hoist is for ``run_batch``)."""
        return {h.at: h for h in self.hoists if h.kind != "entry"}

    def batch_of(self, batches: tuple[tuple[int, ...], ...]) -> dict[int, tuple[int, ...]]:
        return {nid: group for group in batches for nid in group}

    # -- plain values (artifact JSON) ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"hoists": [dataclasses.asdict(h) for h in self.hoists],
                "gen_batches": [list(b) for b in self.gen_batches],
                "select_batches": [list(b) for b in self.select_batches],
                "constraints": [dataclasses.asdict(c) for c in self.constraints]}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Plan:
        return cls(hoists=tuple(Hoist(**h) for h in doc.get("hoists", [])),
                   gen_batches=tuple(tuple(int(i) for i in b) for b in doc.get("gen_batches", [])),
                   select_batches=tuple(tuple(int(i) for i in b) for b in doc.get("select_batches", [])),
                   constraints=tuple(ConstraintRef(**c) for c in doc.get("constraints", [])))


def get_plan(graph: ir.Graph) -> Plan:
    """The graph's plan (an empty one if no pass set it)."""
    return graph.g.graph.get(PLAN_KEY) or Plan()


def with_plan(graph: ir.Graph, plan: Plan) -> ir.Graph:
    """A copy of ``graph`` carrying ``plan``."""
    out = graph.copy()
    out.g.graph[PLAN_KEY] = plan
    return out


def verify_plan(graph: ir.Graph) -> None:
    """Check that the plan names existing nodes of the right kinds; raises ``ir.VerifyError``."""
    plan = get_plan(graph)

    def need(nid: int, kinds: tuple[str, ...], what: str) -> None:
        if nid not in graph or graph.node(nid).kind not in kinds:
            raise ir.VerifyError(f"plan {what} names %{nid}, which is not a {'/'.join(kinds)} node")

    for h in plan.hoists:
        if h.kind not in HOIST_KINDS:
            raise ir.VerifyError(f"plan hoist at %{h.at} has unknown kind {h.kind!r}")
        need(h.at, {"fork": ("fork",), "select": ("select",)}.get(h.kind, tuple(ir.NODE_KINDS)), "hoist")
    for name, batches, kind in (("gen batch", plan.gen_batches, "gen"),
                                ("select batch", plan.select_batches, "select")):
        seen: set[int] = set()
        for group in batches:
            if len(group) < 2 or seen & set(group):
                raise ir.VerifyError(f"plan {name} {list(group)} must list at least two nodes, each in one batch")
            seen |= set(group)
            for nid in group:
                need(nid, (kind,), name)
    for c in plan.constraints:
        need(c.node, ("gen",), "constraint")


def print_plan(plan: Plan) -> str:
    """The plan as text, one decision per line (stable order)."""
    lines = []
    for h in sorted(plan.hoists, key=lambda h: (h.at, h.kind)):
        lines.append(f"  hoist %{h.at} {h.kind} fanout={h.fanout} text={json.dumps(h.text, ensure_ascii=False)}")
    for group in plan.gen_batches:
        lines.append("  batch-gen [" + ", ".join(f"%{i}" for i in group) + "]")
    for group in plan.select_batches:
        lines.append("  batch-select [" + ", ".join(f"%{i}" for i in group) + "]")
    for c in sorted(plan.constraints, key=lambda c: c.node):
        key = f" key={c.key[:16]}" if c.key else ""
        lines.append(f"  constraint %{c.node} {c.kind} {json.dumps(c.source, ensure_ascii=False)}{key}")
    return "plan {\n" + "".join(line + "\n" for line in lines) + "}\n"


def format_graph(graph: ir.Graph, show_loc: bool = False) -> str:
    """The printed IR, plus the plan block when the plan is not empty."""
    text = ir.print_graph(graph, show_loc)
    plan = get_plan(graph)
    return text if plan.is_empty() else text + print_plan(plan)
