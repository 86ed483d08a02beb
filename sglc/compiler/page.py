"""The visualizer's HTML page: one SVG per view (trace, after each pass), a selector, a legend and an
attribute panel. Everything is inline: the file opens offline."""
from __future__ import annotations

import html

from passes import format_graph

from .viz import EDGE_STYLE, STYLE, View, _label, lane_titles, render_svg

_CSS = """
body{font-family:system-ui,sans-serif;margin:0;display:flex;height:100vh}
#main{flex:1;overflow:auto;padding:8px}#side{width:380px;border-left:1px solid #ccc;padding:10px;overflow:auto;
background:#fcfcfc}.view{display:none}.view.active{display:block}g.node{cursor:pointer}
g.node.selected>*:first-child{stroke:#d50000;stroke-width:3}pre{white-space:pre-wrap;font-size:11px;
background:#f4f4f4;padding:6px}#views button{margin:2px}#views button.active{background:#1565c0;color:#fff}
.legend span{display:inline-block;margin:2px 6px 2px 0;padding:1px 6px;border:1px solid #999;border-radius:3px;
font-size:11px}h1{font-size:16px;margin:4px 0}h2{font-size:14px}
"""

_JS = """
function show(i){document.querySelectorAll('.view').forEach((v,j)=>v.classList.toggle('active',i===j));
document.querySelectorAll('#views button').forEach((b,j)=>b.classList.toggle('active',i===j));}
function pick(g){document.querySelectorAll('g.node.selected').forEach(n=>n.classList.remove('selected'));
g.classList.add('selected');const d=JSON.parse(g.getAttribute('data-info'));
let h='<h2>%'+d.id+' '+d.kind+' @'+d.stream+'</h2>';if(d.loc)h+='<div>source: '+esc(d.loc)+'</div>';
h+='<table>';for(const k in d.attrs){h+='<tr><td><b>'+esc(k)+'</b></td><td><code>'+esc(JSON.stringify(d.attrs[k]))
+'</code></td></tr>';}h+='</table>';if(d.plan.length)h+='<h3>plan</h3><ul>'+d.plan.map(p=>'<li>'+esc(p)+'</li>')
.join('')+'</ul>';document.getElementById('attrs').innerHTML=h;}
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));}
document.addEventListener('click',e=>{const g=e.target.closest('g.node');if(g)pick(g);});
document.addEventListener('keydown',e=>{if(e.key==='Enter'&&e.target.closest)
{const g=e.target.closest('g.node');if(g)pick(g);}});show(VIEWS-1);
"""


def render_html(views: list[View], title: str = "") -> str:
    """The whole page; the last view (the fully optimized graph) is shown first."""
    name = title or (views[-1].graph.name if views else "program")
    buttons = "".join(f'<button onclick="show({i})">{html.escape(v.title)}</button>' for i, v in enumerate(views))
    sections = []
    for i, v in enumerate(views):
        sections.append(f'<section class="view" id="view-{i}" data-title="{html.escape(v.title)}">'
                        f'<h1>{html.escape(name)} — {html.escape(v.title)} ({len(v.graph)} nodes)</h1>'
                        f'{render_svg(v.graph)}<details><summary>IR text</summary>'
                        f'<pre>{html.escape(format_graph(v.graph))}</pre></details></section>')
    legend = "".join(f'<span style="background:{fill};border-color:{stroke}">{kind} ({shape})</span>'
                     for kind, (shape, fill, stroke) in STYLE.items())
    legend += "".join(f'<span style="border-color:{c};color:{c}">{k} edge</span>' for k, (c, _) in EDGE_STYLE.items())
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>sglc viz: {html.escape(name)}</title>'
            f'<style>{_CSS}</style></head><body><div id="main"><div id="views">{buttons}</div>'
            f'{"".join(sections)}</div><div id="side"><div class="legend">{legend}</div>'
            '<p>Click a node to see its attributes. A red dot marks nodes the plan acts on '
            '(hoisted prefix, batched call, compiled constraint).</p><div id="attrs"></div></div>'
            f'<script>const VIEWS={len(views)};{_JS}</script></body></html>\n')


def render_dot(graph) -> str:
    """Graphviz DOT: one cluster per stream (a switch case's cluster says its value), shapes and colors by
    kind, edges styled by kind."""
    shapes = {"rect": "box", "rounded": "box", "parallelogram": "parallelogram", "diamond": "diamond",
              "triangle": "triangle", "invtriangle": "invtriangle", "hexagon": "hexagon", "circle": "circle",
              "ellipse": "ellipse", "octagon": "octagon", "house": "house"}
    lines = [f'digraph "{graph.name}" {{', "  rankdir=TB; node [fontsize=10, style=filled];"]
    titles = lane_titles(graph)
    for sid, ids in graph.streams().items():
        if not ids:
            continue
        title = titles[sid].replace("\\", "\\\\").replace('"', '\\"')
        color = "#ff8a65" if titles[sid] != sid else "#b0bec5"
        lines.append(f'  subgraph "cluster_{sid}" {{ label="{title}"; color="{color}";')
        for nid in ids:
            node = graph.node(nid)
            shape, fill, stroke = STYLE.get(node.kind, ("rect", "#fff", "#000"))
            label = f"%{nid} {_label(node)}".replace("\\", "\\\\").replace('"', '\\"')
            rounded = ', style="filled,rounded"' if shape == "rounded" else ""
            lines.append(f'    n{nid} [label="{label}", shape={shapes[shape]}, fillcolor="{fill}", '
                         f'color="{stroke}"{rounded}];')
        lines.append("  }")
    for src, dst, kind in graph.edges():
        color = EDGE_STYLE[kind][0]
        style = {"stream": "solid", "fork": "dashed", "join": "dashed", "data": "dotted", "case": "bold"}[kind]
        lines.append(f'  n{src} -> n{dst} [color="{color}", style={style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"
