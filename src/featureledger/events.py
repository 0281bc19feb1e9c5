"""A small synchronous event bus: parts announce what happened, integrations listen.

Ingestion, materialization, retrieval and tracking emit events (``commit.started``,
``commit.completed``, ``commit.failed``, ``dataset.created``, ``materialize.completed``,
``model.logged``, ...); integrations such as OpenLineage and MLflow subscribe. A listener
that fails is logged and never breaks the operation that emitted the event.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

log = logging.getLogger("featureledger.events")

Listener = Callable[[str, dict[str, Any]], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = defaultdict(list)

    def subscribe(self, pattern: str, listener: Listener) -> None:
        """Listen to one event name, or to every event with ``"*"``."""
        self._listeners[pattern].append(listener)

    def emit(self, name: str, **payload: Any) -> None:
        for listener in [*self._listeners.get(name, ()), *self._listeners.get("*", ())]:
            try:
                listener(name, payload)
            except Exception:  # an integration must not break the operation
                log.exception("event listener %r failed on %s", listener, name)
