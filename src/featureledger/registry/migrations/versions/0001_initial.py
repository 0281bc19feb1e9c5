"""Initial registry: definitions, registry state, commits, datasets, lineage edges, audit log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "definitions",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("definition_hash", sa.String(64), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("docs", sa.Text, nullable=False),
        sa.Column("docs_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("changes", sa.Text, nullable=False),
        sa.Column("breaking_reason", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text, nullable=True),
        sa.Column("stale", sa.Integer, nullable=False),
    )
    op.create_index("ix_definitions_hash", "definitions", ["kind", "name", "definition_hash"])
    op.create_table(
        "registry_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO registry_state (id, generation) VALUES (1, 0)")
    op.create_table(
        "commits",
        sa.Column("commit_id", sa.String(64), primary_key=True),
        sa.Column("view_name", sa.String(255), nullable=False),
        sa.Column("view_version", sa.Integer, nullable=False),
        sa.Column("commit_time", sa.BigInteger, nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("steps", sa.Text, nullable=False),
        sa.Column("row_count", sa.BigInteger, nullable=False),
        sa.Column("rejected_count", sa.BigInteger, nullable=False),
        sa.Column("validation", sa.Text, nullable=False),
        sa.Column("profile", sa.Text, nullable=False),
        sa.Column("files", sa.Text, nullable=False),
        sa.Column("content_digest", sa.String(64), nullable=False),
        sa.Column("min_event_ts", sa.BigInteger, nullable=True),
        sa.Column("max_event_ts", sa.BigInteger, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text, nullable=True),
        sa.Column("status_changed_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_commits_view", "commits", ["view_name", "view_version", "commit_time"])
    op.create_index("ix_commits_run", "commits", ["run_id"])
    op.create_table(
        "datasets",
        sa.Column("dataset_id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("feature_set", sa.String(255), nullable=True),
        sa.Column("features", sa.Text, nullable=False),
        sa.Column("as_of", sa.BigInteger, nullable=True),
        sa.Column("entity_digest", sa.String(64), nullable=False),
        sa.Column("entity_path", sa.Text, nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("row_count", sa.BigInteger, nullable=False),
        sa.Column("arrow_schema", sa.Text, nullable=False),
        sa.Column("manifest", sa.Text, nullable=False),
    )
    op.create_index("ix_datasets_run", "datasets", ["run_id"])
    op.create_table(
        "dataset_commits",
        sa.Column("dataset_id", sa.String(64), sa.ForeignKey("datasets.dataset_id"),
                  primary_key=True),
        sa.Column("commit_id", sa.String(64), sa.ForeignKey("commits.commit_id"),
                  primary_key=True),
    )
    op.create_index("ix_dataset_commits_commit", "dataset_commits", ["commit_id"])
    op.create_table(
        "lineage_edges",
        sa.Column("src", sa.String(512), primary_key=True),
        sa.Column("dst", sa.String(512), primary_key=True),
        sa.Column("relation", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("details", sa.Text, nullable=True),
    )
    op.create_index("ix_lineage_dst", "lineage_edges", ["dst"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object_kind", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(255), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_object", "audit_log", ["object_kind", "object_id"])


def downgrade() -> None:
    for table in ("audit_log", "lineage_edges", "dataset_commits", "datasets", "commits", "registry_state",
                  "definitions"):
        op.drop_table(table)
