"""Parse the printed IR (``ir.print_graph`` output, optionally followed by a ``plan { }`` block) back
into a graph — so golden tests and ``sglc compile file.ir`` can start from text.

NOTE: this belongs in ``ir/`` (the inverse of ``ir.printer``); it lives here until ir grows one.
"""
from __future__ import annotations

import json
import re
from typing import Any

import ir

from .base import PassError
from .plan import ConstraintRef, Hoist, Plan, with_plan

_HEADER = re.compile(r"^graph\s+(\w+)\((.*)\)\s*\{$")
_LINE = re.compile(r"^%(\d+)\s*=\s*(\w+)\s+@(\w+)\s*(.*)$")
_DECODER = json.JSONDecoder()


class _Cursor:
    """A tiny scanner over one line's right-hand side."""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def json(self) -> Any:
        self.ws()
        value, self.pos = _DECODER.raw_decode(self.text, self.pos)
        return value

    def expect(self, lit: str) -> None:
        self.ws()
        if not self.text.startswith(lit, self.pos):
            raise PassError(f"expected {lit!r} at column {self.pos} of {self.text!r}")
        self.pos += len(lit)

    def match(self, pattern: str) -> re.Match[str]:
        self.ws()
        m = re.compile(pattern).match(self.text, self.pos)
        if m is None:
            raise PassError(f"expected {pattern!r} at column {self.pos} of {self.text!r}")
        self.pos = m.end()
        return m

    def peek(self, lit: str) -> bool:
        self.ws()
        return self.text.startswith(lit, self.pos)

    def done(self) -> bool:
        self.ws()
        return self.pos >= len(self.text)

    def ref(self) -> int:
        return int(self.match(r"%(\d+)").group(1))

    def params(self) -> dict[str, Any]:
        self.expect("{")
        out: dict[str, Any] = {}
        while not self.peek("}"):
            key = self.match(r"(\w+)=").group(1)
            out[key] = self.json()
            if self.peek(","):
                self.expect(",")
        self.expect("}")
        return out


def _node(kind: str, stream: str, c: _Cursor) -> tuple[ir.Node, dict[str, Any]]:
    """One node from its rhs; also returns cross edges to add: {"join": [...], "data": src, "fork": src,
    "case": switch} (and a switch's printed {value: stream} map, checked once every node is in)."""
    if kind == "text":
        return ir.Text(stream=stream, text=c.json()), {}
    if kind == "argument":
        return ir.Argument(stream=stream, name=c.match(r"\$(\w+)").group(1)), {}
    if kind == "gen":
        name, params = c.json(), c.params()
        dtype = c.match(r"dtype=(\w+)").group(1) if c.peek("dtype=") else None
        return ir.Gen(stream=stream, name=name, params=params, dtype=dtype), {}
    if kind == "select":
        name = c.json()
        c.expect("choices=")
        choices = tuple(c.json())
        method = c.match(r"method=(\w+)").group(1)
        temp = 0.0
        if c.peek("temperature="):
            c.expect("temperature=")
            temp = float(c.json())
        return ir.Select(stream=stream, name=name, choices=choices, choices_method=method, temperature=temp), {}
    if kind == "fork":
        return ir.Fork(stream=stream, n=int(c.match(r"n=(\d+)").group(1))), {}
    if kind == "get_fork_item":
        fork = c.ref()
        index = int(c.match(r"\[(\d+)\]").group(1))
        return ir.GetForkItem(stream=stream, fork=fork, index=index), {"fork": fork}
    if kind == "join":
        fork = c.ref()
        mode = c.match(r"mode=(\w+)").group(1)
        after = [int(x) for x in re.findall(r"%(\d+)", c.match(r"after=\[([^\]]*)\]").group(1))]
        return ir.Join(stream=stream, fork=fork, mode=mode), {"join": after}
    if kind in ("role_begin", "role_end"):
        role = c.match(r"(\w+)").group(1)
        cls = ir.RoleBegin if kind == "role_begin" else ir.RoleEnd
        return cls(stream=stream, role=role), {}
    if kind == "image":
        return ir.Image(stream=stream, path=c.json()), {}
    if kind == "var_ref":
        src = c.ref()
        c.expect(".")
        return ir.VarRef(stream=stream, name=c.json(), source=src), {"data": src}
    if kind == "switch":
        src = c.ref()
        c.expect(".")
        name = c.json()
        c.expect("{")
        streams: dict[str, str] = {}
        while not c.peek("}"):
            value = c.json()
            c.expect(":")
            streams[value] = c.match(r"@(\w+)").group(1)
            if c.peek(","):
                c.expect(",")
        c.expect("}")
        return ir.Switch(stream=stream, name=name, source=src, cases=tuple(streams)), {"data": src, "cases": streams}
    if kind == "case":
        switch = c.ref()
        return ir.Case(stream=stream, switch=switch, value=c.json()), {"case": switch}
    raise PassError(f"unknown node kind {kind!r} in IR text")


def parse_graph(text: str) -> ir.Graph:
    """Parse printed IR (and an optional plan block); the result is verified."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.strip().startswith("//")]
    if not lines or not _HEADER.match(lines[0]):
        raise PassError("IR text must start with `graph NAME(ARGS) {`")
    head = _HEADER.match(lines[0])
    assert head is not None
    args = tuple(a.strip() for a in head.group(2).split(",") if a.strip())
    graph = ir.Graph(head.group(1), args)
    pending: list[tuple[int, dict[str, Any]]] = []
    i = 1
    while i < len(lines) and lines[i] != "}":
        m = _LINE.match(lines[i].split("  # ")[0])
        if m is None:
            raise PassError(f"cannot parse IR line {lines[i]!r}")
        cursor = _Cursor(m.group(4))
        node, edges = _node(m.group(2), m.group(3), cursor)
        if not cursor.done():
            raise PassError(f"trailing text in IR line {lines[i]!r}")
        pending.append((graph.add(node, int(m.group(1))), edges))
        i += 1
    for nid, edges in pending:
        if "fork" in edges:
            graph.add_edge(edges["fork"], nid, "fork")
        if "data" in edges:
            graph.add_edge(edges["data"], nid, "data")
        for src in edges.get("join", []):
            graph.add_edge(src, nid, "join")
        if "case" in edges:
            graph.add_edge(edges["case"], nid, "case")
    for nid, edges in pending:
        if "cases" in edges:
            found = {graph.node(h).value: graph.node(h).stream for h in graph.succs(nid, "case")}  # type: ignore[attr-defined]
            if found != edges["cases"]:
                raise PassError(f"switch %{nid} lists case streams {edges['cases']}, but its case heads are {found}")
    plan_lines = lines[i + 1:]
    if plan_lines:
        graph = with_plan(graph, _parse_plan(plan_lines))
    return ir.verify(graph)


def _parse_plan(lines: list[str]) -> Plan:
    if lines[0] != "plan {" or lines[-1] != "}":
        raise PassError("after the graph, only a `plan { ... }` block may follow")
    hoists, gens, selects, constraints = [], [], [], []
    for line in lines[1:-1]:
        c = _Cursor(line)
        word = c.match(r"([\w-]+)").group(1)
        if word == "hoist":
            at = c.ref()
            kind = c.match(r"(\w+)").group(1)
            fanout = int(c.match(r"fanout=(\d+)").group(1))
            c.expect("text=")
            hoists.append(Hoist(at, kind, c.json(), fanout))
        elif word in ("batch-gen", "batch-select"):
            group = tuple(int(x) for x in re.findall(r"%(\d+)", line))
            (gens if word == "batch-gen" else selects).append(group)
        elif word == "constraint":
            node = c.ref()
            kind = c.match(r"(\w+)").group(1)
            source = c.json()
            key = c.match(r"key=(\w+)").group(1) if c.peek("key=") else ""
            constraints.append(ConstraintRef(node, kind, source, key))
        else:
            raise PassError(f"unknown plan line {line!r}")
    return Plan(tuple(hoists), tuple(gens), tuple(selects), tuple(constraints))
