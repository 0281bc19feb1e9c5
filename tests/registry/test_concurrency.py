"""Concurrent apply from 4 processes: unique, consecutive versions; no lost writes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from featureledger.registry import Registry

WORKERS = 4

CHILD = """
import json, os, sys, time
from featureledger.model.definitions import Entity, FeatureView, Field
from featureledger.registry import Registry

url, n_fields, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
reg = Registry(url)
view = FeatureView(name="v", entities=["e"],
                   fields=[Field(name=f"f{i}", dtype="int64") for i in range(n_fields)])
entity = Entity(name="e", join_keys={"k": "int64"})
while not os.path.exists(go):  # start line: every process applies at the same moment
    time.sleep(0.001)
plan = reg.definitions.apply([entity, view])
print(json.dumps([n_fields, plan.items[1].action, plan.items[1].to_version]))
"""


def _run(url: str, field_counts: list[int], tmp_path) -> list[tuple[int, str, int]]:
    Registry(url).close()  # migrate once, so the race is on apply itself
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, url, str(n), str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in field_counts
    ]
    time.sleep(1.5)  # let every child import and connect
    go.write_text("go")
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(tuple(json.loads(out)))
    return results


@pytest.mark.slow
def test_same_change_from_four_processes_makes_one_version(registry_url, tmp_path) -> None:
    results = _run(registry_url, [3] * WORKERS, tmp_path)
    reg = Registry(registry_url)
    versions = reg.definitions.versions("feature_view", "v")
    assert [v.version for v in versions] == [1]
    assert sorted(a for _, a, _ in results) == ["new"] + ["unchanged"] * (WORKERS - 1)
    assert {v for _, _, v in results} == {1}
    reg.close()


@pytest.mark.slow
def test_different_changes_get_consecutive_versions(registry_url, tmp_path) -> None:
    # each process adds nullable fields: all compatible, all must land
    counts = [1, 2, 3, 4]
    results = _run(registry_url, counts, tmp_path)
    reg = Registry(registry_url)
    versions = reg.definitions.versions("feature_view", "v")
    assert [v.version for v in versions] == list(range(1, WORKERS + 1))
    # each process's definition landed exactly once, under the version it reported
    by_fields = {len(v.definition.fields): v.version for v in versions}
    assert sorted(by_fields) == counts
    for n, action, version in results:
        assert by_fields[n] == version
        assert action in ("new", "new_version")
    reg.close()
