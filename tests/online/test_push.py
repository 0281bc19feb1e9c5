"""Push: online at once, offline as micro-batched commits, the two agreeing."""

from __future__ import annotations

import pytest

from featureledger.errors import IngestionError, ValidationFailedError

IDS = [{"driver_id": 1}, {"driver_id": 2}]
FEATS = ["driver_stats:trips", "driver_stats:city"]


def test_push_is_online_at_once_and_lands_offline_on_flush(store, h):
    cid = store.push("driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1, "city": "a"},
        {"driver_id": 1, "event_timestamp": h.ts(2), "trips": 2, "city": "b"},
    ])
    store.push("driver_stats", {"driver_id": [2], "event_timestamp": [h.ts(1)],
                                "trips": [20]})
    r = store.get_online_features(FEATS, IDS)
    # a missing column takes the field's declared default, as in ingestion
    assert r.values == {"trips": [2, 20], "city": ["b", "unknown"]}
    assert r.commits("trips") == [cid, cid]
    assert store.registry.commits.list("driver_stats") == []  # buffered, not yet offline
    landed = store.online.flush()
    assert [c.commit_id for c in landed] == [cid]
    assert landed[0].row_count == 3 and landed[0].source["type"] == "push"
    offline = store.get_historical_features(
        {"driver_id": [1, 2], "event_timestamp": [h.ts(3)] * 2}, FEATS
    ).to_arrow().sort_by("driver_id").to_pydict()
    assert offline["trips"] == r.values["trips"] and offline["city"] == r.values["city"]
    # the online record now carries the commit's final commit time
    assert store.get_online_features(FEATS, IDS).commits("city") == [cid, cid]


def test_flush_on_close_and_by_size(make_store, h):
    store = make_store(push_flush_rows=2)
    store.apply([h.DRIVER, h.stats_view()])
    store.push("driver_stats", [{"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1}])
    assert store.registry.commits.list("driver_stats") == []
    store.push("driver_stats", [{"driver_id": 2, "event_timestamp": h.ts(1), "trips": 2}])
    assert len(store.registry.commits.list("driver_stats")) == 1  # two rows: flushed
    store.push("driver_stats", [{"driver_id": 3, "event_timestamp": h.ts(1), "trips": 3}])
    registry_url = store.config.registry_url
    store.close()
    from featureledger.registry import Registry

    reg = Registry(registry_url)
    try:
        assert [c.row_count for c in reg.commits.list("driver_stats")] == [2, 1]
    finally:
        reg.close()


def test_push_never_overwrites_a_newer_value(store, h):
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(5), "trips": 5}])
    store.materialize(end=h.ts(6))
    store.push("driver_stats", [{"driver_id": 1, "event_timestamp": h.ts(4), "trips": 4}],
               flush=True)
    assert store.get_online_features(FEATS, IDS[:1]).values["trips"] == [5]


def test_invalid_rows_reject_the_whole_push(make_store, h):
    from featureledger import Field

    store = make_store()
    store.apply([h.DRIVER, h.stats_view(fields=[Field(name="trips", dtype="int64", min=0)])])
    with pytest.raises(ValidationFailedError, match="trips"):
        store.push("driver_stats", [
            {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1},
            {"driver_id": 2, "event_timestamp": h.ts(1), "trips": -1}])
    with pytest.raises(IngestionError, match="not in feature view"):
        store.push("driver_stats", [{"driver_id": 1, "event_timestamp": h.ts(1), "bogus": 1}])
    assert store.get_online_features(["driver_stats:trips"], IDS).values["trips"] == [None,
                                                                                      None]
    assert store.online.flush() == []
