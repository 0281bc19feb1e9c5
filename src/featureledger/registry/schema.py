"""The registry's tables (SQLAlchemy Core). Migrations in ``migrations/`` create them.

Times are stored as integer microseconds since the Unix epoch (UTC): exact, ordered and
identical on SQLite and PostgreSQL. JSON documents are stored as text in canonical form.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# Every version of every definition; rows are never updated except ``docs``/``status``.
definitions = Table(
    "definitions",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("definition_hash", String(64), nullable=False),
    Column("spec", Text, nullable=False),  # full definition, canonical JSON (to_dict)
    Column("docs", Text, nullable=False),  # descriptions/owner/tags, updated in place
    Column("docs_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("changes", Text, nullable=False),  # classified changes against the previous version
    Column("breaking_reason", Text, nullable=True),  # --allow-breaking reason, if any
    Column("status", String(16), nullable=False, default="active"),  # active/deprecated/retired
    Column("status_reason", Text, nullable=True),
    Column("stale", Integer, nullable=False, default=0),  # derived view whose parent moved on
)
Index("ix_definitions_hash", definitions.c.kind, definitions.c.name, definitions.c.definition_hash)

# Monotonic registry generation: bumped by every change; caches key on it.
registry_state = Table(
    "registry_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("generation", BigInteger, nullable=False),
)

# One immutable ingestion write into one view version.
commits = Table(
    "commits",
    metadata,
    Column("commit_id", String(64), primary_key=True),
    Column("view_name", String(255), nullable=False),
    Column("view_version", Integer, nullable=False),
    Column("commit_time", BigInteger, nullable=False),  # µs UTC; visibility clock
    Column("user", String(255), nullable=False),
    Column("run_id", String(64), nullable=True),
    Column("source", Text, nullable=False),  # JSON: description, uri, content digest
    Column("steps", Text, nullable=False),  # JSON list: transformation steps with params
    Column("row_count", BigInteger, nullable=False),
    Column("rejected_count", BigInteger, nullable=False, default=0),
    Column("validation", Text, nullable=False),  # JSON validation report
    Column("profile", Text, nullable=False),  # JSON statistics profile
    Column("files", Text, nullable=False),  # JSON list of paths relative to the offline root
    Column("content_digest", String(64), nullable=False),  # sha256 over the stored files
    Column("min_event_ts", BigInteger, nullable=True),
    Column("max_event_ts", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),  # committed / quarantined / rolled_back
    Column("status_reason", Text, nullable=True),
    Column("status_changed_at", BigInteger, nullable=True),
)
Index("ix_commits_view", commits.c.view_name, commits.c.view_version, commits.c.commit_time)
Index("ix_commits_run", commits.c.run_id)

# The result of a historical retrieval.
datasets = Table(
    "datasets",
    metadata,
    Column("dataset_id", String(64), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("run_id", String(64), nullable=True),
    Column("feature_set", String(255), nullable=True),  # name@version when built from a set
    Column("features", Text, nullable=False),  # JSON list of pinned references
    Column("as_of", BigInteger, nullable=True),
    Column("entity_digest", String(64), nullable=False),
    Column("entity_path", Text, nullable=True),  # stored entity rows, for reproduce()
    Column("content_hash", String(64), nullable=False),
    Column("row_count", BigInteger, nullable=False),
    Column("arrow_schema", Text, nullable=False),
    Column("manifest", Text, nullable=False),  # JSON: everything else (null counts, options)
)
Index("ix_datasets_run", datasets.c.run_id)

# The exact commits a dataset read (also an edge set of the lineage graph).
dataset_commits = Table(
    "dataset_commits",
    metadata,
    Column("dataset_id", String(64), ForeignKey("datasets.dataset_id"), primary_key=True),
    Column("commit_id", String(64), ForeignKey("commits.commit_id"), primary_key=True),
)
Index("ix_dataset_commits_commit", dataset_commits.c.commit_id)

# The lineage graph: one row per edge, written in the same transaction as the operation
# that creates it. Node ids are global ids (cmt_..., ds_..., run_..., mdl_..., dep_...) or
# kind-prefixed names (view:driver_stats@3, feature_set:fraud@2, source:<uri>).
lineage_edges = Table(
    "lineage_edges",
    metadata,
    Column("src", String(512), primary_key=True),
    Column("dst", String(512), primary_key=True),
    Column("relation", String(64), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("details", Text, nullable=True),
)
Index("ix_lineage_dst", lineage_edges.c.dst)

# Append-only audit trail of every registry change.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("object_kind", String(32), nullable=False),
    Column("object_id", String(255), nullable=False),
    Column("details", Text, nullable=False),
)
Index("ix_audit_object", audit_log.c.object_kind, audit_log.c.object_id)

__all__ = [
    "audit_log",
    "commits",
    "dataset_commits",
    "datasets",
    "definitions",
    "lineage_edges",
    "metadata",
    "registry_state",
]
