"""The HTTP feature server: features, auth, errors, catalog, health, metrics."""

from __future__ import annotations

import pytest

from featureledger.errors import ConfigError
from featureledger.server.auth import check_bind

BODY = {"features": ["driver_stats:trips", "driver_stats:rating", "driver_stats:seen"],
        "entities": {"driver_id": [1, 2, 3]}}


def test_online_features_match_the_sdk(client, served_store):
    r = client.post("/features/online", json=BODY)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    sdk = served_store.get_online_features(BODY["features"], BODY["entities"])
    assert doc["entities"] == {"driver_id": [1, 2, 3]}
    by_name = {f["name"]: f for f in doc["features"]}
    assert by_name["trips"]["values"] == [10, 20, None] == sdk.values["trips"]
    assert by_name["rating"]["statuses"] == ["PRESENT", "NULL", "NOT_FOUND"]
    assert by_name["seen"]["values"] == ["2024-01-01T00:00:00+00:00", None, None]
    assert by_name["trips"]["version"] == 1
    assert by_name["trips"]["reference"] == "driver_stats@1:trips"
    assert by_name["trips"]["commits"] == sdk.commits("trips")
    assert by_name["trips"]["commits"][2] is None


def test_feature_set_and_full_names(client):
    r = client.post("/features/online", json={"feature_set": "ranker",
                                              "entities": {"driver_id": ["1"]},
                                              "full_feature_names": True})
    assert r.status_code == 200
    assert [f["name"] for f in r.json()["features"]] == ["driver_stats__trips",
                                                         "driver_stats__rating"]
    assert r.json()["features"][0]["values"] == [10]


def test_unauthenticated_requests_get_401(client):
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"},
                    {"Authorization": "Basic czNjcmV0"}):
        r = client.post("/features/online", json=BODY, headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "unauthenticated"
        assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/catalog/views", headers={"Authorization": ""}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
    assert client.get("/health", headers={"Authorization": ""}).status_code == 200


def test_errors_are_json_with_codes(client):
    r = client.post("/features/online", json={"features": ["driver_stats:nope"],
                                              "entities": {"driver_id": [1]}})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_feature"
    assert "has no field 'nope'" in r.json()["error"]["message"]
    r = client.post("/features/online", json={"features": ["driver_stats:trips"],
                                              "entities": {"driver_id": [1.5]}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "retrieval_error"
    r = client.post("/features/online", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = client.post("/features/online", json={"features": "driver_stats:trips",
                                              "entities": {"driver_id": [1]}})
    assert r.status_code == 422
    assert client.get("/catalog/views/nope").status_code == 404


def test_catalog(client):
    views = client.get("/catalog/views").json()
    assert [(v["name"], v["version"]) for v in views] == [("driver_stats", 1)]
    one = client.get("/catalog/views/driver_stats", params={"version": 1}).json()
    assert [f["name"] for f in one["definition"]["fields"]] == ["trips", "rating", "seen"]
    assert client.get("/catalog/feature-sets/ranker").json()["definition"]["features"] == [
        "driver_stats@1:trips", "driver_stats@1:rating"]
    assert len(client.get("/catalog/entities/driver/versions").json()) == 1


def test_push_endpoint(client):
    r = client.post("/push/driver_stats", json={"rows": [
        {"driver_id": 3, "event_timestamp": "2024-01-02T00:00:00Z", "trips": 30}],
        "flush": True})
    assert r.status_code == 200 and r.json()["commit_id"].startswith("cmt_")
    got = client.post("/features/online", json=BODY).json()["features"][0]
    assert got["values"] == [10, 20, 30] and got["commits"][2] == r.json()["commit_id"]


def test_health_and_metrics(client):
    h = client.get("/health").json()
    assert h["status"] == "ok"
    assert {h["checks"][k]["ok"] for k in ("registry", "online_store", "offline_store")} == {
        True}
    client.post("/features/online", json=BODY)
    client.post("/features/online", json=BODY)  # second read comes from the cache
    text = client.get("/metrics").text
    assert 'featureledger_request_seconds_bucket{le="0.001",method="POST",' \
           'route="/features/online"}' in text
    assert 'featureledger_requests_total{method="POST",route="/features/online",' \
           'status="200"}' in text
    ratio = [ln for ln in text.splitlines() if ln.startswith("featureledger_cache_hit_ratio")]
    assert ratio and float(ratio[0].split()[-1]) > 0
    assert h["checks"]["cache"]["entries"] >= 0


def test_openapi_document(client):
    doc = client.get("/openapi.json").json()
    body = doc["paths"]["/features/online"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["properties"]["entities"]
    assert "401" in doc["paths"]["/features/online"]["post"]["responses"]


def test_refuses_public_bind_without_tokens():
    with pytest.raises(ConfigError, match="without authentication"):
        check_bind("0.0.0.0", {})
    check_bind("0.0.0.0", {"t": "alice"})
    check_bind("127.0.0.1", {})
    check_bind("::1", {})
    check_bind("localhost", {})


def test_cached_reads_answered_in_memory_stay_fresh(client, served_store):
    online = served_store.online
    online.watcher.poll_interval_s = 3600  # only in-process changes are seen, at once
    online.watcher.refresh()
    first = client.post("/features/online", json=BODY).json()
    assert online.get_online_features_nowait(BODY["features"], BODY["entities"]) is not None
    hits = online.cache.hits
    assert client.post("/features/online", json=BODY).json() == first
    assert online.cache.hits == hits + 3
    pushed = client.post("/push/driver_stats", json={"rows": [
        {"driver_id": 1, "event_timestamp": "2024-01-03T00:00:00Z", "trips": 11}]}).json()
    got = client.post("/features/online", json=BODY).json()["features"][0]
    assert got["values"] == [11, 20, None] and got["commits"][0] == pushed["commit_id"]


def test_catalog_version_out_of_range_is_422(client):
    for bad in (0, 2**63):
        r = client.get("/catalog/views/driver_stats", params={"version": bad})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
