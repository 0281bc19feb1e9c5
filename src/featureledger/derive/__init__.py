"""Derived views: transformations over parent views, computed into commits.

:mod:`featureledger.derive.service` computes them (incremental, backfill, staleness);
:mod:`featureledger.derive.runner` runs a transformation's SQL on the sandbox or its
Python from source.
"""

from featureledger.derive.service import DeriveProgress, DeriveResult, DeriveService

__all__ = ["DeriveProgress", "DeriveResult", "DeriveService"]
