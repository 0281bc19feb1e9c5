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
from featureledger.errors import FeatureDataWarning, FeatureLedgerError
from featureledger.integrations import attach
from featureledger.registry import schema

SPEC = Path(__file__).parent / "openlineage_spec"
CORE = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
FACET_FILES = {"parent": "ParentRunFacet", "errorMessage": "ErrorMessageRunFacet",
               "jobType": "JobTypeJobFacet", "schema": "SchemaDatasetFacet",
               "tags": "TagsRunFacet", "version": "DatasetVersionDatasetFacet",
               "columnLineage": "ColumnLineageDatasetFacet"}
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
    # a push's steps do not say which columns the rows had: no column lineage claimed
    assert "columnLineage" not in done[pushed.partition("_")[2]]["outputs"][0]["facets"]
    assert "columnLineage" in done[from_file.partition("_")[2]]["outputs"][0]["facets"]
    assert nodes[pushed].startswith("source:push://ol/driver_stats?principal=")


def _events(path: Path) -> list[dict]:
    events = [json.loads(line) for line in path.read_text().splitlines()]
    for e in events:
        validate(e)
    return events


def _complete(events: list[dict], job: str) -> list[dict]:
    return [e for e in events if e["job"]["name"] == job and e["eventType"] == "COMPLETE"]


def test_version_and_column_lineage_facets(tmp_path):
    log_file = tmp_path / "facets.jsonl"
    s = make_store(tmp_path, {"type": "file", "log_file_path": str(log_file), "append": True})
    try:
        # a renamed key, an int32 column cast to int64, no rating column (filled with null)
        frame = pd.DataFrame({"drv": [1, 2], "event_timestamp": [T0, T0],
                              "trips": pd.array([3, 4], dtype="int32")})
        commit = s.ingest("driver_stats", frame, column_map={"drv": "driver_id"}).commit
        ents = pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [T0 + dt.timedelta(1)] * 2})
        with pytest.warns(FeatureDataWarning, match="rating is null in every one"):
            ds = s.get_historical_features(ents, "fraud")
    finally:
        s.close()
    events = _events(log_file)
    [ingest] = _complete(events, "ol.ingest.driver_stats")
    [out] = ingest["outputs"]
    assert out["facets"]["version"]["datasetVersion"] == commit.commit_id
    [src] = ingest["inputs"]
    lineage = out["facets"]["columnLineage"]["fields"]
    assert set(lineage) == {"driver_id", "event_timestamp", "trips"}  # rating: not in input
    assert lineage["driver_id"]["inputFields"] == [{
        "namespace": src["namespace"], "name": src["name"], "field": "drv",
        "transformations": [{"type": "DIRECT", "subtype": "IDENTITY", "masking": False}]}]
    [how] = lineage["trips"]["inputFields"][0]["transformations"]
    assert (how["subtype"], how["description"]) == ("TRANSFORMATION",
                                                    "cast from int32 to int64")
    [train] = _complete(events, "ol.training_set.fraud")
    [view_in] = train["inputs"]
    assert view_in["facets"]["version"]["datasetVersion"] == commit.commit_id
    [ds_out] = train["outputs"]
    assert ds_out["facets"]["version"]["datasetVersion"] == ds.content_hash
    cols = ds_out["facets"]["columnLineage"]["fields"]
    assert {k: [(f["namespace"], f["name"], f["field"]) for f in v["inputFields"]]
            for k, v in cols.items()} == {
        "trips": [("featureledger://ol", "driver_stats@1", "trips")],
        "rating": [("featureledger://ol", "driver_stats@1", "rating")]}


def strip(facet: dict) -> dict:
    """A parent facet's run and job ids (without the empty facets the client adds)."""
    return {"run": {"runId": facet["run"]["runId"]},
            "job": {k: facet["job"][k] for k in ("namespace", "name")}}


# MLflow's own SQLAlchemy models use a loader strategy that SQLAlchemy 2.1 deprecates
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
@pytest.mark.slow
def test_parent_and_root_link_jobs_to_the_experiment_and_mlflow_runs(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_file = tmp_path / "parents.jsonl"
    cfg = load_config(tmp_path, overrides={"project": "ol", "mlflow": {"tracking_uri": uri},
                                           "openlineage": {
        "enabled": True, "namespace": "fl-test",
        "transport": {"type": "file", "log_file_path": str(log_file), "append": True}}})
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("ol", artifact_location=(tmp_path / "art").as_uri())
    mlflow_run = client.create_run(exp_id).info.run_id
    s = FeatureStore(tmp_path, config=cfg)
    attach(s.ctx)
    s.apply([Entity(name="driver", join_keys={"driver_id": "int64"}),
             FeatureView(name="driver_stats", entities=["driver"],
                         fields=[Field(name="trips", dtype="int64"),
                                 Field(name="rating", dtype="float64")])])
    try:
        with s.start_run("outer", mlflow_run_id=mlflow_run) as outer, \
                s.start_run("inner") as inner:
            commit = s.ingest("driver_stats", rows()).commit
    finally:
        s.close()
    events = _events(log_file)
    mlflow_uuid = "-".join([mlflow_run[:8], mlflow_run[8:12], mlflow_run[12:16],
                            mlflow_run[16:20], mlflow_run[20:]])
    root = {"run": {"runId": mlflow_uuid},
            "job": {"namespace": "mlflow", "name": f"experiments/{exp_id}"}}
    [ingest] = _complete(events, "ol.ingest.driver_stats")
    parent = ingest["run"]["facets"]["parent"]
    assert parent["run"]["runId"] == inner.run_id.partition("_")[2] == \
        commit.run_id.partition("_")[2]
    assert {k: parent["job"][k] for k in ("namespace", "name")} == {
        "namespace": "fl-test", "name": "ol.experiment.inner"}
    assert strip(parent["root"]) == root
    # the inner run's parent is the outer run; the outer run's parent is the MLflow run
    [inner_done] = _complete(events, "ol.experiment.inner")
    assert inner_done["run"]["facets"]["parent"]["run"]["runId"] == \
        outer.run_id.partition("_")[2]
    assert strip(inner_done["run"]["facets"]["parent"]["root"]) == root
    outer_start = next(e for e in events if e["job"]["name"] == "ol.experiment.outer"
                       and e["eventType"] == "START")
    assert strip(outer_start["run"]["facets"]["parent"]) == root


def test_dataset_names_follow_the_openlineage_naming_spec():
    from featureledger.registry.lineage_edges import openlineage_dataset

    assert openlineage_dataset("file:///data/x%20y.parquet") == ("file", "/data/x y.parquet")
    assert openlineage_dataset("s3://bucket/raw/trips/part-0.parquet") == (
        "s3://bucket", "raw/trips/part-0.parquet")
    assert openlineage_dataset("gs://bucket/t.csv") == ("gs://bucket", "t.csv")
    assert openlineage_dataset("memory:sha256:ab12") == ("memory", "sha256:ab12")
