"""Typed events: parts announce what happened, integrations listen.

Each event is one frozen dataclass with one shape; its ``name`` (``commit.completed``,
``dataset.created``, ...) is what integrations such as OpenLineage report. Listeners
subscribe to an event class (or to every event) and receive the event object. A listener
that fails is logged and never breaks the operation that emitted the event.

>>> bus = EventBus()
>>> seen = []
>>> bus.subscribe(GcCompleted, lambda e: seen.append(e.dry_run))
>>> bus.emit(GcCompleted(report=None, dry_run=True))
>>> seen
[True]
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from featureledger.registry.commits import CommitRecord
    from featureledger.registry.datasets import DatasetRecord

log = logging.getLogger("featureledger.events")


@dataclass(frozen=True)
class Event:
    """Something that happened in a store."""

    name: ClassVar[str] = "event"


@dataclass(frozen=True)
class CommitStarted(Event):
    """An ingestion began writing commit ``commit_id`` of ``view@version``."""

    name: ClassVar[str] = "commit.started"
    commit_id: str
    view: str
    version: int
    run_id: str | None
    mode: str


@dataclass(frozen=True)
class CommitCompleted(Event):
    """A commit became visible (``source``: ``ingest``, ``push`` or ``migration``)."""

    name: ClassVar[str] = "commit.completed"
    commit: CommitRecord
    source: str
    schema: Any = None  # the stored Arrow schema, when known
    report: Any = None  # the validation report of an ingestion
    profile: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class CommitFailed(Event):
    """An ingestion failed; nothing of commit ``commit_id`` is visible."""

    name: ClassVar[str] = "commit.failed"
    commit_id: str
    view_ref: str
    error: BaseException


@dataclass(frozen=True)
class CommitStatusChanged(Event):
    """A commit was quarantined, rolled back or restored."""

    name: ClassVar[str] = "commit.status_changed"
    commit: CommitRecord
    previous: str
    reason: str | None


@dataclass(frozen=True)
class GcCompleted(Event):
    """Unreferenced files were removed (or listed, with ``dry_run``)."""

    name: ClassVar[str] = "gc.completed"
    report: Any
    dry_run: bool


@dataclass(frozen=True)
class DatasetCreated(Event):
    """A training set was built and recorded."""

    name: ClassVar[str] = "dataset.created"
    record: DatasetRecord
    run_id: str | None

    @property
    def dataset_id(self) -> str:
        return self.record.dataset_id


@dataclass(frozen=True)
class MaterializeCompleted(Event):
    """A materialization run loaded view versions into the online store."""

    name: ClassVar[str] = "materialize.completed"
    start: int | None
    end: int
    incremental: bool
    views: Sequence[str]
    commits: Sequence[str]
    keys_written: int
    online_store: str


@dataclass(frozen=True)
class RunStarted(Event):
    """A tracking run started."""

    name: ClassVar[str] = "run.started"
    run_id: str
    experiment: str
    experiment_id: str
    parent_run_id: str | None
    params: Mapping[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunLogged(Event):
    """Params, metric points or tags were logged on a run (as stored: params and tags as
    text, each metric point with its step and its time in µs)."""

    name: ClassVar[str] = "run.logged"
    run_id: str
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Sequence[Any] = ()  # MetricPoint
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunCompleted(Event):
    """A tracking run finished."""

    name: ClassVar[str] = "run.completed"
    run_id: str
    status: str


@dataclass(frozen=True)
class RunFailed(Event):
    """A tracking run ended with an error (or was killed)."""

    name: ClassVar[str] = "run.failed"
    run_id: str
    status: str
    error: str | None


@dataclass(frozen=True)
class ModelLogged(Event):
    """A run logged a model version."""

    name: ClassVar[str] = "model.logged"
    model_id: str
    ref: str
    model_name: str
    version: int
    run_id: str | None
    features: Sequence[str]
    feature_set: str | None
    datasets: Mapping[str, Sequence[str]]
    artifact_uri: str


@dataclass(frozen=True)
class DeploymentCreated(Event):
    """A model version was deployed."""

    name: ClassVar[str] = "deployment.created"
    deployment_id: str
    model_id: str
    model_ref: str
    environment: str
    features: Sequence[str]


@dataclass(frozen=True)
class DeploymentEnded(Event):
    """A deployment was ended."""

    name: ClassVar[str] = "deployment.ended"
    deployment_id: str
    model_ref: str
    environment: str
    reason: str | None


E = TypeVar("E", bound=Event)
Listener = Callable[[Any], None]


class EventBus:
    """Synchronous delivery of events to the listeners of their class."""

    def __init__(self) -> None:
        self._listeners: dict[type[Event] | None, list[Listener]] = defaultdict(list)

    def subscribe(self, event: type[E], listener: Callable[[E], None]) -> None:
        """Call ``listener(e)`` for every event ``e`` of class ``event``."""
        self._listeners[event].append(listener)

    def subscribe_all(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(e)`` for every event."""
        self._listeners[None].append(listener)

    def emit(self, event: Event) -> None:
        for listener in [*self._listeners.get(type(event), ()),
                         *self._listeners.get(None, ())]:
            try:
                listener(event)
            except Exception:  # an integration must not break the operation
                log.exception("event listener %r failed on %s", listener, event.name)


__all__ = [
    "CommitCompleted",
    "CommitFailed",
    "CommitStarted",
    "CommitStatusChanged",
    "DatasetCreated",
    "DeploymentCreated",
    "DeploymentEnded",
    "Event",
    "EventBus",
    "GcCompleted",
    "MaterializeCompleted",
    "ModelLogged",
    "RunCompleted",
    "RunFailed",
    "RunStarted",
]
