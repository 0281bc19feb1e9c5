"""Two projects on one PostgreSQL registry keep their quality records apart.

Both have a view ``stats`` with a quality policy; the first quarantines a drifted commit
(check, alerts, audited status, in its commit's transaction) and logs served features.
The second must see none of it and change none of it: its policy, checks, alerts (whose
deduplication keys are the same text), feature log and audit trail are its own, and the
first project's ids behave as unknown ids.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from featureledger.config import load_config
from featureledger.errors import UnknownAlertError
from featureledger.registry.quality import QualityRepository
from featureledger.store import FeatureStore


def _open(root: Path, url: str, project: str, h) -> FeatureStore:
    root.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(root, config=load_config(root, environ={}, overrides={
        "registry": url, "project": project, "serving": {"poll_interval_s": 0}}))
    store.apply([h.DRIVER, h.stats_view()])
    return store


@pytest.mark.postgres
def test_quality_records_stay_in_their_project(tmp_path, pg_url, h):
    a = _open(tmp_path / "a", pg_url, "alpha", h)
    b = _open(tmp_path / "b", pg_url, "beta", h)
    try:
        a.set_quality_policy("stats", {"on_drift": "quarantine"})
        b.set_quality_policy("stats", {"on_drift": "alert", "min_rows": 5})
        a.ingest("stats", h.batch(1, hours=1, n=200))
        b.ingest("stats", h.batch(1, hours=1, n=200))
        bad = a.ingest("stats", h.batch(2, hours=2, n=200, shift=5.0))
        assert bad.commit.status == "quarantined"
        QualityRepository(a.registry.db).log_features(
            [(1, "dep_alpha", None, {"stats:x": 1.0})])

        # the second project: its own policy, no check, alert or log row of the first
        assert b.quality_policy("stats").on_drift == "alert"
        assert b.quality_policy("stats").min_rows == 5
        assert a.quality_policy("stats").on_drift == "quarantine"
        assert b.quality_checks(commit_ids=[bad.commit_id]) == []
        assert [c.status for c in b.quality_checks("stats")] == ["skipped"]
        assert b.alerts() == []
        assert QualityRepository(b.registry.db).logged_features(
            deployment_id="dep_alpha") == []
        assert not [e for e in b.audit_trail(limit=10_000) if e.object_id == bad.commit_id]
        for alert in a.alerts():
            with pytest.raises(UnknownAlertError):
                b.acknowledge_alert(alert.alert_id)
        # the same drift in the second project raises its own alert (same dedup key text)
        b_bad = b.ingest("stats", h.batch(2, hours=2, n=200, shift=5.0))
        assert b_bad.commit.status == "committed"  # beta only alerts
        (b_alert,) = b.alerts()
        assert b_alert.rule == "drift" and b_alert.occurrences == 1
        assert sorted(x.rule for x in a.alerts()) == ["drift", "quarantine"]
        assert all(x.occurrences == 1 and x.status == "open" for x in a.alerts())
        # removing the second project's policy leaves the first's
        b.set_quality_policy("stats", None)
        assert b.quality_policy("stats") is None
        assert a.quality_policy("stats").on_drift == "quarantine"
        assert a.verify_audit().ok and b.verify_audit().ok
    finally:
        a.close()
        b.close()
