"""The documented shapes of the HTTP API (OpenAPI only: the hot paths build none of these)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


JsonScalar = int | float | str | bool | None


class OnlineFeaturesRequest(BaseModel):
    """Feature references (or a feature set) and entity key columns."""

    features: list[str] | None = Field(
        default=None, description="References such as 'driver_stats:trips' or "
        "'driver_stats@2:trips'.")
    feature_set: str | None = Field(default=None, description="NAME or NAME@VERSION.")
    deployment: str | None = Field(default=None, description="A deployment id ('dep_...'): "
                                   "the features its model reads, counted in its usage.")
    entities: dict[str, list[JsonScalar]] = Field(
        description="Join key -> values, one per entity row (at most "
        "server.max_entity_rows rows).")
    full_feature_names: bool = False
    fill_defaults: bool = False


class FeatureColumn(BaseModel):
    name: str
    reference: str
    version: int
    values: list[Any] = Field(description="One value per entity row; a float NaN or "
                              "infinity is the text 'NaN', 'Infinity' or '-Infinity'.")
    statuses: list[Literal["PRESENT", "NULL", "NOT_FOUND", "OUTSIDE_TTL", "DEFAULT"]]
    commits: list[str | None]
    event_timestamps: list[int | None]


class OnlineFeaturesResponse(BaseModel):
    entities: dict[str, list[Any]]
    features: list[FeatureColumn]


class PushRequest(BaseModel):
    rows: list[dict[str, Any]] = Field(min_length=1, description="Rows as objects of "
                                       "column: value (at most server.max_push_rows); "
                                       "times as ISO 8601 text; a float NaN or infinity "
                                       "as the text 'NaN', 'Infinity' or '-Infinity'.")
    flush: bool = Field(default=False, description="Land the rows (with any rows buffered "
                        "for the same view version) in a commit before answering.")


class PushResponse(BaseModel):
    commit_id: str = Field(description="The commit the rows are in: pending until it "
                           "lands, then committed (the rows are durable either way).")


class Definition(BaseModel):
    kind: str
    name: str
    version: int
    status: str
    definition_hash: str
    created_at: int
    created_by: str
    stale: bool
    definition: dict[str, Any]


class ModelVersionDoc(BaseModel):
    """A model version: what it consumes (pinned features) and the data it saw."""

    model_id: str
    name: str
    version: int
    ref: str
    run_id: str | None
    artifact_uri: str
    feature_set: str | None
    features: list[str]
    feature_versions: list[str]
    datasets: dict[str, list[str]]
    description: str
    tags: dict[str, str]
    created_at: int
    created_at_iso: str | None
    created_by: str
    artifact_sha256: str | None
    artifact_size: int | None


class DeploymentDoc(BaseModel):
    """A deployment: the model version, the features it reads, its frozen lineage."""

    deployment_id: str
    model_id: str
    model_ref: str
    environment: str
    status: str
    feature_set: str | None
    features: list[str]
    lineage_snapshot: dict[str, Any]
    deployed_at: int
    deployed_at_iso: str | None
    deployed_by: str
    ended_at: int | None
    ended_at_iso: str | None
    ended_by: str | None
    end_reason: str | None
    description: str
    exceptions: dict[str, str]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, Any] = Field(description="Per backend (registry, online_store, "
                                   "offline_store): ok, ms, age_s of the result, error, "
                                   "breaker; and cache, generation, push statistics.")


class Liveness(BaseModel):
    status: Literal["alive"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    backends: dict[str, Any] = Field(description="Per backend: ok, breaker state, error.")


_RETRY = {"Retry-After": {"description": "Seconds to wait before retrying.",
                          "schema": {"type": "integer"}}}

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not valid JSON."},
    401: {"model": ErrorResponse, "description": "Missing or unknown bearer token."},
    404: {"model": ErrorResponse, "description": "Unknown view, feature or feature set."},
    408: {"model": ErrorResponse, "description": "The body did not arrive within "
          "server.body_timeout_s; the connection is closed."},
    413: {"model": ErrorResponse, "description": "Over a limit: body bytes "
          "(server.max_body_bytes), entity rows or pushed rows."},
    415: {"model": ErrorResponse, "description": "The body is not declared as JSON."},
    422: {"model": ErrorResponse, "description": "The request cannot be answered as given."},
    503: {"model": ErrorResponse, "headers": _RETRY, "description": "A backend is "
          "unavailable (its circuit breaker is open, or it did not answer within "
          "server.request_timeout_s), or the server is overloaded; retry after the "
          "Retry-After seconds."},
}
NO_BODY_ERRORS = {k: v for k, v in ERRORS.items() if k not in (400, 408, 415)}
