"""A store over a repository folder with a given principal and registry, for the
governance tests (several principals share one repository)."""

from __future__ import annotations

from pathlib import Path

from featureledger import FeatureStore
from featureledger.config import load_config


def open_store(root: Path, registry_url: str | None = None, actor: str = "alice"
               ) -> FeatureStore:
    root.mkdir(parents=True, exist_ok=True)
    overrides = {"registry": registry_url} if registry_url else None
    return FeatureStore(root, config=load_config(root, overrides=overrides), actor=actor)
