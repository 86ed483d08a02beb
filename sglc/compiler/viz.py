"""The IR visualizer: one self-contained HTML file (inline SVG, CSS and JS; no network), or DOT.

Layout: one lane (column) per stream, one row per longest-path depth, so stream order reads top to
bottom, forks fan out to the right and sibling branches sit side by side. A switch's cases are lanes too
(tinted, labeled with their value): exactly one of them runs, continuing the switch's lane. Node kinds
differ by shape and color; edges by kind (stream solid, fork/join dashed, data dotted, case dashed
orange). Clicking a node shows its attributes; a selector switches between the graph after tracing and
after each pass.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

import ir
from passes import get_plan

# kind -> (shape, fill, stroke)
STYLE: dict[str, tuple[str, str, str]] = {
    "text": ("rect", "#eceff1", "#607d8b"),
    "argument": ("parallelogram", "#fff3c4", "#c49000"),
    "gen": ("rounded", "#c8f7c5", "#2e7d32"),
    "select": ("diamond", "#ffe0b2", "#e65100"),
    "fork": ("triangle", "#e1bee7", "#6a1b9a"),
    "get_fork_item": ("circle", "#f3e5f5", "#6a1b9a"),
    "join": ("invtriangle", "#e1bee7", "#6a1b9a"),
    "role_begin": ("hexagon", "#bbdefb", "#1565c0"),
    "role_end": ("hexagon", "#e3f2fd", "#1565c0"),
    "image": ("rect", "#f8bbd0", "#ad1457"),
    "var_ref": ("ellipse", "#b2dfdb", "#00695c"),
    "switch": ("octagon", "#ffccbc", "#bf360c"),
    "case": ("house", "#fff3e0", "#bf360c"),
}
EDGE_STYLE = {"stream": ("#90a4ae", ""), "fork": ("#8e24aa", "6,4"), "join": ("#8e24aa", "6,4"),
              "data": ("#00897b", "2,4"), "case": ("#e64a19", "8,3")}
LANE_W, ROW_H, NODE_W, NODE_H, MARGIN = 190, 46, 150, 30, 30


@dataclass
class View:
    """One graph to draw: its title (``trace`` or ``after <pass>``) and the graph."""

    title: str
    graph: ir.Graph


def node_info(graph: ir.Graph, nid: int) -> dict[str, Any]:
    """What the side panel shows for one node (JSON-ready)."""
    node = graph.node(nid)
    plan = get_plan(graph)
    notes = [f"hoist ({h.kind}): warm stream text + {h.text!r} for {h.fanout} requests"
             for h in plan.hoists if h.at == nid]
    notes += [f"batched gen with {[f'%{m}' for m in g]}" for g in plan.gen_batches if nid in g]
    notes += [f"batched select with {[f'%{m}' for m in g]}" for g in plan.select_batches if nid in g]
    notes += [f"constraint {c.kind} compiled ahead ({c.states} states, key {c.key[:16] or 'none'})"
              for c in plan.constraints if c.node == nid]
    if isinstance(node, ir.Switch):
        lanes = {graph.node(h).value: graph.node(h).stream for h in graph.succs(nid, "case")}  # type: ignore[attr-defined]
        notes.append("runs exactly one case, the one select %{} chose: {}".format(
            node.source, ", ".join(f"{v!r} → lane {lanes.get(v, '?')}" for v in node.cases)))
    attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in node.attrs().items()}
    return {"id": nid, "kind": node.kind, "stream": node.stream, "loc": node.loc, "attrs": attrs, "plan": notes}


def _label(node: ir.Node) -> str:
    a = node.attrs()
    detail = {"text": lambda: json.dumps(a["text"])[1:-1], "argument": lambda: "$" + a["name"],
              "gen": lambda: a["name"], "select": lambda: a["name"], "fork": lambda: f"n={a['n']}",
              "get_fork_item": lambda: f"[{a['index']}]", "join": lambda: a["mode"].split("_")[0],
              "role_begin": lambda: a["role"], "role_end": lambda: "/" + a["role"], "image": lambda: a["path"],
              "var_ref": lambda: a["name"], "switch": lambda: a["name"],
              "case": lambda: json.dumps(a["value"])}.get(node.kind, lambda: "")()
    text = f"{node.kind} {detail}" if node.kind not in ("text", "get_fork_item") else detail or node.kind
    return text if len(text) <= 22 else text[:21] + "…"


def lane_titles(graph: ir.Graph) -> dict[str, str]:
    """Per non-empty stream, its lane's title: the stream name, plus the case value for a switch case."""
    out = {}
    for sid, ids in graph.streams().items():
        if not ids:
            continue
        head = graph.node(ids[0])
        out[sid] = f'{sid} · case {json.dumps(head.value, ensure_ascii=False)}' if isinstance(head, ir.Case) else sid
    return out


def ranks(graph: ir.Graph) -> dict[int, int]:
    """Row of each node: its longest-path depth, so sibling branches line up side by side.

    NOTE: collision-free per lane: a stream edge always goes one rank down at least.
    """
    rank: dict[int, int] = {}
    for nid in graph.order():
        rank[nid] = max((rank[p] + 1 for p in graph.g.predecessors(nid)), default=0)
    return rank


def layout(graph: ir.Graph) -> dict[int, tuple[float, float]]:
    """Center of each node: x by stream lane, y by rank (longest-path depth)."""
    lanes = {sid: i for i, sid in enumerate(s for s, ids in graph.streams().items() if ids)}
    return {nid: (MARGIN + lanes[graph.node(nid).stream] * LANE_W + NODE_W / 2, MARGIN + row * ROW_H + NODE_H / 2)
            for nid, row in ranks(graph).items()}


def _shape(kind: str, x: float, y: float, extra: str) -> str:
    shape, fill, stroke = STYLE.get(kind, ("rect", "#fff", "#000"))
    w, h = NODE_W / 2, NODE_H / 2
    style = f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"{extra}'
    pts = {"parallelogram": [(-w + 10, -h), (w, -h), (w - 10, h), (-w, h)],
           "diamond": [(0, -h - 4), (w, 0), (0, h + 4), (-w, 0)],
           "triangle": [(-w, -h), (w, -h), (0, h)], "invtriangle": [(0, -h), (w, h), (-w, h)],
           "octagon": [(-w + 8, -h), (w - 8, -h), (w, -h + 8), (w, h - 8), (w - 8, h), (-w + 8, h), (-w, h - 8),
                       (-w, -h + 8)],
           "house": [(0, -h - 4), (w, -h + 6), (w, h), (-w, h), (-w, -h + 6)],
           "hexagon": [(-w + 10, -h), (w - 10, -h), (w, 0), (w - 10, h), (-w + 10, h), (-w, 0)]}
    if shape in pts:
        return f'<polygon points="{" ".join(f"{x + dx:.1f},{y + dy:.1f}" for dx, dy in pts[shape])}" {style}/>'
    if shape == "ellipse":
        return f'<ellipse cx="{x}" cy="{y}" rx="{w}" ry="{h}" {style}/>'
    if shape == "circle":
        return f'<circle cx="{x}" cy="{y}" r="{h}" {style}/>'
    rx = ' rx="10"' if shape == "rounded" else ""
    return f'<rect x="{x - w}" y="{y - h}" width="{NODE_W}" height="{NODE_H}"{rx} {style}/>'


def render_svg(graph: ir.Graph) -> str:
    """The graph as an SVG element: one ``<g class="node">`` per IR node, lanes labeled by stream."""
    pos = layout(graph)
    streams = [s for s, ids in graph.streams().items() if ids]
    width = MARGIN * 2 + max(1, len(streams)) * LANE_W
    height = MARGIN * 2 + (max(pos.values(), key=lambda p: p[1])[1] if pos else 0) + ROW_H
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" class="irgraph" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">'),
           ('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#78909c"/></marker></defs>')]
    titles = lane_titles(graph)
    for i, sid in enumerate(streams):
        x = MARGIN + i * LANE_W - 15
        case = titles[sid] != sid
        fill = "#fff8f0" if case else ("#fafafa" if i % 2 else "#f5f7fa")
        title = titles[sid] if len(titles[sid]) <= 26 else titles[sid][:25] + "…"
        border = ' stroke="#ffab91" stroke-dasharray="6,3"' if case else ""
        out.append(f'<rect class="lane{" lane-case" if case else ""}" x="{x}" y="4" width="{LANE_W - 10}" '
                   f'height="{height - 8}" rx="8" fill="{fill}"{border}/>'
                   f'<text class="lane-label" x="{x + 8}" y="20" font-size="12" '
                   f'fill="{"#bf360c" if case else "#546e7a"}">{html.escape(title)}</text>')
    for src, dst, kind in graph.edges():
        (x1, y1), (x2, y2) = pos[src], pos[dst]
        color, dash = EDGE_STYLE[kind]
        mid = (y1 + y2) / 2
        path = f"M {x1} {y1 + NODE_H / 2} C {x1} {mid}, {x2} {mid}, {x2} {y2 - NODE_H / 2}"
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<path class="edge edge-{kind}" d="{path}" fill="none" stroke="{color}" stroke-width="1.4"'
                   f'{dash_attr} marker-end="url(#arrow)"/>')
    plan = get_plan(graph)
    marked = {h.at for h in plan.hoists} | {m for g in plan.gen_batches + plan.select_batches for m in g}
    marked |= {c.node for c in plan.constraints}
    for nid, node in graph.items():
        x, y = pos[nid]
        info = html.escape(json.dumps(node_info(graph, nid), ensure_ascii=False), quote=True)
        extra = ' stroke-dasharray="4,2"' if nid in marked else ""
        out.append(f'<g class="node kind-{node.kind}" data-id="{nid}" data-info="{info}" tabindex="0">'
                   f'<title>%{nid} {node.kind}</title>{_shape(node.kind, x, y, extra)}'
                   f'<text x="{x}" y="{y + 4}" text-anchor="middle" font-size="11">%{nid} '
                   f'{html.escape(_label(node))}</text>'
                   + (f'<circle class="plan-badge" cx="{x + NODE_W / 2 - 4}" cy="{y - NODE_H / 2 + 4}" r="5" '
                      'fill="#ff1744"/>' if nid in marked else "") + "</g>")
    out.append("</svg>")
    return "\n".join(out)
