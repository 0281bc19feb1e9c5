"""Recursive-CTE lineage queries against a brute-force oracle, on SQLite and PostgreSQL."""

from __future__ import annotations

import random

import pytest

from featureledger.lineage.graph import lineage, path, reachable, walk
from featureledger.lineage.render import layout, to_dot, to_html, to_mermaid, to_text
from featureledger.registry import Registry
from featureledger.registry.lineage_edges import record_edges


def oracle_reach(edges, seeds, direction, max_depth=None):
    """Nodes reachable from seeds, by plain breadth-first search."""
    adj: dict[str, list[str]] = {}
    for s, d, _ in edges:
        a, b = (d, s) if direction == "upstream" else (s, d)
        adj.setdefault(a, []).append(b)
    seen = {s: 0 for s in seeds}
    frontier = list(seeds)
    while frontier:
        nxt = []
        for n in frontier:
            if max_depth is not None and seen[n] >= max_depth:
                continue
            for m in adj.get(n, []):
                if m not in seen:
                    seen[m] = seen[n] + 1
                    nxt.append(m)
        frontier = nxt
    return set(seen)


def oracle_edges(edges, seeds, direction, max_depth=None):
    nodes = oracle_reach(edges, seeds, direction, max_depth)
    if direction == "upstream":
        return {e for e in edges if e[1] in nodes and e[0] in nodes}
    return {e for e in edges if e[0] in nodes and e[1] in nodes}


def random_graph(rng, n_nodes, n_edges, cyclic):
    kinds = ["source:", "view:v@", "cmt_", "ds_", "run_", "mdl_", "dep_"]
    nodes = [f"{kinds[i % len(kinds)]}{i}" for i in range(n_nodes)]
    edges = set()
    while len(edges) < n_edges:
        a, b = rng.sample(range(n_nodes), 2)
        if not cyclic and a > b:
            a, b = b, a
        edges.add((nodes[a], nodes[b], rng.choice(["read", "feeds", "produced"])))
    return nodes, sorted(edges)


@pytest.fixture
def registry(registry_url):
    reg = Registry(registry_url)
    yield reg
    reg.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_walks_match_breadth_first_oracle(registry, seed):
    rng = random.Random(seed)
    nodes, edges = random_graph(rng, 60, 150, cyclic=seed == 3)
    with registry.db.write() as conn:
        record_edges(conn, edges)
    with registry.db.read() as conn:
        for node in rng.sample(nodes, 8):
            for direction in ("upstream", "downstream"):
                got = {(e.src, e.dst, e.relation) for e in walk(conn, [node], direction)}
                assert got == oracle_edges(edges, [node], direction), (node, direction)
                assert set(reachable(conn, [node], direction)) == oracle_reach(
                    edges, [node], direction)
                for depth in (1, 2):
                    got = {(e.src, e.dst, e.relation)
                           for e in walk(conn, [node], direction, max_depth=depth)}
                    assert got == oracle_edges(edges, [node], direction, depth)
        two = rng.sample(nodes, 2)
        assert set(reachable(conn, two, "downstream")) == oracle_reach(edges, two, "downstream")
        assert set(reachable(conn, two, "downstream", like="ds_%")) == {
            n for n in oracle_reach(edges, two, "downstream") if n.startswith("ds_")}


def test_path_is_every_edge_between_two_nodes(registry):
    edges = [("a", "b", "r"), ("b", "d", "r"), ("a", "c", "r"), ("c", "d", "r"),
             ("d", "e", "r"), ("x", "b", "r"), ("c", "y", "r")]
    with registry.db.write() as conn:
        record_edges(conn, edges)
    with registry.db.read() as conn:
        g = path(conn, "a", "d")
        assert {(e.src, e.dst) for e in g.edges} == {("a", "b"), ("b", "d"), ("a", "c"),
                                                      ("c", "d")}
        back = path(conn, "e", "c")  # given the other way round
        assert {(e.src, e.dst) for e in back.edges} == {("c", "d"), ("d", "e")}
        assert back.roots == ["c", "e"]
        assert path(conn, "x", "y").edges == []
        both = lineage(conn, "b", "both")
        assert {(e.src, e.dst) for e in both.edges} == {("a", "b"), ("x", "b"), ("b", "d"),
                                                         ("d", "e")}


def test_renderers_cover_every_node_and_edge(registry):
    edges = [("source:s3://b/k", "view:v@1", "feeds"), ("view:v@1", "cmt_1", "has_commit"),
             ("cmt_1", "ds_1", "read"), ("ds_1", "mdl_1", "trained_on"),
             ("mdl_1", "dep_1", "deployed_as")]
    with registry.db.write() as conn:
        record_edges(conn, edges)
    with registry.db.read() as conn:
        g = lineage(conn, "dep_1", "upstream")
    text = to_text(g)
    assert text.splitlines()[0] == "dep_1"
    assert "      <- read: cmt_1" in text and "          <- feeds: source:s3://b/k" in text
    mer = to_mermaid(g)
    assert mer.count("-->") == 5 and '["source:s3://b/k"]' in mer
    dot = to_dot(g)
    assert dot.startswith("digraph") and '"cmt_1" -> "ds_1" [label="read"]' in dot
    pos = layout(g)
    assert [pos[n][0] for n in ("source:s3://b/k", "view:v@1", "cmt_1", "ds_1", "mdl_1",
                                "dep_1")] == [40.0 + 260.0 * i for i in range(6)]
    page = to_html(g, title="dep_1 </script>")
    # self-contained: no external resources, data inline, script cannot be closed early
    for needle in ("<link", " src=", "@import", "https://", "url(http"):
        assert needle not in page
    assert page.count("</script>") == 2
    assert '"ds_1"' in page and "addEventListener('wheel'" in page
    assert "dep_1 &lt;/script&gt;" in page
