"""Value objects of the tracking part: experiments, runs, model versions, deployments.

They are plain frozen dataclasses read from the registry; ``to_dict`` gives the JSON form
the CLI and the server print.

>>> m = ModelVersion(model_id="mdl_x", name="fraud", version=2, run_id=None,
...                  artifact_uri="s3://m/2", feature_set=None,
...                  features=["driver_stats@3:trips"], description="", tags={},
...                  created_at=0, created_by="ana")
>>> m.ref, m.feature_versions
('fraud@2', ['driver_stats@3'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from featureledger.model.references import parse_reference
from featureledger.model.timeutil import from_us

DATASET_STAGES = ("training", "validation", "test")
RUN_STATUSES = ("running", "finished", "failed", "killed")


def _iso(us: int | None) -> str | None:
    return None if us is None else from_us(us).isoformat()


def _as_dict(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__}


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    description: str
    tags: dict[str, str]
    created_at: int
    created_by: str

    def to_dict(self) -> dict[str, Any]:
        return {**_as_dict(self), "created_at_iso": _iso(self.created_at)}


@dataclass(frozen=True)
class MetricPoint:
    key: str
    value: float
    step: int
    timestamp: int  # µs UTC


@dataclass(frozen=True)
class RunRecord:
    """A run as stored: identity, status, code version, params, latest metrics, links."""

    run_id: str
    experiment_id: str
    experiment: str
    name: str
    parent_run_id: str | None
    status: str
    start_time: int
    end_time: int | None
    user: str
    git_commit: str | None
    git_dirty: bool | None
    source: str | None
    error: str | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # latest value per key
    tags: dict[str, str] = field(default_factory=dict)
    external_ids: dict[str, str] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)  # datasets the run built or read
    models: list[str] = field(default_factory=list)  # model versions it produced (name@N)
    commits: list[str] = field(default_factory=list)  # commits it wrote

    @property
    def mlflow_run_id(self) -> str | None:
        return self.external_ids.get("mlflow")

    def to_dict(self) -> dict[str, Any]:
        return {**_as_dict(self), "start_time_iso": _iso(self.start_time),
                "end_time_iso": _iso(self.end_time)}


@dataclass(frozen=True)
class ModelVersion:
    """One logged model version, the features it consumes and the data it saw."""

    model_id: str
    name: str
    version: int
    run_id: str | None
    artifact_uri: str
    feature_set: str | None
    features: list[str]  # pinned references, in the model's input order
    description: str
    tags: dict[str, str]
    created_at: int
    created_by: str
    datasets: dict[str, list[str]] = field(default_factory=dict)  # stage -> dataset ids
    # of a local file or folder artifact, taken at log_model (None for a remote URI)
    artifact_sha256: str | None = None
    artifact_size: int | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def feature_versions(self) -> list[str]:
        """The view versions the model reads (``view@N``), in first-use order."""
        out: dict[str, None] = {}
        for f in self.features:
            r = parse_reference(f)
            out[f"{r.view}@{r.version}"] = None
        return list(out)

    def to_dict(self) -> dict[str, Any]:
        return {**_as_dict(self), "ref": self.ref, "feature_versions": self.feature_versions,
                "created_at_iso": _iso(self.created_at)}


@dataclass(frozen=True)
class Deployment:
    """A model version serving in an environment, with what it reads, frozen at deploy time."""

    deployment_id: str
    model_id: str
    model_ref: str
    environment: str
    status: str  # active / undeployed / superseded
    feature_set: str | None
    features: list[str]
    lineage_snapshot: dict[str, Any]
    deployed_at: int
    deployed_by: str
    ended_at: int | None
    ended_by: str | None
    end_reason: str | None
    description: str
    exceptions: dict[str, str] = field(default_factory=dict)  # view@N -> reason

    @property
    def active(self) -> bool:
        return self.status == "active"

    def to_dict(self) -> dict[str, Any]:
        return {**_as_dict(self), "deployed_at_iso": _iso(self.deployed_at),
                "ended_at_iso": _iso(self.ended_at)}


@dataclass(frozen=True)
class RunComparison:
    """Two runs side by side: what differs in params, metrics, features and data."""

    run_a: str
    run_b: str
    params: dict[str, tuple[str | None, str | None]]  # key -> (a, b), every key
    metrics: dict[str, tuple[float | None, float | None]]
    feature_versions: dict[str, tuple[bool, bool]]  # view@N -> (a reads it, b reads it)
    commits_only_a: dict[str, list[str]]  # view@N -> commits only A's datasets read
    commits_only_b: dict[str, list[str]]
    commits_common: int
    datasets: tuple[list[str], list[str]]

    @property
    def differing_params(self) -> list[str]:
        return [k for k, (a, b) in self.params.items() if a != b]

    @property
    def same_data(self) -> bool:
        return not self.commits_only_a and not self.commits_only_b

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "params": {k: list(v) for k, v in self.params.items()},
            "metrics": {k: list(v) for k, v in self.metrics.items()},
            "feature_versions": {k: list(v) for k, v in self.feature_versions.items()},
            "commits_only_a": self.commits_only_a,
            "commits_only_b": self.commits_only_b,
            "commits_common": self.commits_common,
            "datasets": list(self.datasets),
            "differing_params": self.differing_params,
            "same_data": self.same_data,
        }


@dataclass(frozen=True)
class PathDigest:
    """The digest of a model artifact: one file, or a folder of files."""

    kind: str  # "file" or "folder"
    sha256: str
    size: int  # bytes (for a folder: of all its files)
    files: int
