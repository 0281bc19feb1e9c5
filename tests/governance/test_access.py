"""Access control beyond the matrix: offline reads of every kind, residency, plan/apply of
the policy, who is recorded, hashed tokens, and a store without a policy."""

from __future__ import annotations

import pytest

from featureledger.errors import ConfigError, DefinitionTamperedError, PermissionDeniedError
from featureledger.governance.policy import load_policy_file, parse_policy
from featureledger.governance.tokens import hash_token, is_token_hash, verify_token
from featureledger.store import FeatureStore
from governance.access_demo import (
    T0,
    TOKENS,
    deny_entries,
    entities,
    make_repo,
    rows,
)


@pytest.fixture
def store(tmp_path):
    s = make_repo(tmp_path / "repo")
    yield s
    s.close()


def _denied_once(store, before, who, action):
    new = deny_entries(store)[len(before):]
    assert len(new) == 1, new
    assert new[0]["actor"] == who and new[0]["action"] == action
    return new[0]


# -- offline reads: windows, datasets, reproduction --------------------------------------------
def test_every_offline_read_is_checked_before_data_is_read(store):
    ds = store.get_historical_features(entities(), ["riders:name", "trips:km"])  # as root
    assert ds.to_pandas()["name"].tolist() == ["ann", "ben", "cy"]
    entity_file = store.ctx.offline_store.uri(ds.manifest["entity"]["path"])
    with store.acting_as("alice"):
        # the trips part alone is readable
        assert store.get_features_in_window("trips", None, None).num_rows == 3
        for read in (lambda: store.get_features_in_window("riders", None, None),
                     lambda: store.get_features_in_window(["riders:name"], T0, None),
                     lambda: store.reproduce(ds.id),
                     lambda: store.get_dataset(ds.id)):
            before = deny_entries(store)
            with pytest.raises(PermissionDeniedError) as err:
                read()
            assert "riders:name" in str(err.value) and "alice" in str(err.value)
            entry = _denied_once(store, before, "alice", "read_offline")
            assert entry["object_id"] == "riders:name"
    # a reproduction refused before its entity rows were read: a missing file is not what
    # it reports
    import pathlib

    pathlib.Path(str(entity_file).removeprefix("file://")).unlink()
    with store.acting_as("alice"), pytest.raises(PermissionDeniedError):
        store.reproduce(ds.id)


def test_one_request_with_several_forbidden_features_is_one_denial(store):
    before = deny_entries(store)
    with store.acting_as("alice"), pytest.raises(PermissionDeniedError) as err:
        store.get_historical_features(entities(), ["trips:km", "riders:name", "eu_trips:km"],
                                      full_feature_names=True)
    entry = _denied_once(store, before, "alice", "read_offline")
    assert sorted(entry["details"]["denied"]) == ["eu_trips:km", "riders:name"]
    assert set(err.value.resources) == {"eu_trips:km", "riders:name"}


# -- residency ------------------------------------------------------------------------------
def test_residency_uses_the_fields_region_before_the_views(tmp_path):
    from featureledger import Entity, FeatureView, Field

    store = FeatureStore(tmp_path, principal="root")
    rider = Entity(name="rider", join_keys={"rider_id": "int64"})
    view = FeatureView(name="mixed", entities=["rider"], tags={"region": "eu"}, fields=[
        Field(name="a", dtype="float64"),
        Field(name="b", dtype="float64", tags={"region": "us"})])
    store.apply([rider, view])
    store.ingest("mixed", rows("eu_trips").append_column("b", rows("trips").column("km"))
                 .rename_columns(["rider_id", "event_timestamp", "a", "b"]))
    policy = parse_policy({
        "principals": {"root": {"roles": ["all"], "regions": ["*"]},
                       "eu_reader": {"roles": ["all"], "regions": ["eu"]},
                       "us_reader": {"roles": ["all"], "regions": ["u*"]}},
        "roles": {"all": [{"actions": ["*"]}]}})
    store.apply([rider, view], policy=policy)
    expect = {("eu_reader", "a"): True, ("eu_reader", "b"): False,
              ("us_reader", "a"): False, ("us_reader", "b"): True}
    for (who, feature), allowed in expect.items():
        before = deny_entries(store)
        with store.acting_as(who):
            try:
                store.get_historical_features(entities(), [f"mixed:{feature}"])
                got = True
            except PermissionDeniedError as exc:
                got = False
                assert "residency" in str(exc)
        assert got == allowed, (who, feature)
        assert len(deny_entries(store)) - len(before) == (0 if allowed else 1)
    # a write is not a read: residency does not limit it
    with store.acting_as("us_reader"):
        commit = store.push("mixed", [{"rider_id": 9, "event_timestamp": T0, "a": 1.0,
                                       "b": 2.0}], flush=True)
    assert store.get_commit(commit).user == "us_reader"
    store.close()


# -- the policy: plan, apply, versions, audit ---------------------------------------------------
def test_policy_plan_apply_is_versioned_diffed_and_audited(store):
    assert store.plan().items[-1].action == "unchanged"
    file = store.repo_path / "policy.yaml"
    text = file.read_text()
    assert "eve: {roles: [analyst]," in text
    file.write_text(text.replace("eve: {roles: [analyst],", "eve: {roles: [analyst, engineer],")
                    + "  auditor:\n    - actions: [read_offline]\n      resources: {owner: ops}\n")
    item = store.plan().items[-1]
    assert (item.kind, item.action, item.from_version, item.to_version) == (
        "access_policy", "new_version", 1, 2)
    changes = {(c.change, c.field) for c in item.changes}
    assert changes == {("principal_changed", "eve"), ("role_added", "auditor")}
    eve = next(c for c in item.changes if c.field == "eve")
    assert "roles analyst -> analyst, engineer" in eve.detail
    # not an administrator: refused, audited once, nothing applied
    before = deny_entries(store)
    with store.acting_as("bob"), pytest.raises(PermissionDeniedError, match="admin"):
        store.apply()
    _denied_once(store, before, "bob", "admin")
    assert store.policy().version == 1
    store.apply()
    assert store.policy().version == 2 and store.policy().created_by == "root"
    entry = store.registry.db.audit_trail(kind="access_policy")[0]
    assert entry["object_id"] == "policy@2" and entry["actor"] == "root"
    assert {c["field"] for c in entry["details"]["changes"]} == {"eve", "auditor"}
    with store.acting_as("eve"):  # the new version is in force at once
        store.ingest("trips", rows("trips"))
    assert [r.version for r in store.registry.policies.history()] == [1, 2]


def test_an_edited_policy_row_is_refused_not_enforced(store):
    import sqlite3

    path = store.config.registry_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:  # an edit behind featureledger's back
        changed = conn.execute("UPDATE access_policies SET spec = replace(spec, "
                               "'\"roles\":[\"analyst\"]', '\"roles\":[\"admin\"]')")
        assert changed.rowcount == 1
        conn.execute("UPDATE registry_state SET generation = generation + 1")
    with store.acting_as("alice"), pytest.raises(DefinitionTamperedError, match="edited"):
        store.get_online_features(["riders:name"], [{"rider_id": 1}])


@pytest.mark.parametrize("text, problem", [
    ("principals: {a: {roles: [nope]}}\nroles: {r: [{actions: [admin]}]}",
     "role(s) ['nope'] that the policy does not define"),
    ("principals: {a: {roles: [r]}}\nroles: {r: [{actions: [fly]}]}", "unknown action"),
    ("principals: {a: {roles: [r], tokens: [s3cret-token-123]}}\n"
     "roles: {r: [{actions: [admin]}]}", "salted hash, never in plain text"),
    ("principals: {a: {roles: [r]}}\nroles: {r: [{actions: [read_online]}]}",
     "no principal may administer"),
    ("principals: {a: {roles: [r], colour: red}}\nroles: {r: [{actions: ['*']}]}",
     "colour"),
])
def test_invalid_policies_are_refused_with_what_to_do(tmp_path, text, problem):
    (tmp_path / "policy.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_policy_file(tmp_path)
    assert problem in str(err.value)


# -- who is recorded ----------------------------------------------------------------------------
def test_commits_datasets_and_runs_record_the_principal(store, monkeypatch):
    monkeypatch.setenv("FEATURELEDGER_USER", "os-user")
    with FeatureStore(store.repo_path, principal="bob") as bob:
        commit = bob.ingest("trips", rows("trips")).commit_id
        with bob.start_run("exp") as run:
            ds = bob.get_historical_features(entities(), ["trips:km"])
        assert bob.get_commit(commit).user == "bob"
        assert bob.get_run(run.run_id).user == "bob"
        assert bob.registry.datasets.get(ds.id).created_by == "bob"
    monkeypatch.setenv("FEATURELEDGER_PRINCIPAL", "eve")
    with FeatureStore(store.repo_path) as eve:
        assert eve.access.principal() == "eve"
        with pytest.raises(PermissionDeniedError, match="'eve' may not write"):
            eve.ingest("trips", rows("trips"))


def test_without_a_policy_access_is_open(tmp_path):
    with FeatureStore(tmp_path, principal="nobody-in-particular") as store:
        from featureledger import Entity, FeatureView, Field

        store.apply([Entity(name="rider", join_keys={"rider_id": "int64"}),
                     FeatureView(name="riders", entities=["rider"], fields=[
                         Field(name="name", dtype="string", tags={"pii": "yes"})])])
        store.ingest("riders", rows("riders").drop_columns(["score"]))
        assert store.policy() is None and not store.access.enabled()
        ds = store.get_historical_features(entities(), ["riders:name"])
        assert ds.to_pandas()["name"].tolist() == ["ann", "ben", "cy"]
        assert deny_entries(store) == []


# -- tokens -----------------------------------------------------------------------------------
def test_tokens_are_salted_hashes():
    a, b = hash_token("same-token-value-1"), hash_token("same-token-value-1")
    assert a != b and is_token_hash(a) and is_token_hash(b)  # a salt each
    assert verify_token("same-token-value-1", a) and verify_token("same-token-value-1", b)
    assert not verify_token("same-token-value-2", a)
    assert not verify_token("same-token-value-1", a[:-4] + "AAA=")
    assert "same-token" not in a
    iterations = int(a.split("$")[1])
    assert iterations >= 100_000


def test_the_server_takes_the_policys_hashed_tokens_and_follows_new_versions(store):
    from featureledger.server.auth import token_map

    tokens = token_map(store)
    assert tokens.verify(TOKENS["alice"].encode()) == "alice"
    assert tokens.lookup(TOKENS["alice"].encode()) == "alice"  # cached: no hashing
    assert tokens.verify(b"token-never-issued-99") is None
    assert tokens.lookup(b"token-never-issued-99") is None  # remembered as unknown
    # alice's token is revoked in a new version: refused from then on
    text = (store.repo_path / "policy.yaml").read_text()
    lines = [ln if not ln.startswith("  alice:") else "  alice: {roles: [analyst]}"
             for ln in text.splitlines()]
    (store.repo_path / "policy.yaml").write_text("\n".join(lines) + "\n")
    store.apply()
    tokens.use_policy(store.policy())
    assert tokens.lookup(TOKENS["alice"].encode()) is not None  # needs verifying again
    assert tokens.verify(TOKENS["alice"].encode()) is None
    assert tokens.verify(TOKENS["bob"].encode()) == "bob"


def test_plain_tokens_and_a_policy_do_not_mix_and_migrate_explicitly(store, capsys):
    from featureledger.cli.main import main
    from featureledger.server.auth import token_map

    cfg = store.repo_path / "featureledger.yaml"
    cfg.write_text(cfg.read_text() + "server: {tokens: {legacy-token-0123456789: svc}}\n")
    with FeatureStore(store.repo_path, principal="root") as again, \
            pytest.raises(ConfigError, match="policy migrate-tokens"):
        token_map(again)
    assert main(["policy", "migrate-tokens", "--repo", str(store.repo_path)]) == 0
    text = (store.repo_path / "policy.yaml").read_text()
    assert "legacy-token-0123456789" not in text
    policy = load_policy_file(store.repo_path)
    assert len(policy.principals["svc"].tokens) == 2
    assert any(verify_token("legacy-token-0123456789", h) for h in policy.principals["svc"].tokens)
    cfg.write_text(cfg.read_text().replace(
        "server: {tokens: {legacy-token-0123456789: svc}}\n", ""))
    with FeatureStore(store.repo_path, principal="root") as again:
        again.apply()
        assert token_map(again).verify(b"legacy-token-0123456789") == "svc"


def test_token_hash_cli_prints_a_hash_never_storing_the_token(capsys, monkeypatch):
    import io

    from featureledger.cli.main import main

    monkeypatch.setattr("sys.stdin", io.StringIO("a-token-read-from-stdin\n"))
    assert main(["policy", "token-hash", "--stdin"]) == 0
    hashed = capsys.readouterr().out.strip()
    assert verify_token("a-token-read-from-stdin", hashed)
    assert main(["policy", "token-hash"]) == 0
    out = capsys.readouterr().out
    token = out.split("stored): ")[1].split()[0]
    assert verify_token(token, out.split("policy.yaml): ")[1].split()[0])


def test_explain_says_why(store, capsys):
    from featureledger.cli.main import main

    repo = str(store.repo_path)
    assert main(["policy", "explain", "read_online", "eu_trips:km", "-p", "alice",
                 "--repo", repo]) == 1
    assert "residency" in capsys.readouterr().out
    assert main(["policy", "explain", "write", "trips", "-p", "svc", "--repo", repo]) == 0
    before = deny_entries(store)
    assert main(["policy", "explain", "admin", "policy", "-p", "mallory", "--repo", repo]) == 1
    assert "not in the access policy" in capsys.readouterr().out
    assert deny_entries(store) == before  # a dry run
    assert main(["policy", "show", "--repo", repo]) == 0
    shown = capsys.readouterr().out
    assert "pbkdf2" not in shown and "analyst" in shown


def test_apply_is_judged_on_the_definition_before_and_after(store):
    """A principal allowed to apply views owned by 'ops' cannot take over another owner's
    view by making it 'ops': the current owner is judged too."""
    file = store.repo_path / "policy.yaml"
    file.write_text(file.read_text().replace(
        "eve: {roles: [analyst],", "eve: {roles: [analyst, ops_apply],")
        + "  ops_apply:\n    - actions: [apply]\n      resources: {owner: ops}\n")
    store.apply()
    defs = store.load_definitions()
    takeover = [d.model_copy(update={"owner": "ops"}) if d.name == "riders" else d
                for d in defs]
    before = deny_entries(store)
    with store.acting_as("eve"), pytest.raises(PermissionDeniedError, match="riders"):
        store.apply(takeover)
    _denied_once(store, before, "eve", "apply")
    assert store.get_view("riders").definition.owner == "crm"
    with store.acting_as("eve"):  # its own views it may change
        store.apply([d.model_copy(update={"description": "by eve"}) if d.name == "trips"
                     else d for d in defs])
    assert store.get_view("trips").definition.description == "by eve"
