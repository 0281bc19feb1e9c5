"""Data quality: baselines, drift results, alerts, quarantine policy.

New tables only (quality policies per view, the quality check of each commit, alerts and
the sampled online feature log); commit rows are not touched, so a registry upgraded to
this revision reads exactly as before.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quality_policies",
        sa.Column("project", sa.String(64), primary_key=True),
        sa.Column("view_name", sa.String(255), primary_key=True),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "quality_checks",
        sa.Column("check_id", sa.String(64), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("commit_id", sa.String(64), nullable=False),
        sa.Column("view_name", sa.String(255), nullable=False),
        sa.Column("view_version", sa.Integer, nullable=False),
        sa.Column("checked_at", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("result", sa.Text, nullable=False),
    )
    op.create_index("ix_quality_checks_commit", "quality_checks", ["project", "commit_id"])
    op.create_index("ix_quality_checks_view", "quality_checks",
                    ["project", "view_name", "checked_at"])
    op.create_table(
        "quality_alerts",
        sa.Column("alert_id", sa.String(64), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("dedup_key", sa.String(512), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("lineage_node", sa.String(512), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("last_seen_at", sa.BigInteger, nullable=False),
        sa.Column("occurrences", sa.Integer, nullable=False),
        sa.Column("acked_at", sa.BigInteger, nullable=True),
        sa.Column("acked_by", sa.String(255), nullable=True),
    )
    op.create_index("ix_quality_alerts_open", "quality_alerts",
                    ["project", "status", "dedup_key"])
    op.create_table(
        "feature_log",
        sa.Column("log_id", sa.String(64), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("logged_at", sa.BigInteger, nullable=False),
        sa.Column("deployment_id", sa.String(64), nullable=True),
        sa.Column("model_id", sa.String(64), nullable=True),
        sa.Column("features", sa.Text, nullable=False),
    )
    op.create_index("ix_feature_log_target", "feature_log",
                    ["project", "deployment_id", "logged_at"])


def downgrade() -> None:
    op.drop_index("ix_feature_log_target", table_name="feature_log")
    op.drop_table("feature_log")
    op.drop_index("ix_quality_alerts_open", table_name="quality_alerts")
    op.drop_table("quality_alerts")
    op.drop_index("ix_quality_checks_view", table_name="quality_checks")
    op.drop_index("ix_quality_checks_commit", table_name="quality_checks")
    op.drop_table("quality_checks")
    op.drop_table("quality_policies")
