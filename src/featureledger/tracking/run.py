"""The run handle returned by ``store.start_run``.

Used as a context manager it makes itself the active run of the current context (a
``contextvars`` variable, so threads and asyncio tasks each see their own run): every
ingestion and retrieval inside the block is linked to it. Leaving the block normally
marks the run ``finished``; an exception marks it ``failed`` with the error, keeps all
that was logged, and propagates.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from featureledger.context import reset_active_run, set_active_run
from featureledger.registry.tracking_records import MetricPoint, ModelVersion, RunRecord

if TYPE_CHECKING:
    from featureledger.tracking.service import TrackingService


class Run:
    """A running run: log params, metrics, tags and models; end it (or leave the block)."""

    def __init__(self, service: TrackingService, run_id: str, experiment: str) -> None:
        self._service = service
        self.run_id = run_id
        self.experiment = experiment
        self._tokens: list[contextvars.Token[str | None]] = []

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, experiment={self.experiment!r})"

    # -- context -------------------------------------------------------------------------
    def __enter__(self) -> Run:
        self._tokens.append(set_active_run(self.run_id))
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if exc is None:
                self.end("finished")
            elif isinstance(exc, KeyboardInterrupt):
                self.end("killed", error="interrupted")
            else:
                self.end("failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            reset_active_run(self._tokens.pop())

    # -- logging -------------------------------------------------------------------------
    def log_param(self, key: str, value: Any) -> None:
        self._service.log_params(self.run_id, {key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._service.log_params(self.run_id, params)

    def log_metric(self, key: str, value: float, step: int | None = None,
                   timestamp: Any = None) -> MetricPoint:
        """Log one metric value; ``step`` defaults to the next step of that metric."""
        return self._service.log_metrics(self.run_id, {key: value}, step, timestamp)[0]

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None,
                    timestamp: Any = None) -> list[MetricPoint]:
        return self._service.log_metrics(self.run_id, metrics, step, timestamp)

    def set_tag(self, key: str, value: Any) -> None:
        self._service.set_tags(self.run_id, {key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._service.set_tags(self.run_id, tags)

    def log_model(self, name: str, artifact: Any, *, training_dataset: Any = None,
                  validation_dataset: Any = None, test_dataset: Any = None,
                  datasets: list[tuple[Any, str]] | None = None,
                  features: list[str] | None = None, feature_set: str | None = None,
                  description: str = "", tags: Mapping[str, str] | None = None,
                  allow_null_features: str | None = None,
                  registered_model_name: str | None = None) -> ModelVersion:
        """Record model version ``name@N`` produced by this run; see TrackingService.log_model
        (``registered_model_name`` also registers it in MLflow's model registry)."""
        return self._service.log_model(
            self.run_id, name, artifact, training_dataset=training_dataset,
            validation_dataset=validation_dataset, test_dataset=test_dataset,
            datasets=datasets, features=features, feature_set=feature_set,
            description=description, tags=tags, allow_null_features=allow_null_features,
            registered_model_name=registered_model_name)

    def end(self, status: str = "finished", error: str | None = None) -> None:
        self._service.end_run(self.run_id, status, error)

    # -- reading -------------------------------------------------------------------------
    @property
    def info(self) -> RunRecord:
        """The run as stored now (params, latest metrics, datasets, models...)."""
        return self._service.get_run(self.run_id)

    def metric_history(self, key: str) -> list[MetricPoint]:
        return self._service.runs.metric_history(self.run_id, key)
