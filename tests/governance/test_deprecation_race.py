"""A deploy and a deprecation of what it reads, at the same instant, on PostgreSQL.

Each checks the other's rows: a deploy refuses deprecated versions, a deprecation refuses
versions active deployments read. Run concurrently, one must see the other: the deploy is
held after its check until the deprecation had every chance to slip in, and the end state
must never be an active deployment on a version deprecated under it without an exception
or a forced reason.
"""

from __future__ import annotations

import threading

import pytest

from featureledger.errors import StateError
from featureledger.registry.models import ModelRepository
from governance.stores import open_store
from governance.test_deprecation import build, train


@pytest.mark.postgres
def test_a_deprecation_racing_a_deploy_never_strands_the_deployment(tmp_path, pg_url,
                                                                    monkeypatch):
    store = build(tmp_path / "repo", pg_url)
    bob = open_store(tmp_path / "repo", pg_url, actor="bob")
    try:
        train(store)
        checked, go = threading.Event(), threading.Event()
        check = ModelRepository.inactive_feature_versions

        def held(self, conn, model_id):
            out = check(self, conn, model_id)
            checked.set()
            go.wait(10)  # the deploy's transaction stays open after its check
            return out

        monkeypatch.setattr(ModelRepository, "inactive_feature_versions", held)
        outcome: dict[str, object] = {}

        def attempt(name, fn):
            try:
                outcome[name] = fn()
            except Exception as exc:  # the outcome is what the test checks
                outcome[name] = exc

        deploying = threading.Thread(target=attempt, args=(
            "deploy", lambda: store.deploy("m@1", "production")))
        deploying.start()
        assert checked.wait(10)
        deprecating = threading.Thread(target=attempt, args=(
            "deprecate", lambda: bob.deprecate("stats@1", "biased")))
        deprecating.start()
        deprecating.join(1.5)  # done by now unless it waits for the deploy
        go.set()
        deploying.join(20)
        deprecating.join(20)
        deployed, deprecated = outcome["deploy"], outcome["deprecate"]
        assert not isinstance(deployed, Exception), deployed
        assert isinstance(deprecated, StateError), deprecated
        assert "active deployment(s) read it" in str(deprecated)
        assert store.deprecations() == []
        assert store.registry.definitions.get("feature_view", "stats", 1).status == "active"
    finally:
        bob.close()
        store.close()
