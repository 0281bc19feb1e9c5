"""Alert records (deduplication, acknowledgement, audit) and the Prometheus gauge."""

from __future__ import annotations

import pytest

from featureledger.errors import QualityError, UnknownAlertError


def _gauge(text: str, severity: str) -> float:
    line = next(ln for ln in text.splitlines()
                if ln.startswith(f'featureledger_open_alerts{{severity="{severity}"}}'))
    return float(line.split()[-1])


def test_the_open_alerts_gauge_follows_the_records(store):
    from fastapi.testclient import TestClient

    from featureledger.server.app import create_app

    alerts = store.alerting
    with TestClient(create_app(store)) as client:
        text = client.get("/metrics").text
        assert _gauge(text, "warning") == 0 and _gauge(text, "critical") == 0
        a = alerts.raise_alert(rule="drift", severity="warning", subject="stats@1",
                               message="x drifted", evidence={"psi": 0.5},
                               lineage_node="view:stats@1")
        again = alerts.raise_alert(rule="drift", severity="warning", subject="stats@1",
                                   message="x drifted more", evidence={"psi": 0.7})
        assert again.alert_id == a.alert_id and again.occurrences == 2
        assert again.evidence == {"psi": 0.7}
        alerts.raise_alert(rule="quarantine", severity="critical", subject="cmt_x",
                           message="quarantined", evidence={})
        text = client.get("/metrics").text
        assert _gauge(text, "warning") == 1 and _gauge(text, "critical") == 1
        store.acknowledge_alert(a.alert_id, "seen")
        assert _gauge(client.get("/metrics").text, "warning") == 0


def test_acknowledgement_is_audited_and_unknown_ids_are_refused(store):
    import sqlalchemy as sa

    a = store.alerting.raise_alert(rule="skew", severity="info", subject="dep_1",
                                   message="m", evidence={})
    store.acknowledge_alert(a.alert_id, "fine")
    with store.registry.db.read_all_projects() as conn:
        rows = conn.execute(sa.text(
            "SELECT action, object_id FROM audit_log WHERE action = 'alert:acknowledge'"
        )).all()
    assert [tuple(r) for r in rows] == [("alert:acknowledge", a.alert_id)]
    with pytest.raises(UnknownAlertError, match="featureledger alerts"):
        store.acknowledge_alert("alr_nope")
    with pytest.raises(QualityError, match="severity"):
        store.alerting.raise_alert(rule="x", severity="loud", subject="s", message="m",
                                   evidence={})


def test_checks_alerts_and_policies_on_every_registry_backend(make_store, registry_url, h):
    store = make_store(registry=registry_url)
    store.set_quality_policy("stats", {"on_drift": "alert", "baseline": "previous:2"})
    assert store.quality_policy("stats").baseline == "previous:2"
    store.ingest("stats", h.batch(1, hours=1, n=300))
    r = store.ingest("stats", h.batch(2, hours=2, n=300, shift=2.0))
    (check,) = store.quality_checks("stats", commit_ids=[r.commit_id])
    assert check.status == "drift" and check.action == "alert"
    assert check.result["drift"]["baseline"]["commits"] == 1
    (alert,) = store.alerts(status="open", subject="stats")
    assert alert.evidence["commit_id"] == r.commit_id
    assert store.alerting.open_counts() == {"warning": 1}
    store.set_quality_policy("stats", None)
    assert store.quality_policy("stats") is None
    assert store.ingest("stats", h.batch(3, hours=3, n=300, shift=5.0)).quality is None
