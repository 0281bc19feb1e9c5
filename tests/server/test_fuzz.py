"""Schemathesis against the server's own OpenAPI document: no 5xx, no response that
violates the schema, and 401 for every protected operation without a token.

Each operation is fuzzed with the strategy schemathesis derives from the document, in
positive mode (valid per schema) and negative mode (schema-violating requests).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

TOKEN = "s3cret-token"  # the token configured by tests/server/conftest.py
OPEN = {"/health", "/health/live", "/health/ready"}
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance,
          content_type_conformance]


def operations(store):
    from featureledger.server.app import create_app

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(store),
                                            headers={"Authorization": f"Bearer {TOKEN}"})
    ops = [r.ok() for r in schema.get_all_operations()]
    assert {(o.method.upper(), o.path) for o in ops} >= {
        ("POST", "/features/online"), ("POST", "/push/{view}"), ("GET", "/health"),
        ("GET", "/metrics"), ("GET", "/catalog/{kind}/{name}"), ("GET", "/models/{model}"),
        ("GET", "/deployments/{deployment_id}")}
    return ops


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms(served_store, mode):
    for op in operations(served_store):
        if mode == GenerationMode.NEGATIVE and not (list(op.iter_parameters()) or
                                                    list(op.body)):
            continue  # nothing to send that could violate the schema

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def run(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"},
                                   checks=CHECKS)

        run()


def test_unauthenticated_gets_401(served_store):
    for op in operations(served_store):
        @given(case=op.as_strategy())
        @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def run(case):
            response = case.call(headers={"Authorization": "Bearer not-a-token"})
            if case.path in OPEN:
                assert response.status_code != 401
            else:
                assert response.status_code == 401, (case.method, case.path, response.text)
                assert response.json()["error"]["code"] == "unauthenticated"

        run()
