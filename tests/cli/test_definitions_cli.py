"""The definition commands, run as a user would: a real process, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli as fl


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    fl("init", "demo", cwd=root)
    return root / "demo"


@pytest.mark.e2e
def test_init_plan_apply_twice_then_unchanged(repo: Path) -> None:
    assert (repo / "data" / "driver_stats.parquet").exists()
    first = json.loads(fl("--repo", str(repo), "plan", "--json", cwd=repo.parent).stdout)
    assert {(i["name"], i["action"]) for i in first["items"]} == {
        ("driver", "new"), ("customer", "new"), ("driver_stats", "new"),
        ("customer_profile", "new"), ("ride_model_features", "new")}
    applied = json.loads(fl("apply", "--json", cwd=repo).stdout)
    assert applied["applied"] is True
    again = json.loads(fl("apply", "--json", cwd=repo).stdout)
    assert {i["action"] for i in again["items"]} == {"unchanged"}
    text = fl("plan", cwd=repo).stdout
    assert "Everything is unchanged." in text


@pytest.mark.e2e
def test_change_is_classified_refused_and_overridden(repo: Path) -> None:
    fl("apply", cwd=repo)
    src = repo / "drivers.py"
    original = src.read_text()
    try:
        # widen a range (loosened: allowed under backward) and add a nullable field
        src.write_text(original.replace(
            'Field(name="avg_daily_trips", dtype="int64", min=0,',
            'Field(name="avg_daily_trips", dtype="int64", min=0, max=500,',
        ).replace(
            '        Field(name="vehicle_type", dtype="string",',
            '        Field(name="seats", dtype="int32"),\n'
            '        Field(name="vehicle_type", dtype="string",',
        ))
        proc = fl("plan", "--json", cwd=repo, code=None)
        plan = json.loads(proc.stdout)
        item = next(i for i in plan["items"] if i["name"] == "driver_stats")
        assert item["action"] == "new_version" and item["to_version"] == 2
        assert sorted(c["change"] for c in item["changes"]) == [
            "field_added_nullable", "range_tightened"]
        # range_tightened (max set) is refused under backward: exit 4 from plan, 2 from apply
        assert proc.returncode == 4
        assert "break compatibility mode 'backward'" in fl("plan", cwd=repo, code=None).stdout
        refused = fl("apply", cwd=repo, code=None)
        assert refused.returncode == 2
        assert "avg_daily_trips" in refused.stderr and "range_tightened" in refused.stderr
        assert "Traceback" not in refused.stderr
        fl("apply", "--allow-breaking", "capped by product spec", cwd=repo)
        versions = json.loads(fl("versions", "driver_stats", "--json", cwd=repo).stdout)
        assert [v["version"] for v in versions] == [1, 2]
        assert versions[1]["breaking_reason"] == "capped by product spec"
        diff = json.loads(fl("versions", "driver_stats", "--diff", "1..2", "--json",
                             cwd=repo).stdout)
        assert {(d["change"], d["field"]) for d in diff} == {
            ("field_added_nullable", "seats"), ("range_tightened", "avg_daily_trips")}
        shown = json.loads(fl("show", "driver_stats@1", "--json", cwd=repo).stdout)
        assert "seats" not in [f["name"] for f in shown["definition"]["fields"]]
        listed = json.loads(fl("list", "feature_view", "--json", cwd=repo).stdout)
        assert {(r["name"], r["version"]) for r in listed} == {
            ("driver_stats", 2), ("customer_profile", 1)}
    finally:
        src.write_text(original)


@pytest.mark.e2e
def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "featureledger.yaml").write_text("projekt: x\n")
    proc = fl("plan", cwd=tmp_path, code=None)
    assert proc.returncode == 2
    assert "projekt" in proc.stderr and "Extra inputs are not permitted" in proc.stderr
    assert "Traceback" not in proc.stderr
    (tmp_path / "featureledger.yaml").write_text("project: x\n")
    (tmp_path / "broken.py").write_text("from featureledger import Field\nx = Field(name='a', dtype='nope')\n")
    proc = fl("plan", cwd=tmp_path, code=None)
    assert proc.returncode == 2 and "broken.py" in proc.stderr and "unknown dtype" in proc.stderr
    debug = fl("--debug", "plan", cwd=tmp_path, code=None)
    assert "Traceback" in debug.stderr
