"""The lineage page in a real browser: headless Chromium loads it from a file, with no
server and no network, runs its script, and renders every node and the first root's
metadata."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from featureledger.lineage.graph import lineage
from featureledger.lineage.render import to_html
from featureledger.registry import Registry
from featureledger.registry.lineage_edges import record_edges

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=3000",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    msg = "Chromium is not installed; install it (apt-get install chromium) to run this test"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.mark.e2e
def test_page_renders_in_chromium_without_network(tmp_path) -> None:
    browser = chromium()
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}")
    edges = [("source:file:///data/trips.parquet", "view:trips@1", "feeds"),
             ("view:trips@1", "cmt_a", "has_commit"), ("cmt_a", "ds_1", "read"),
             ("ds_1", "mdl_1", "trained_on"), ("mdl_1", "dep_1", "deployed_as")]
    with reg.db.write() as conn:
        record_edges(conn, edges)
    with reg.db.read() as conn:
        graph = lineage(conn, "dep_1", "upstream")
    reg.close()
    page = tmp_path / "lineage.html"
    page.write_text(to_html(graph, title="lineage of dep_1"))
    out = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    dom = out.stdout
    assert "</svg>" in dom, out.stderr[-2000:]
    # the script drew one group per node and one path per edge
    drawn = set(re.findall(r'<g class="node[^"]*" data-id="([^"]+)"', dom))
    assert drawn == {"source:file:///data/trips.parquet", "view:trips@1", "cmt_a", "ds_1",
                     "mdl_1", "dep_1"}
    assert len(re.findall(r'<path class="edge"', dom)) == len(edges)
    # the first root is selected and its metadata and incoming edge are shown in the panel
    assert re.search(r'<g class="node sel" data-id="dep_1"', dom)
    meta = dom[dom.index('id="meta"'):]
    assert "deployed_as ← mdl_1" in meta
    # the view was fitted: a finite transform, not the identity
    transform = re.search(r'<g id="view" transform="translate\(([-\d.e]+),([-\d.e]+)\) '
                          r'scale\(([-\d.e]+)\)"', dom)
    assert transform and 0.1 <= float(transform.group(3)) <= 1.5
