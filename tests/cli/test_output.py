"""What the commands print, in real processes at COLUMNS=80: every line fits, every id is
either whole or shortened to its prefix and random end (never broken across lines), the
short ids are those of real objects, ``--full-ids`` and ``--json`` give them whole, JSON
times are ISO 8601, ``show`` and diffs speak in values."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import run_cli

pytestmark = pytest.mark.e2e

PREFIXES = "cmt|ds|run|mdl|dep|exp|seg"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
WHOLE = re.compile(rf"\b(?:{PREFIXES})_{UUID}")
SHORT = re.compile(rf"\b(?:{PREFIXES})_…([0-9a-f]{{8}})(?![0-9a-f])")
ANY_ID = re.compile(rf"\b(?:{PREFIXES})_[0-9a-f…]")


def fl(*args: str, cwd: Path, columns: int = 80, code: int | None = 0
       ) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns), "FEATURELEDGER_USER": "tester"}
    env.pop("FEATURELEDGER_REPO", None)
    env.pop("FEATURELEDGER_FULL_IDS", None)
    proc = subprocess.run([sys.executable, "-m", "featureledger", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, encoding="utf-8")
    if code is not None and proc.returncode != code:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> dict[str, Any]:
    """A demo repository with commits, a run that read a training set and logged a model,
    and a deployment; the ids of what was made."""
    root = tmp_path_factory.mktemp("output")
    run_cli("init", "demo", cwd=root)
    path = root / "demo"
    run_cli("apply", cwd=path)
    run_cli("ingest", "driver_stats", "data/driver_stats.parquet", cwd=path)
    run_cli("ingest", "customer_profile", "data/customer_profile.parquet", cwd=path)
    script = """
import json, sys
import pyarrow.parquet as pq
from featureledger import FeatureStore
repo = sys.argv[1]
with FeatureStore(repo) as store:
    rows = pq.read_table(f"{repo}/data/entity_rows.parquet").slice(0, 200)
    with store.start_run(experiment="ride-completion", params={"lr": 0.5}) as run:
        ds = store.get_historical_features(rows, feature_set="ride_model_features")
        run.log_metrics({"auc": 0.75})
        (p := __import__("pathlib").Path(repo, "model.json")).write_text("{}")
        model = run.log_model("ride_completion", str(p), training_dataset=ds)
    dep = store.deploy(model.model_id, "production")
    print(json.dumps({"run": run.run_id, "dataset": ds.id, "model": model.model_id,
                      "deployment": dep.deployment_id}))
"""
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                         text=True, check=True, env={**os.environ, "FEATURELEDGER_USER":
                                                     "tester"})
    made = json.loads(out.stdout.strip().splitlines()[-1])
    run_cli("materialize-incremental", cwd=path)
    commits = json.loads(run_cli("commits", "--json", cwd=path).stdout)
    made["commits"] = [c["commit_id"] for c in commits]
    made["path"] = path
    return made


def _ids_ok(text: str, known: set[str]) -> None:
    """Every id in ``text`` is whole or shortened, never cut, and names a known object."""
    tails = {i[-8:] for i in known}
    for m in ANY_ID.finditer(text):
        rest = text[m.start():]
        whole, short = WHOLE.match(rest), SHORT.match(rest)
        assert whole or short, f"an id is cut in:\n{text}"
        if whole:
            assert whole.group(0) in known, f"unknown id {whole.group(0)}"
        else:
            assert short.group(1) in tails, f"short id {short.group(0)} names no object"


def _known(repo: dict[str, Any]) -> set[str]:
    path = repo["path"]
    known = {repo["run"], repo["dataset"], repo["model"], repo["deployment"],
             *repo["commits"]}
    known |= {d["dataset_id"] for d in json.loads(fl("datasets", "list", "--json",
                                                      cwd=path).stdout)}
    known |= {e["experiment_id"] for e in json.loads(fl("experiments", "--json",
                                                        cwd=path).stdout)}
    return known


COMMANDS = [
    ("list",), ("show", "driver_stats"), ("show", "ride_model_features", "-k", "feature_set"),
    ("versions", "driver_stats"), ("plan",), ("commits",), ("datasets", "list"),
    ("runs", "list"), ("experiments",), ("models",), ("deploy", "--list"),
    ("online", "get", "--feature-set", "ride_model_features", "-e",
     "driver_id=1001,customer_id=5001"),
    ("catalog", "list"), ("catalog", "show", "driver_stats"), ("retention", "show"),
    ("governance", "report"), ("audit", "list"),
]


def test_every_line_fits_80_columns_and_ids_stay_whole(repo) -> None:
    path, known = repo["path"], _known(repo)
    commands = [*COMMANDS, ("commit", "show", repo["commits"][0]),
                ("datasets", "show", repo["dataset"]), ("runs", "show", repo["run"]),
                ("lineage", repo["deployment"], "--direction", "upstream"),
                ("impact", "driver_stats@1")]
    for args in commands:
        out = fl(*args, cwd=path).stdout
        assert out.strip(), args
        long = [line for line in out.splitlines() if len(line) > 80]
        assert not long, f"featureledger {' '.join(args)} printed lines over 80: {long}"
        _ids_ok(out, known)
    commits = fl("commits", cwd=path).stdout
    assert {m.group(1) for m in SHORT.finditer(commits)} == {c[-8:] for c in repo["commits"]}


def test_full_ids_and_json_give_ids_whole(repo) -> None:
    path = repo["path"]
    wide = fl("--full-ids", "commits", cwd=path, columns=200).stdout
    assert set(WHOLE.findall(wide)) == set(repo["commits"])
    assert "…" not in wide
    runs = fl("--full-ids", "runs", "list", cwd=path, columns=200).stdout
    assert repo["run"] in runs
    listed = json.loads(fl("runs", "list", "--json", cwd=path).stdout)
    assert [r["run_id"] for r in listed] == [repo["run"]]


def test_json_times_are_iso_8601_with_microseconds_beside(repo) -> None:
    path = repo["path"]
    commits = json.loads(fl("commits", "--json", cwd=path).stdout)
    c = commits[0]
    parsed = dt.datetime.fromisoformat(c["commit_time"])
    assert parsed.tzinfo is not None
    assert c["commit_time_us"] == round(parsed.timestamp() * 1_000_000)
    assert "commit_time_iso" not in c
    listed = json.loads(fl("list", "--json", cwd=path).stdout)
    assert all(isinstance(r["created_at"], str) and dt.datetime.fromisoformat(r["created_at"])
               for r in listed)
    shown = json.loads(fl("datasets", "show", repo["dataset"], "--json", cwd=path).stdout)
    assert dt.datetime.fromisoformat(shown["read_at"]).tzinfo is not None


def test_a_run_is_named_by_a_name_not_its_id(repo) -> None:
    run = json.loads(fl("runs", "show", repo["run"], "--json", cwd=repo["path"]).stdout)
    assert re.fullmatch(r"[a-z]+-[a-z]+-\d{1,2}", run["name"]), run["name"]
    assert run["name"] not in repo["run"]


def test_show_prints_created_ttl_ranges_defaults_and_regexes(tmp_path: Path) -> None:
    run_cli("init", "demo", "--no-data", cwd=tmp_path)
    path = tmp_path / "demo"
    (path / "extra.py").write_text(
        "from featureledger import Entity, FeatureView, Field\n"
        "plate = Entity(name='plate', join_keys={'plate_id': 'string'})\n"
        "plates = FeatureView(name='plates', entities=['plate'], ttl='3d', fields=[\n"
        "    Field(name='code', dtype='string', regex='^[A-Z]{2}-[0-9]+$'),\n"
        "    Field(name='seats', dtype='int32', min=1, default=4),\n"
        "    Field(name='load', dtype='float64', max=2.5),\n"
        "    Field(name='score', dtype='float64', min=0, max=1),\n"
        "])\n")
    fl("apply", cwd=path)
    out = fl("show", "plates", cwd=path).stdout
    assert "None" not in out
    assert re.search(r"created \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC by tester", out)
    assert "ttl: 3d" in out
    assert "regex ^[A-Z]{2}-[0-9]+$" in out
    assert ">= 1; default 4" in out
    assert "<= 2.5" in out and "0 <= x <= 1" in out

    # a diff prints values: the new TTL and unit as written, no quotes, no timedelta repr
    extra = (path / "extra.py").read_text()
    (path / "extra.py").write_text(extra.replace("ttl='3d'", "ttl='36h'").replace(
        "max=2.5)", "max=2.5, unit='t')"))
    fl("apply", "--allow-breaking", "unit named", cwd=path)
    diff = fl("versions", "plates", "--diff", "1..2", cwd=path).stdout
    assert "3d -> 1d12h" in diff and "none -> t" in diff
    assert "'" not in diff and "timedelta" not in diff and "days," not in diff


def test_version() -> None:
    from featureledger import __version__

    out = fl("--version", cwd=Path.cwd()).stdout
    assert out == f"featureledger {__version__}\n"
