"""Lineage graphs as text, Mermaid, Graphviz DOT and one self-contained HTML page.

The HTML page carries its data, styles and script inline (no server, no network): nodes
laid out in columns by their depth in the flow, an SVG you can pan (drag) and zoom
(wheel, or the + / - buttons), and a side panel with a node's metadata on click.

>>> from featureledger.lineage.graph import Edge, LineageGraph
>>> g = LineageGraph(["dep_1"], "upstream", [Edge("mdl_1", "dep_1", "deployed_as")])
>>> print(to_mermaid(g))
graph LR
  n0["dep_1"]
  n1["mdl_1"]
  n1 -->|deployed_as| n0
"""

from __future__ import annotations

import html
import json
from typing import Any

from featureledger.lineage.graph import LineageGraph

KIND_COLORS = {
    "source": "#8d99ae", "view": "#2a9d8f", "commit": "#457b9d", "dataset": "#e9c46a",
    "run": "#f4a261", "experiment": "#b5838d", "model": "#e76f51", "deployment": "#d62828",
    "feature_set": "#52b788", "other": "#adb5bd",
}


def _label(graph: LineageGraph, node: str) -> str:
    return str(graph.nodes.get(node, {}).get("label", node))


def _kind(graph: LineageGraph, node: str) -> str:
    from featureledger.lineage.service import kind_of

    return str(graph.nodes.get(node, {}).get("kind") or kind_of(node))


def to_text(graph: LineageGraph) -> str:
    """An indented tree from each root: upstream lines start with ``<-``, downstream ``->``.

    A node reached twice is printed once in full and then as ``(see above)``.
    """
    parents: dict[str, list[tuple[str, str]]] = {}
    children: dict[str, list[tuple[str, str]]] = {}
    for e in graph.edges:
        parents.setdefault(e.dst, []).append((e.src, e.relation))
        children.setdefault(e.src, []).append((e.dst, e.relation))
    lines: list[str] = []

    def show(node: str) -> str:
        label = _label(graph, node)
        return node if label == node else f"{node}  [{label}]"

    def tree(node: str, adj: dict[str, list[tuple[str, str]]], arrow: str, depth: int,
             seen: set[str]) -> None:
        for nxt, rel in sorted(adj.get(node, [])):
            again = nxt in seen
            lines.append(f"{'  ' * depth}{arrow} {rel}: {show(nxt)}"
                         + ("  (see above)" if again else ""))
            if not again:
                seen.add(nxt)
                tree(nxt, adj, arrow, depth + 1, seen)

    for root in graph.roots:
        lines.append(show(root))
        lines += column_lines(graph.nodes.get(root, {}).get("columns"))
        if graph.direction in ("upstream", "both", "path"):
            tree(root, parents, "<-", 1, {root})
        if graph.direction in ("downstream", "both", "path"):
            tree(root, children, "->", 1, {root})
        if graph.direction == "path":
            break
    if not graph.edges:
        lines.append("  (no lineage edges)")
    return "\n".join(lines)


def column_lines(record: dict[str, Any] | None, indent: str = "  ") -> list[str]:
    """A derived view's (or commit's) column lineage as text lines: each output column
    with the parent columns it is computed from and how.

    >>> for line in column_lines({"method": "sqlglot", "columns": {"fare2": [
    ...         {"view": "trips", "column": "fare", "kind": "transformation",
    ...          "expression": "fare * 2"}]}, "dataset": []}):
    ...     print(line)
      columns (from the SQL, sqlglot):
        fare2 <- trips.fare  (transformation: fare * 2)
    """
    if not record:
        return []
    method = record.get("method")
    if method == "unknown":
        why = record.get("reason") or ("a Python transformation's columns are not known "
                                       "unless its definition declares them (columns=)")
        return [f"{indent}columns: unknown ({why})"]
    how = {"sqlglot": "from the SQL, sqlglot", "declared": "declared by the definition"}
    lines = [f"{indent}columns ({how.get(str(method), method)}):"]
    for out, inputs in record.get("columns", {}).items():
        if not inputs:
            lines.append(f"{indent}  {out} <- (no parent column: a constant or parameter)")
        for i in inputs:
            expr = f": {i['expression']}" if i.get("expression") else ""
            lines.append(f"{indent}  {out} <- {i['view']}.{i['column']}  ({i['kind']}{expr})")
    for d in record.get("dataset", []):
        lines.append(f"{indent}  (rows) <- {d['view']}.{d['column']}  ({d['kind']})")
    return lines


def _ids(graph: LineageGraph) -> dict[str, str]:
    return {n: f"n{i}" for i, n in enumerate(graph.node_ids())}


def to_mermaid(graph: LineageGraph) -> str:
    ids = _ids(graph)
    lines = ["graph LR"]
    for n, i in ids.items():
        lines.append(f'  {i}["{_label(graph, n).replace(chr(34), "#quot;")}"]')
    for e in graph.edges:
        lines.append(f"  {ids[e.src]} -->|{e.relation}| {ids[e.dst]}")
    return "\n".join(lines)


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: LineageGraph) -> str:
    lines = ["digraph lineage {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", '
             'fontname="Helvetica"];']
    for n in graph.node_ids():
        color = KIND_COLORS.get(_kind(graph, n), KIND_COLORS["other"])
        lines.append(f"  {_dot_quote(n)} [label={_dot_quote(_label(graph, n))}, "
                     f"fillcolor={_dot_quote(color)}];")
    for e in graph.edges:
        lines.append(f"  {_dot_quote(e.src)} -> {_dot_quote(e.dst)} "
                     f"[label={_dot_quote(e.relation)}];")
    lines.append("}")
    return "\n".join(lines)


def layout(graph: LineageGraph) -> dict[str, tuple[float, float]]:
    """Positions: column = longest path from a node without parents; rows spread evenly."""
    nodes = graph.node_ids()
    children: dict[str, list[str]] = {n: [] for n in nodes}
    indegree = dict.fromkeys(nodes, 0)
    for e in graph.edges:
        children[e.src].append(e.dst)
        indegree[e.dst] += 1
    rank = dict.fromkeys(nodes, 0)
    queue = [n for n in nodes if indegree[n] == 0]
    while queue:  # Kahn's order: a node's rank is final once all its parents are placed
        n = queue.pop()
        for c in children[n]:
            rank[c] = max(rank[c], rank[n] + 1)
            indegree[c] -= 1
            if indegree[c] == 0:
                queue.append(c)
    # nodes on a cycle keep the rank their placed parents gave them
    columns: dict[int, list[str]] = {}
    for n in nodes:
        columns.setdefault(rank[n], []).append(n)
    pos = {}
    for col, members in columns.items():
        members.sort(key=lambda n: (_kind(graph, n), n))
        for row, n in enumerate(members):
            pos[n] = (40.0 + col * 260.0, 40.0 + row * 70.0)
    return pos


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>featureledger lineage: __TITLE__</title>
<style>
 html,body{margin:0;height:100%;font-family:Helvetica,Arial,sans-serif;font-size:13px}
 #wrap{display:flex;height:100%}
 #canvas{flex:1;background:#fafafa;cursor:grab;user-select:none}
 #canvas.drag{cursor:grabbing}
 #panel{width:340px;border-left:1px solid #ccc;padding:12px;overflow:auto;background:#fff}
 #panel h2{font-size:15px;margin:0 0 8px 0;word-break:break-all}
 #panel table{border-collapse:collapse;width:100%}
 #panel td{border-bottom:1px solid #eee;padding:3px;vertical-align:top;word-break:break-all}
 #panel td.k{color:#555;width:35%}
 .node rect{stroke:#333;stroke-width:1;rx:6}
 .node.sel rect{stroke:#000;stroke-width:3}
 .node text{fill:#fff;font-size:11px;pointer-events:none}
 .edge{stroke:#999;stroke-width:1.2;fill:none;marker-end:url(#arrow)}
 .elabel{fill:#777;font-size:9px}
 #bar{position:absolute;top:8px;left:8px;background:#fff;border:1px solid #ccc;padding:4px}
 #bar button{width:28px}
</style></head><body>
<div id="wrap"><svg id="canvas" xmlns="http://www.w3.org/2000/svg">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"
 markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#999"/></marker></defs>
<g id="view"></g></svg>
<div id="panel"><h2>__TITLE__</h2><p>Click a node for its metadata. Drag to pan, scroll
 to zoom.</p><div id="meta"></div></div></div>
<div id="bar"><button id="zin" title="zoom in">+</button><button id="zout"
 title="zoom out">-</button><button id="fit" title="fit the graph to the window">&#8634;</button></div>
<script id="graph-data" type="application/json">__DATA__</script>
<script>
(function(){
 var data=JSON.parse(document.getElementById('graph-data').textContent);
 var NS='http://www.w3.org/2000/svg', W=200, H=36;
 var svg=document.getElementById('canvas'), view=document.getElementById('view');
 var tx=0, ty=0, k=1, selected=null;
 function el(name, attrs, parent){var e=document.createElementNS(NS,name);
  for(var a in attrs){e.setAttribute(a,attrs[a]);} parent.appendChild(e); return e;}
 function apply(){view.setAttribute('transform','translate('+tx+','+ty+') scale('+k+')');}
 data.edges.forEach(function(e){var a=data.pos[e.src], b=data.pos[e.dst]; if(!a||!b)return;
  var x1=a[0]+W, y1=a[1]+H/2, x2=b[0], y2=b[1]+H/2, mx=(x1+x2)/2;
  el('path',{'class':'edge',d:'M'+x1+','+y1+' C'+mx+','+y1+' '+mx+','+y2+' '+x2+','+y2},view);
  var t=el('text',{'class':'elabel',x:mx,y:(y1+y2)/2-3,'text-anchor':'middle'},view);
  t.textContent=e.relation;});
 Object.keys(data.pos).forEach(function(id){var p=data.pos[id], n=data.nodes[id]||{id:id};
  var g=el('g',{'class':'node','data-id':id,transform:'translate('+p[0]+','+p[1]+')'},view);
  el('rect',{width:W,height:H,fill:data.colors[n.kind]||data.colors.other},g);
  var t=el('text',{x:8,y:15},g); t.textContent=(n.label||id).slice(0,32);
  var s=el('text',{x:8,y:29},g); s.textContent=(n.kind||'')+(n.status?' · '+n.status:'');
  g.addEventListener('click',function(ev){ev.stopPropagation(); show(id, g);});});
 function show(id, g){ if(selected){selected.classList.remove('sel');} selected=g;
  g.classList.add('sel'); var n=data.nodes[id]||{id:id}, rows='';
  Object.keys(n).forEach(function(key){var v=n[key]; if(v===null||v===undefined)return;
   if(typeof v==='object'){v=JSON.stringify(v);} rows+='<tr><td class="k">'+esc(key)+
   '</td><td>'+esc(String(v))+'</td></tr>';});
  var ins=data.edges.filter(function(e){return e.dst===id;}).map(function(e){
   return esc(e.relation)+' &larr; '+esc(e.src);});
  var outs=data.edges.filter(function(e){return e.src===id;}).map(function(e){
   return esc(e.relation)+' &rarr; '+esc(e.dst);});
  document.getElementById('meta').innerHTML='<h2>'+esc(n.label||id)+'</h2><table>'+rows+
   '</table><p><b>in</b><br>'+(ins.join('<br>')||'-')+'</p><p><b>out</b><br>'+
   (outs.join('<br>')||'-')+'</p>';}
 function esc(s){return s.replace(/[&<>"']/g,function(c){return {'&':'&amp;','<':'&lt;',
  '>':'&gt;','"':'&quot;',"'":'&#39;'}[c];});}
 var drag=null;
 svg.addEventListener('mousedown',function(e){drag=[e.clientX-tx,e.clientY-ty];
  svg.classList.add('drag');});
 window.addEventListener('mousemove',function(e){if(!drag)return; tx=e.clientX-drag[0];
  ty=e.clientY-drag[1]; apply();});
 window.addEventListener('mouseup',function(){drag=null; svg.classList.remove('drag');});
 function zoom(f, cx, cy){var nk=Math.min(5,Math.max(0.1,k*f)); tx=cx-(cx-tx)*nk/k;
  ty=cy-(cy-ty)*nk/k; k=nk; apply();}
 svg.addEventListener('wheel',function(e){e.preventDefault(); var r=svg.getBoundingClientRect();
  zoom(e.deltaY<0?1.15:1/1.15, e.clientX-r.left, e.clientY-r.top);},{passive:false});
 document.getElementById('zin').onclick=function(){zoom(1.25,200,200);};
 document.getElementById('zout').onclick=function(){zoom(0.8,200,200);};
 function fit(){var ids=Object.keys(data.pos); if(!ids.length){apply(); return;}
  var xs=ids.map(function(i){return data.pos[i][0];}), ys=ids.map(function(i){return data.pos[i][1];});
  var x0=Math.min.apply(null,xs)-20, x1=Math.max.apply(null,xs)+W+20;
  var y0=Math.min.apply(null,ys)-20, y1=Math.max.apply(null,ys)+H+20;
  var r=svg.getBoundingClientRect();
  k=Math.max(0.1,Math.min(1.5,r.width/(x1-x0),r.height/(y1-y0)));
  tx=(r.width-(x1-x0)*k)/2-x0*k; ty=Math.max(0,(r.height-(y1-y0)*k)/2)-y0*k; apply();}
 document.getElementById('fit').onclick=fit;
 fit();
 var first=data.roots[0], g=view.querySelector('[data-id="'+first+'"]'); if(g){show(first,g);}
})();
</script></body></html>
"""


def to_html(graph: LineageGraph, title: str | None = None) -> str:
    """One self-contained interactive HTML page (inline SVG, CSS and script)."""
    pos = layout(graph)
    data = {"roots": graph.roots, "nodes": {n: graph.nodes.get(n, {"id": n, "kind":
                                                                   _kind(graph, n)})
                                            for n in graph.node_ids()},
            "edges": [e.to_dict() for e in graph.edges], "pos": pos, "colors": KIND_COLORS}
    # '</' inside the JSON would end the script element early
    payload = json.dumps(data, default=str).replace("</", "<\\/")
    return (_PAGE.replace("__TITLE__", html.escape(title or ", ".join(graph.roots)))
            .replace("__DATA__", payload))


def render(graph: LineageGraph, fmt: str) -> str:
    """``text``, ``mermaid``, ``dot``, ``html`` or ``json``."""
    from featureledger.errors import TrackingError

    renderers: dict[str, Any] = {"text": to_text, "mermaid": to_mermaid, "dot": to_dot,
                                 "html": to_html,
                                 "json": lambda g: json.dumps(g.to_dict(), default=str,
                                                              indent=2)}
    if fmt not in renderers:
        raise TrackingError(f"lineage format {fmt!r} is not supported; use one of "
                            f"{', '.join(renderers)}")
    return str(renderers[fmt](graph))
