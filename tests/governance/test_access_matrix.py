"""Every role x action x resource class of the demo policy, through the SDK, the CLI and the
HTTP server: each cell is allowed or denied as the policy means (``expected``), and each
denial leaves exactly one audit entry naming the principal and the action, and nothing
else (no dataset, no commit, no status change)."""

from __future__ import annotations

import itertools

import pytest

from featureledger.errors import PermissionDeniedError
from governance.access_demo import (
    ACTIONS,
    CLASSES,
    PRINCIPALS,
    TOKENS,
    deny_entries,
    entities,
    expected,
    make_repo,
    rows,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def store(tmp_path):
    s = make_repo(tmp_path / "repo")
    yield s
    s.close()


@pytest.fixture
def any_store(tmp_path, registry_url):
    """The demo repository on each registry backend (SQLite, PostgreSQL)."""
    s = make_repo(tmp_path / "repo", registry=registry_url)
    yield s
    s.close()


def _state(store):
    """What a denied request must leave as it was."""
    commits = [(c.commit_id, c.status) for c in store.registry.commits.list(None)]
    datasets = [d.dataset_id for d in store.registry.datasets.list()]
    views = [(r.name, r.version, r.status, r.definition.description)
             for r in store.list("feature_view")]
    return commits, datasets, views


def _sdk(store, principal, action, cls, n):
    view, feature = CLASSES[cls]
    with store.acting_as(principal):
        if action == "read_offline":
            ds = store.get_historical_features(entities(), [f"{view}:{feature}"])
            assert ds.to_arrow().num_rows == 3
        elif action == "read_online":
            got = store.get_online_features([f"{view}:{feature}"], [{"rider_id": 1}])
            assert got.values[feature] == [rows(view).column(feature)[0].as_py()]
        elif action == "write":
            store.ingest(view, rows(view, value=float(n)))
        elif action == "quarantine":
            first = store.commits(view)[0].commit_id
            store.quarantine(first, "matrix")
        elif action == "apply":
            defs = store.load_definitions()
            changed = [d.model_copy(update={"description": f"cell {n}"})
                       if d.name == view else d for d in defs]
            assert store.apply(changed).changed
        elif action == "deprecate":
            store.deprecate(f"{view}@1", "matrix")
    # put back what an allowed cell changed, as root (allowed: no denial recorded)
    if action == "quarantine":
        store.restore(store.commits(view)[0].commit_id, "matrix reset")
    elif action == "deprecate":
        for dep in store.deprecations(view=view):
            store.withdraw_deprecation(dep.deprecation_id, "matrix reset")
        store.registry.definitions.set_status("feature_view", view, 1, "active", "reset")


def test_sdk_matrix(any_store):
    store = any_store
    cells = list(itertools.product(PRINCIPALS, ACTIONS, CLASSES))
    assert len(cells) == 6 * 6 * 3
    wrong = []
    for n, (who, action, cls) in enumerate(cells):
        before = deny_entries(store)
        state = _state(store)
        try:
            _sdk(store, who, action, cls, n)
            allowed = True
        except PermissionDeniedError as exc:
            allowed = False
            view, feature = CLASSES[cls]
            named = f"{view}:{feature}" if action.startswith("read") else view
            assert exc.principal == who and exc.action == action
            assert f"principal {who!r}" in str(exc) and named in str(exc)
            assert f"must grant {action}" in str(exc)
            assert _state(store) == state, (who, action, cls)  # nothing read or written
        if allowed != expected(who, action, cls):
            wrong.append((who, action, cls, allowed))
        new = deny_entries(store)[len(before):]
        if allowed:
            assert new == [], (who, action, cls, new)
        else:
            assert len(new) == 1, (who, action, cls, new)
            assert new[0]["actor"] == who and new[0]["action"] == action
    assert wrong == []
    # the SDK's own principal (principal=) is judged the same way as acting_as
    from featureledger.store import FeatureStore

    with FeatureStore(store.repo_path, principal="alice") as alice, \
            pytest.raises(PermissionDeniedError, match="alice"):
        alice.get_online_features(["riders:name"], [{"rider_id": 1}])


def test_cli_matrix(store, monkeypatch, capsys):
    from featureledger.cli.main import main

    repo = str(store.repo_path)
    cli_actions = ("read_offline", "read_online", "write", "quarantine", "apply", "deprecate")
    wrong = []
    for n, (who, action, cls) in enumerate(itertools.product(PRINCIPALS, cli_actions,
                                                             CLASSES)):
        view, feature = CLASSES[cls]
        monkeypatch.setenv("FEATURELEDGER_PRINCIPAL", who)
        before = deny_entries(store)
        if action == "read_offline":
            args = ["historical", "data/entities.parquet", "-f", f"{view}:{feature}",
                    "-o", str(store.repo_path / f"out{n}.parquet")]
        elif action == "read_online":
            args = ["online", "get", "-f", f"{view}:{feature}", "-e", "rider_id=1"]
        elif action == "write":
            args = ["ingest", view, f"data/{view}.parquet"]
        elif action == "quarantine":
            args = ["quarantine", store.commits(view)[0].commit_id, "--reason", "matrix"]
        elif action == "deprecate":
            args = ["deprecate", f"{view}@1", "--reason", "matrix"]
        else:  # apply: the repository's definitions with this view's description changed
            monkeypatch.setenv(f"DESC_{view}", f"cli cell {n}")
            args = ["apply"]
        monkeypatch.chdir(store.repo_path)
        code = main(["--repo", repo, *args])
        out = capsys.readouterr()
        if code not in (0, 2) or (code == 2 and "permission_denied" not in out.err):
            raise AssertionError(f"{who} {action} {cls}: exit {code}\n{out.out}\n{out.err}")
        allowed = code == 0
        if allowed != expected(who, action, cls):
            wrong.append((who, action, cls, allowed))
        new = deny_entries(store)[len(before):]
        assert len(new) == (0 if allowed else 1), (who, action, cls, new)
        if not allowed:
            assert new[0]["actor"] == who and new[0]["action"] == action
            assert who in out.err
        monkeypatch.delenv("FEATURELEDGER_PRINCIPAL")
        if action == "quarantine" and allowed:
            store.restore(store.commits(view)[0].commit_id, "matrix reset")
        if action == "apply" and allowed:
            monkeypatch.delenv(f"DESC_{view}")
            store.apply(store.load_definitions())
        if action == "deprecate" and allowed:
            for dep in store.deprecations(view=view):
                store.withdraw_deprecation(dep.deprecation_id, "matrix reset")
            store.registry.definitions.set_status("feature_view", view, 1, "active", "reset")
    assert wrong == []


@pytest.mark.parametrize("cache", [False, True])
def test_http_matrix(tmp_path, cache):
    from fastapi.testclient import TestClient

    from featureledger.server.app import create_app

    store = make_repo(tmp_path / "repo", cache=cache)
    try:
        with TestClient(create_app(store)) as client:
            # root reads everything first: with the cache on, the values and the plans are
            # in memory, and must still not be answered to a principal who may not read them
            for view, feature in CLASSES.values():
                r = client.post("/features/online", headers={
                    "Authorization": f"Bearer {TOKENS['root']}"},
                    json={"features": [f"{view}:{feature}"], "entities": {"rider_id": [1]}})
                assert r.status_code == 200
            wrong = []
            for who, action, cls in itertools.product(PRINCIPALS, ("read_online", "write"),
                                                      CLASSES):
                view, feature = CLASSES[cls]
                auth = {"Authorization": f"Bearer {TOKENS.get(who, 'token-never-issued-99')}"}
                before = deny_entries(store)
                if action == "read_online":
                    r = client.post("/features/online", headers=auth, json={
                        "features": [f"{view}:{feature}"], "entities": {"rider_id": [1]}})
                else:
                    row = rows(view).slice(0, 1).to_pylist()[0]
                    row["event_timestamp"] = row["event_timestamp"].isoformat()
                    r = client.post(f"/push/{view}", headers=auth,
                                    json={"rows": [row], "flush": True})
                if who == "mallory":  # no token of the policy: not even authenticated
                    assert r.status_code == 401, r.text
                    assert deny_entries(store) == before
                    continue
                assert r.status_code in (200, 403), r.text
                allowed = r.status_code == 200
                if allowed != expected(who, action, cls):
                    wrong.append((who, action, cls, allowed))
                new = deny_entries(store)[len(before):]
                assert len(new) == (0 if allowed else 1), (who, action, cls, new)
                if not allowed:
                    assert r.json()["error"]["code"] == "permission_denied"
                    assert who in r.json()["error"]["message"]
                    assert new[0]["actor"] == who and new[0]["action"] == action
                elif action == "write":  # the commit names the token's principal
                    assert store.get_commit(r.json()["commit_id"]).user == who
            assert wrong == []
    finally:
        store.close()
