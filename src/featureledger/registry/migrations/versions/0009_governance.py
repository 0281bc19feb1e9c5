"""Governance: retention, deprecation schedules, the catalog's decision log.

New tables only (retention policies, deprecations with their approvals, counters of
deprecated reads, the hypotheses feature versions were created for). Commits expired by
retention keep their rows, with status ``expired``: no column changes, so a registry
upgraded to this revision reads exactly as before until a policy is set.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _project(primary_key: bool = False) -> sa.Column:
    return sa.Column("project", sa.String(64), nullable=False, primary_key=primary_key)


def upgrade() -> None:
    op.create_table(
        "retention_policies",
        _project(primary_key=True),
        sa.Column("view_name", sa.String(255), primary_key=True),
        sa.Column("keep_days", sa.Integer, nullable=True),
        sa.Column("keep_last", sa.Integer, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("set_at", sa.BigInteger, nullable=False),
        sa.Column("set_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "deprecations",
        sa.Column("deprecation_id", sa.String(64), primary_key=True),
        _project(),
        sa.Column("view_name", sa.String(255), nullable=False),
        sa.Column("view_version", sa.Integer, nullable=True),
        sa.Column("feature", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("replacement", sa.String(512), nullable=True),
        sa.Column("retire_on", sa.BigInteger, nullable=True),
        sa.Column("requested_at", sa.BigInteger, nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("forced_reason", sa.Text, nullable=True),
        sa.Column("approved_at", sa.BigInteger, nullable=True),
        sa.Column("approved_by", sa.String(255), nullable=True),
        sa.Column("withdrawn_at", sa.BigInteger, nullable=True),
        sa.Column("withdrawn_by", sa.String(255), nullable=True),
    )
    op.create_index("ix_deprecations_view", "deprecations", ["project", "view_name"])
    op.create_table(
        "deprecated_reads",
        _project(primary_key=True),
        sa.Column("reader", sa.String(64), primary_key=True),
        sa.Column("feature", sa.String(512), primary_key=True),
        sa.Column("bucket_start", sa.BigInteger, primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "version_hypotheses",
        _project(primary_key=True),
        sa.Column("view_name", sa.String(255), primary_key=True),
        sa.Column("view_version", sa.Integer, primary_key=True),
        sa.Column("experiment_id", sa.String(64), nullable=False),
        sa.Column("hypothesis", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("version_hypotheses")
    op.drop_table("deprecated_reads")
    op.drop_index("ix_deprecations_view", table_name="deprecations")
    op.drop_table("deprecations")
    op.drop_table("retention_policies")
