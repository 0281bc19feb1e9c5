"""The server does what the SDK does: deployment, model and deployment reads, pushes
recorded as the token's principal, NaN and infinity, one content-type rule, its own
docs, and a bind failure that is an error before anything is announced."""

from __future__ import annotations

import datetime as dt
import math
import socket
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from featureledger import Entity, FeatureView, Field
from featureledger.errors import StateError
from server.harness import T0, TOKEN, open_served_store

BOB = "bob-token"
READ = {"features": ["driver_stats:trips", "driver_stats:rating"],
        "entities": {"driver_id": [1, 2, 3]}}


def _client(store: Any, token: str | None = TOKEN) -> Any:
    from fastapi.testclient import TestClient

    from featureledger.server.app import create_app

    c = TestClient(create_app(store))
    if token:
        c.headers["Authorization"] = f"Bearer {token}"
    return c


@pytest.fixture
def store(tmp_path, write_commit) -> Iterator[Any]:
    """The served store (tokens: alice, bob) with a model deployed and a view whose
    float field takes NaN."""
    s = open_served_store(tmp_path, write_commit, server={"tokens": {TOKEN: "alice",
                                                                     BOB: "bob"}})
    driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    s.apply([FeatureView(name="scores", entities=[driver], fields=[
        Field(name="score", dtype="float64", allow_nan=True),
        Field(name="strict", dtype="float64")])])
    ents = pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [T0 + dt.timedelta(1)] * 2})
    with s.start_run("serve") as run:
        ds = s.get_historical_features(ents, ["driver_stats:trips"])
        s.model = run.log_model("ranker", "s3://models/ranker/1", training_dataset=ds)
    s.dep = s.deploy(s.model.model_id, "production")
    yield s
    s.close()


def test_online_read_through_a_deployment(store):
    with _client(store) as c:
        r = c.post("/features/online", json={"deployment": store.dep.deployment_id,
                                             "entities": {"driver_id": [2, 1]}})
        assert r.status_code == 200, r.text
        got = r.json()["features"]
        assert [(f["reference"], f["values"]) for f in got] == [
            ("driver_stats@1:trips", [20, 10])]
        sdk = store.get_online_features(deployment=store.dep.deployment_id,
                                        entity_rows={"driver_id": [2, 1]})
        assert sdk.values["trips"] == [20, 10]
        r = c.post("/features/online", json={"deployment": "dep_nope",
                                             "entities": {"driver_id": [1]}})
        assert r.status_code == 404
        r = c.post("/features/online", json={"deployment": 7, "entities": {"driver_id": [1]}})
        assert r.status_code == 422 and "'deployment' must be" in r.json()["error"]["message"]
    usage = store.tracking.deployment_usage(store.dep.deployment_id)
    assert sum(u["rows"] for u in usage) == 2 + 2  # the HTTP read and the SDK's
    assert sum(u["requests"] for u in usage) == 2


def test_model_and_deployment_reads(store):
    model, dep = store.model, store.dep
    with _client(store) as c:
        listed = c.get("/models").json()
        assert [m["ref"] for m in listed] == ["ranker@1"]
        for ref in (model.model_id, "ranker@1", "ranker"):
            one = c.get(f"/models/{ref}").json()
            assert one["model_id"] == model.model_id
            assert one["features"] == ["driver_stats@1:trips"]
            assert one["feature_versions"] == ["driver_stats@1"]
            assert one["datasets"] == model.datasets
        assert c.get("/models/nope").status_code == 404
        assert c.get("/models", params={"name": "other"}).json() == []
        deps = c.get("/deployments", params={"environment": "production"}).json()
        assert [d["deployment_id"] for d in deps] == [dep.deployment_id]
        one = c.get(f"/deployments/{dep.deployment_id}").json()
        assert one["model_ref"] == "ranker@1" and one["status"] == "active"
        assert one["features"] == ["driver_stats@1:trips"]
        assert one["lineage_snapshot"]["model_id"] == model.model_id
        assert c.get("/deployments/dep_nope").status_code == 404
        assert c.get("/deployments", params={"environment": "staging"}).json() == []
        assert c.get("/models", headers={"Authorization": ""}).status_code == 401


def test_push_is_recorded_as_the_tokens_principal(store):
    row = {"driver_id": 3, "event_timestamp": "2024-01-02T00:00:00Z", "trips": 30}
    with _client(store) as alice, _client(store, BOB) as bob:
        a = alice.post("/push/driver_stats", json={"rows": [row]}).json()["commit_id"]
        assert store.registry.commits.get(a).user == "alice"  # pending, already alice's
        b = bob.post("/push/driver_stats", json={"rows": [row], "flush": True}
                     ).json()["commit_id"]
    # bob's push did not join alice's commit: each commit is one principal's rows
    assert a != b
    store.flush_pushes()
    assert store.registry.commits.get(a).user == "alice"
    assert store.registry.commits.get(b).user == "bob"
    assert store.registry.commits.get(a).status == "committed"
    graph = store.lineage(b, direction="upstream")
    assert any(n.endswith("principal=bob") for n in graph.nodes)


def test_nan_and_infinity_over_http(store):
    with _client(store) as c:
        r = c.post("/push/scores", json={"rows": [
            {"driver_id": 1, "event_timestamp": "2024-01-01T00:00:00Z", "score": "NaN"},
            {"driver_id": 2, "event_timestamp": "2024-01-01T00:00:00Z", "score": "Infinity"},
            {"driver_id": 3, "event_timestamp": "2024-01-01T00:00:00Z", "score": "-Infinity"},
            {"driver_id": 4, "event_timestamp": "2024-01-01T00:00:00Z", "score": 0.5},
            {"driver_id": 5, "event_timestamp": "2024-01-01T00:00:00Z", "score": None}]})
        assert r.status_code == 200, r.text
        body = {"features": ["scores:score"], "entities": {"driver_id": [1, 2, 3, 4, 5]}}
        [col] = c.post("/features/online", json=body).json()["features"]
        assert col["values"] == ["NaN", "Infinity", "-Infinity", 0.5, None]
        assert col["statuses"] == ["PRESENT"] * 4 + ["NULL"]
        sdk = store.get_online_features(["scores:score"], {"driver_id": [1, 2, 3, 4, 5]})
        v = sdk.values["score"]
        assert math.isnan(v[0]) and v[1:4] == [math.inf, -math.inf, 0.5] and v[4] is None
        # a field that does not take NaN refuses it over HTTP as in the SDK
        r = c.post("/push/scores", json={"rows": [
            {"driver_id": 6, "event_timestamp": "2024-01-01T00:00:00Z", "strict": "NaN"}]})
        assert r.status_code == 422 and "nan:strict" in r.json()["error"]["message"]
        # any other text is still text, refused as a number
        r = c.post("/push/scores", json={"rows": [
            {"driver_id": 6, "event_timestamp": "2024-01-01T00:00:00Z", "score": "nan"}]})
        assert r.status_code == 422


def test_every_body_route_needs_a_json_content_type(store):
    with _client(store) as c:
        for path, body in (("/push/driver_stats", b'{"rows": [{"driver_id": 1}]}'),
                           ("/features/online", b'{"features": [], "entities": {}}')):
            r = c.post(path, content=body)  # no Content-Type at all
            assert r.status_code == 415, (path, r.text)
            assert r.json()["error"]["code"] == "unsupported_media_type"
            assert "no Content-Type header" in r.json()["error"]["message"]
            r = c.post(path, content=body, headers={"content-type": "text/plain"})
            assert r.status_code == 415 and "'text/plain'" in r.json()["error"]["message"]


def test_docs_are_local_and_behind_auth(store, tmp_path, write_commit):
    with _client(store, token=None) as anon, _client(store) as c:
        assert anon.get("/docs").status_code == 401
        assert anon.get("/openapi.json").status_code == 401
        page = c.get("/docs")
        assert page.status_code == 200
        assert "/docs/assets/swagger-ui-bundle.js" in page.text
        assert "cdn" not in page.text.lower() and "https://" not in page.text
        js = anon.get("/docs/assets/swagger-ui-bundle.js")  # the assets hold no data
        assert js.status_code == 200 and js.headers["content-type"].startswith(
            "text/javascript") and len(js.content) > 100_000
        assert anon.get("/docs/assets/swagger-ui.css").status_code == 200
        assert c.get("/docs/assets/secret.txt").status_code == 404
        assert c.get("/openapi.json").json()["paths"]["/models/{model}"]
        assert c.get("/redoc").status_code == 404
    (tmp_path / "public").mkdir()
    public = open_served_store(tmp_path / "public", write_commit,
                               server={"public_docs": True})
    try:
        with _client(public, token=None) as anon:
            assert anon.get("/docs").status_code == 200
            assert anon.get("/openapi.json").status_code == 200
            assert anon.get("/catalog/views").status_code == 401
    finally:
        public.close()


def test_online_response_to_pandas_and_polars(store):
    resp = store.get_online_features(READ["features"], READ["entities"])
    df = resp.to_pandas()
    assert list(df.columns) == ["driver_id", "trips", "rating"]
    assert df["trips"].tolist()[:2] == [10, 20] and pd.isna(df["trips"].iloc[2])
    pl = resp.to_polars()
    assert pl["trips"].to_list() == [10, 20, None]
    assert pl["rating"].to_list() == [4.5, None, None]


def test_bind_failure_is_an_error_before_serving(store):
    from featureledger.server.app import serve

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    announced = []
    try:
        with pytest.raises(StateError, match=r"cannot listen on 127\.0\.0\.1:.*another process"):
            serve(store, "127.0.0.1", taken.getsockname()[1],
                  on_ready=lambda h, p: announced.append((h, p)))
    finally:
        taken.close()
    assert announced == []


@pytest.mark.e2e
@pytest.mark.slow
def test_cli_serve_on_a_taken_port_fails_without_announcing(tmp_path):
    from helpers import run_cli as fl

    fl("init", "demo", cwd=tmp_path)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        proc = fl("serve", "--port", str(taken.getsockname()[1]), cwd=tmp_path / "demo",
                  code=None)
    finally:
        taken.close()
    assert proc.returncode == 2
    assert "serving" not in proc.stdout
    assert "cannot listen on 127.0.0.1" in proc.stdout + proc.stderr
