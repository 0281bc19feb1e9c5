"""OpenLineage events: every emitted event validates against the official JSON schemas
(copied into ``openlineage_spec/``, resolved offline), through file, console and HTTP
transports."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from featureledger import Entity, FeatureSet, FeatureStore, FeatureView, Field
from featureledger.config import load_config
from featureledger.errors import FeatureLedgerError
from featureledger.integrations import attach
from featureledger.registry import schema

SPEC = Path(__file__).parent / "openlineage_spec"
CORE = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
FACET_FILES = {"parent": "ParentRunFacet", "errorMessage": "ErrorMessageRunFacet",
               "jobType": "JobTypeJobFacet", "schema": "SchemaDatasetFacet",
               "tags": "TagsRunFacet", "columnLineage": "ColumnLineageDatasetFacet"}
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _registry() -> tuple[Registry, dict[str, str]]:
    resources, ids = [], {}
    for f in [SPEC / "OpenLineage.json", *sorted((SPEC / "facets").glob("*.json"))]:
        doc = json.loads(f.read_text())
        resources.append((doc["$id"], Resource.from_contents(doc)))
        ids[f.stem] = doc["$id"]
    return Registry().with_resources(resources), ids


REGISTRY, IDS = _registry()


def validate(event: dict) -> None:
    """The event against RunEvent, and each standard facet against its own schema."""
    def check(schema_ref: str, obj: dict) -> None:
        v = Draft202012Validator({"$ref": schema_ref}, registry=REGISTRY,
                                 format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = sorted(v.iter_errors(obj), key=str)
        assert not errors, f"{schema_ref}: {errors[0].message} in {json.dumps(obj)[:400]}"

    check(f"{CORE}#/$defs/RunEvent", event)
    facet_groups = [("RunFacet", event["run"].get("facets", {})),
                    ("JobFacet", event["job"].get("facets", {}))]
    for d in event.get("inputs", []) + event.get("outputs", []):
        facet_groups.append(("DatasetFacet", d.get("facets", {})))
    for base, facets in facet_groups:
        for key, facet in facets.items():
            name = FACET_FILES.get(key)
            if name is not None:
                check(f"{IDS[name]}#/$defs/{name}", facet)
            else:  # a custom facet: the core's base facet rules
                check(f"{CORE}#/$defs/{base}", facet)


def make_store(root: Path, transport: dict) -> FeatureStore:
    cfg = load_config(root, overrides={"project": "ol", "openlineage": {
        "enabled": True, "namespace": "fl-test", "transport": transport}})
    s = FeatureStore(root, config=cfg)
    attach(s.ctx)  # what opening a store with openlineage enabled does
    s.apply([
        Entity(name="driver", join_keys={"driver_id": "int64"}),
        FeatureView(name="driver_stats", entities=["driver"],
                    fields=[Field(name="trips", dtype="int64", description="trips per day"),
                            Field(name="rating", dtype="float64")]),
        FeatureSet(name="fraud", features=["driver_stats:trips", "driver_stats:rating"]),
    ])
    return s


def rows():
    return pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [T0, T0], "trips": [3, 4],
                         "rating": [4.5, 3.0]})


def scenario(s: FeatureStore) -> dict:
    out = {}
    with s.start_run("ol-exp") as run:
        out["commit"] = s.ingest("driver_stats", rows()).commit
        ents = pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [T0 + dt.timedelta(1)] * 2})
        out["ds"] = s.get_historical_features(ents, "fraud")
        out["model"] = run.log_model("fraud", "s3://m/1", training_dataset=out["ds"])
    out["run"] = run
    with pytest.raises(FeatureLedgerError):
        s.ingest("driver_stats", pd.DataFrame({"driver_id": [1], "event_timestamp": [T0],
                                               "trips": ["many"], "rating": [1.0]}))
    return out


def test_file_transport_events_validate_and_carry_featureledger_facets(tmp_path):
    log_file = tmp_path / "events.jsonl"
    s = make_store(tmp_path, {"type": "file", "log_file_path": str(log_file), "append": True})
    try:
        o = scenario(s)
        s.materialize()
    finally:
        s.close()
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    for e in events:
        validate(e)
    seen = [(e["job"]["name"], e["eventType"]) for e in events]
    for expected in [("ol.experiment.ol-exp", "START"), ("ol.experiment.ol-exp", "COMPLETE"),
                     ("ol.ingest.driver_stats", "START"), ("ol.ingest.driver_stats", "COMPLETE"),
                     ("ol.ingest.driver_stats", "FAIL"), ("ol.training_set.fraud", "START"),
                     ("ol.training_set.fraud", "COMPLETE"), ("ol.train.fraud", "COMPLETE"),
                     ("ol.materialize", "COMPLETE")]:
        assert expected in seen, expected
    cid, run_id = o["commit"].commit_id, o["run"].run_id
    ingest = next(e for e in events if e["job"]["name"] == "ol.ingest.driver_stats"
                  and e["eventType"] == "COMPLETE")
    assert ingest["run"]["runId"] == cid.partition("_")[2]
    fl = ingest["run"]["facets"]["featureledger"]
    assert fl["commitIds"] == [cid] and fl["runId"] == run_id
    assert fl["featureVersions"] == ["driver_stats@1"]
    assert ingest["run"]["facets"]["parent"]["run"]["runId"] == run_id.partition("_")[2]
    out = ingest["outputs"][0]
    assert (out["namespace"], out["name"]) == ("featureledger://ol", "driver_stats@1")
    fields = {f["name"]: f for f in out["facets"]["schema"]["fields"]}
    assert fields["trips"]["type"] == "BIGINT" and fields["trips"]["description"] == \
        "trips per day"
    assert set(fields) == {"driver_id", "event_timestamp", "trips", "rating"}
    train = next(e for e in events if e["job"]["name"] == "ol.training_set.fraud"
                 and e["eventType"] == "COMPLETE")
    assert train["outputs"][0]["name"] == o["ds"].id
    assert train["inputs"][0]["facets"]["featureledger"]["commitIds"] == [cid]
    assert train["run"]["facets"]["featureledger"]["datasetIds"] == [o["ds"].id]
    model = next(e for e in events if e["job"]["name"] == "ol.train.fraud"
                 and e["eventType"] == "COMPLETE")
    assert [i["name"] for i in model["inputs"]] == [o["ds"].id]
    assert model["outputs"][0]["name"] == "model:fraud@1"
    assert model["run"]["facets"]["featureledger"]["modelId"] == o["model"].model_id
    fail = next(e for e in events if e["eventType"] == "FAIL")
    assert "errorMessage" in fail["run"]["facets"]
    mat = next(e for e in events if e["job"]["name"] == "ol.materialize"
               and e["eventType"] == "COMPLETE")
    assert [i["name"] for i in mat["inputs"]] == ["driver_stats@1"]


class _Receiver(BaseHTTPRequestHandler):
    received: list = []  # noqa: RUF012 - shared with the test through the class

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_http_transport_posts_valid_events_to_a_receiver(tmp_path):
    _Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        s = make_store(tmp_path, {"type": "http",
                                  "url": f"http://127.0.0.1:{server.server_port}",
                                  "endpoint": "api/v1/lineage"})
        try:
            o = scenario(s)
        finally:
            s.close()
    finally:
        server.shutdown()
        server.server_close()
    paths = {p for p, _ in _Receiver.received}
    assert paths == {"/api/v1/lineage"}
    events = [e for _, e in _Receiver.received]
    for e in events:
        validate(e)
    # run START, ingest START+COMPLETE, training set x2, model x2, run COMPLETE, ingest START+FAIL
    assert len(events) == 10
    ingest = [e for e in events if e["job"]["name"] == "ol.ingest.driver_stats"]
    by_state = {}
    for e in ingest:
        by_state.setdefault(e["eventType"], []).append(e["run"]["runId"])
    assert by_state["COMPLETE"] == [o["commit"].commit_id.partition("_")[2]]
    assert len(by_state["START"]) == 2 and by_state["FAIL"][0] in by_state["START"]
    assert by_state["FAIL"][0] != by_state["COMPLETE"][0]


def test_console_transport_logs_valid_events(tmp_path, caplog):
    s = make_store(tmp_path, {"type": "console"})
    try:
        with caplog.at_level(logging.INFO, logger="openlineage.client.transport.console"), \
                s.start_run("console") as run:
            run.log_metric("auc", 0.5)
    finally:
        s.close()
    events = [json.loads(r.getMessage()) for r in caplog.records
              if r.name == "openlineage.client.transport.console"]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    for e in events:
        validate(e)


def test_failed_run_emits_fail_with_error(tmp_path):
    log_file = tmp_path / "e.jsonl"
    s = make_store(tmp_path, {"type": "file", "log_file_path": str(log_file), "append": True})
    try:
        with pytest.raises(KeyError), s.start_run("bad"):
            raise KeyError("missing")
    finally:
        s.close()
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    for e in events:
        validate(e)
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    assert "missing" in events[1]["run"]["facets"]["errorMessage"]["message"]


def test_sources_are_named_as_the_lineage_graph_names_them(tmp_path):
    from featureledger.registry.lineage_edges import INGESTED

    log_file = tmp_path / "sources.jsonl"
    s = make_store(tmp_path, {"type": "file", "log_file_path": str(log_file), "append": True})
    data = tmp_path / "data" / "batch one.parquet"
    data.parent.mkdir()
    rows().to_parquet(data, index=False)
    try:
        from_file = s.ingest("driver_stats", str(data)).commit_id
        from_frame = s.ingest("driver_stats", rows().assign(trips=[7, 8])).commit
        pushed = s.push("driver_stats", [{"driver_id": 9, "event_timestamp": T0, "trips": 1}],
                        flush=True)
        t = schema.lineage_edges
        with s.registry.db.read() as conn:
            nodes = dict(conn.execute(sa.select(t.c.dst, t.c.src).where(
                s.registry.db.scope(t), t.c.relation == INGESTED)).all())
    finally:
        s.close()
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    for e in events:
        validate(e)
    done = {e["run"]["runId"]: e for e in events
            if e["job"]["name"] == "ol.ingest.driver_stats" and e["eventType"] == "COMPLETE"}

    def inputs(commit_id):
        [ds] = done[commit_id.partition("_")[2]]["inputs"]
        return ds["namespace"], ds["name"], ds["facets"]["featureledger"]["nodeId"]

    # a local file: namespace "file", its absolute path (decoded), as OpenLineage names it
    assert inputs(from_file) == ("file", str(data.absolute()), nodes[from_file])
    assert nodes[from_file] == "source:" + data.absolute().as_uri()
    assert inputs(from_frame.commit_id) == (
        "memory", f"sha256:{from_frame.source['digest']}", nodes[from_frame.commit_id])
    # a push: its endpoint; the principal is in the node id
    assert inputs(pushed) == ("push://ol", "driver_stats", nodes[pushed])
    assert nodes[pushed].startswith("source:push://ol/driver_stats?principal=")
