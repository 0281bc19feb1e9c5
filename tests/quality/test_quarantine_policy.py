"""Quarantine by policy: a drifted (or too often invalid) commit is quarantined as it
lands, through the same path as a manual quarantine."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from featureledger.errors import QualityError, StateError

N = 500


def _entities(h, hours: float) -> pa.Table:
    return pa.table({"driver_id": np.arange(N, dtype=np.int64),
                     "event_timestamp": pa.array([h.T0 + dt.timedelta(hours=hours)] * N,
                                                 pa.timestamp("us", tz="UTC"))})


def _online_x(store) -> list[float]:
    r = store.get_online_features(["stats:x"], {"driver_id": list(range(N))})
    return r.values["x"]


def test_a_drifted_commit_is_quarantined_and_everything_reads_the_last_good_one(store, h):
    store.set_quality_policy("stats", {"on_drift": "quarantine"})
    first = store.ingest("stats", h.batch(1, hours=1, n=N))
    good_rows = h.batch(2, hours=2, n=N)
    good = store.ingest("stats", good_rows)
    assert first.quality.status == "skipped" and good.quality.status == "ok"
    assert good.commit.status == "committed"
    store.materialize(end=h.T0 + dt.timedelta(hours=10))
    old = store.get_historical_features(_entities(h, 5), ["stats:x", "stats:c"])
    old_rows = old.to_arrow()

    bad_rows = h.batch(3, hours=3, n=N, shift=3.0)
    bad = store.ingest("stats", bad_rows)
    assert bad.commit.status == "quarantined"
    assert bad.quality.status == "drift" and bad.quality.action == "quarantine"
    assert "x" in bad.quality.result["drift"]["drifted"]
    assert store.get_commit(bad.commit_id).status_reason.startswith("quality policy: drift")
    store.materialize(end=h.T0 + dt.timedelta(hours=10))

    # online: the previous good commit's values, key by key
    expected = dict(zip(good_rows.column("driver_id").to_pylist(),
                        good_rows.column("x").to_pylist(), strict=True))
    assert _online_x(store) == [expected[k] for k in range(N)]
    # a new training set leaves the commit out
    new = store.get_historical_features(_entities(h, 5), ["stats:x"])
    assert bad.commit_id not in new.commit_ids
    got = new.to_arrow()
    assert got.column("x").to_pylist() == [expected[k] for k in got.column("driver_id")
                                           .to_pylist()]
    # an older training set reproduces bit for bit
    again = store.reproduce(old.id)
    assert again.content_hash == old.content_hash and again.to_arrow().equals(old_rows)
    # alerts: deduplicated records pointing at the commit's lineage node
    (alert,) = [a for a in store.alerts(status="open") if a.rule == "quarantine"]
    assert alert.subject == bad.commit_id and alert.lineage_node == bad.commit_id
    assert alert.severity == "critical" and alert.evidence["check_id"] == bad.quality.check_id

    # release undoes it: the commit is served again
    store.restore(bad.commit_id, "checked: the shift is real")
    served = dict(zip(bad_rows.column("driver_id").to_pylist(),
                      bad_rows.column("x").to_pylist(), strict=True))
    store.materialize(end=h.T0 + dt.timedelta(hours=10))
    assert _online_x(store) == [served[k] for k in range(N)]


def test_a_drifted_push_is_quarantined_and_online_restored(store, h):
    store.set_quality_policy("stats", {"on_drift": "quarantine"})
    store.push("stats", h.batch(1, hours=1, n=N), flush=True)
    second = h.batch(2, hours=2, n=N)
    store.push("stats", second, flush=True)
    bad = h.batch(3, hours=3, n=N, shift=4.0)
    commit_id = store.push("stats", bad, flush=True)
    assert store.get_commit(commit_id).status == "quarantined"
    # the pushed values were online at once; now the last good ones are, key by key
    assert _online_x(store) == second.column("x").to_pylist()
    assert store.commits("stats", status="committed")[-1].commit_id != commit_id
    checks = store.quality_checks("stats", commit_ids=[commit_id])
    assert [c.action for c in checks] == ["quarantine"]


def test_validation_failure_rate_quarantines(store, h):
    store.set_quality_policy("stats", {"on_drift": "none", "max_rejected_fraction": 0.1})
    store.ingest("stats", h.batch(1, hours=1, n=N))
    rows = h.batch(2, hours=2, n=N)
    # a fifth of the rows break a uniqueness rule: duplicated keys at one time
    dup = rows.slice(0, N // 10)
    r = store.ingest("stats", pa.concat_tables([rows, dup]), mode="drop_invalid")
    assert r.rejected_count == 2 * (N // 10)
    assert r.commit.status == "quarantined" and r.quality.status == "failed"
    assert r.quality.result["rejected_fraction"] == pytest.approx(
        r.rejected_count / (r.rejected_count + r.row_count))
    rules = {a.rule for a in store.alerts(status="open")}
    assert {"validation", "quarantine"} <= rules
    # under the limit: committed
    ok = store.ingest("stats", h.batch(3, hours=3, n=N))
    assert ok.commit.status == "committed" and ok.quality.status == "ok"


def test_an_alert_only_policy_keeps_the_commit_and_deduplicates(store, h):
    store.set_quality_policy("stats", {"on_drift": "alert", "baseline": "commits:.."})
    store.ingest("stats", h.batch(1, hours=1, n=N))
    a = store.ingest("stats", h.batch(2, hours=2, n=N, shift=3.0))
    b = store.ingest("stats", h.batch(3, hours=3, n=N, shift=6.0))
    assert a.commit.status == b.commit.status == "committed"
    (alert,) = [x for x in store.alerts() if x.rule == "drift"]
    assert alert.occurrences == 2 and alert.subject == "stats@1"
    acked = store.acknowledge_alert(alert.alert_id, "known change")
    assert acked.status == "acknowledged" and store.alerts(status="open") == []
    store.ingest("stats", h.batch(4, hours=4, n=N, shift=-6.0))
    assert len([x for x in store.alerts(status="open") if x.rule == "drift"]) == 1


def test_bad_policies_are_refused_and_change_nothing(store):
    with pytest.raises(QualityError, match="on_drift"):
        store.set_quality_policy("stats", {"on_drift": "explode"})
    with pytest.raises(QualityError, match="unknown drift threshold"):
        store.set_quality_policy("stats", {"thresholds": {"psy": 1}})
    with pytest.raises(QualityError, match="baseline"):
        store.set_quality_policy("stats", {"baseline": "yesterday"})
    assert store.quality_policy("stats") is None
    with pytest.raises(StateError):
        store.rollback_data("stats", reason="")


def test_an_exact_policy_judges_the_rows_inside_the_commit(make_store, registry_url, h):
    """``exact`` reads the new commit's rows (written, not yet registered) through the
    offline engine inside the commit's transaction; the verdict is the profile's."""
    store = make_store(registry=registry_url)
    store.set_quality_policy("stats", {"on_drift": "quarantine", "exact": True})
    store.ingest("stats", h.batch(1, hours=1, n=N))
    good = store.ingest("stats", h.batch(2, hours=2, n=N))
    bad = store.ingest("stats", h.batch(3, hours=3, n=N, shift=3.0))
    assert good.commit.status == "committed" and good.quality.status == "ok"
    assert bad.commit.status == "quarantined" and bad.quality.action == "quarantine"
    assert bad.quality.result["drift"]["method"] == "data"
    assert [c.commit_id for c in store.commits("stats", status="committed")] == [
        store.commits("stats")[0].commit_id, good.commit_id]
