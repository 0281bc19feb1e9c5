"""Integrations (OpenLineage, MLflow) listen to the store's event bus.

``attach(ctx)`` subscribes the integrations the configuration enables, once per store
context; services call it when they are built, so events flow whichever part runs first.
It imports nothing heavy: the OpenLineage client loads only when OpenLineage is enabled,
and the MLflow link acts only in a process that already imported ``mlflow``.
"""

from __future__ import annotations

from typing import Any

_ATTACHED = "featureledger.integrations.attached"


def attach(ctx: Any) -> None:
    """Subscribe the enabled integrations to ``ctx.events`` (idempotent per context)."""
    def build(c: Any) -> bool:
        if c.config.openlineage.enabled:
            from featureledger.integrations.openlineage import OpenLineageEmitter

            c.part("featureledger.integrations.openlineage.OpenLineageEmitter",
                   OpenLineageEmitter.attach)
        if c.config.mlflow.autolink:
            from featureledger.integrations.mlflow import MlflowLink

            c.part("featureledger.integrations.mlflow.MlflowLink", MlflowLink.attach)
        return True

    ctx.part(_ATTACHED, build)


__all__ = ["attach"]
