"""Ingestion: reading, shaping, validating and profiling data, and committing it.

``FeatureStore.ingest`` forwards to :class:`IngestionService`; the pieces are usable alone.
"""

from featureledger.ingest.casting import cast_exact, conform, stored_columns, stored_schema
from featureledger.ingest.pipeline import (
    CommitResult,
    IngestionResult,
    IngestionService,
    read_rejected,
)
from featureledger.ingest.profile import profile_table
from featureledger.ingest.sources import InputData, arrow_digest, read_input
from featureledger.ingest.validation import RuleResult, ValidationReport, validate

__all__ = [
    "CommitResult",
    "IngestionResult",
    "IngestionService",
    "InputData",
    "RuleResult",
    "ValidationReport",
    "arrow_digest",
    "cast_exact",
    "conform",
    "profile_table",
    "read_input",
    "read_rejected",
    "stored_columns",
    "stored_schema",
    "validate",
]
