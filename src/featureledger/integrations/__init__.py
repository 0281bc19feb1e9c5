"""Integrations (OpenLineage, MLflow) listen to the store's event bus.

``attach(ctx)`` subscribes the integrations the configuration enables, once per store
context; services call it when they are built, so events flow whichever part runs first.
It imports nothing heavy: the OpenLineage client loads only when OpenLineage is enabled,
and the MLflow link acts only in a process that already imported ``mlflow``.
"""

from __future__ import annotations

from typing import Any


class _Attached:
    """The mark that a context's integrations are subscribed."""


def attach(ctx: Any) -> None:
    """Subscribe the enabled integrations to ``ctx.events`` (idempotent per context)."""
    def build(c: Any) -> _Attached:
        # the MLflow link first: a run it links as the run starts is linked before
        # OpenLineage reports the start (with the MLflow run as its parent)
        if c.config.mlflow.autolink:
            from featureledger.integrations.mlflow import MlflowLink

            c.part(MlflowLink, MlflowLink.attach)
        if c.config.openlineage.enabled:
            from featureledger.integrations.openlineage import OpenLineageEmitter

            c.part(OpenLineageEmitter, OpenLineageEmitter.attach)
        return _Attached()

    ctx.part(_Attached, build)


__all__ = ["attach"]
