"""Tracking: experiments, runs (params, metrics, tags, external ids), models and their
features and datasets, deployments, deployment exceptions and usage counters.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = 64


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("experiment_id", sa.String(_ID), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(_ID), primary_key=True),
        sa.Column("experiment_id", sa.String(_ID), sa.ForeignKey("experiments.experiment_id"),
                  nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("parent_run_id", sa.String(_ID), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start_time", sa.BigInteger, nullable=False),
        sa.Column("end_time", sa.BigInteger, nullable=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("git_commit", sa.String(64), nullable=True),
        sa.Column("git_dirty", sa.Integer, nullable=True),
        sa.Column("source", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_runs_experiment", "runs", ["experiment_id", "start_time"])
    op.create_table(
        "run_external_ids",
        sa.Column("run_id", sa.String(_ID), sa.ForeignKey("runs.run_id"), primary_key=True),
        sa.Column("system", sa.String(32), primary_key=True),
        sa.Column("external_id", sa.String(255), nullable=False),
    )
    op.create_index("ix_run_external_ids_ext", "run_external_ids", ["system", "external_id"])
    op.create_table(
        "run_params",
        sa.Column("run_id", sa.String(_ID), sa.ForeignKey("runs.run_id"), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "run_metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(_ID), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_run_metrics_run", "run_metrics", ["run_id", "key", "step"])
    op.create_table(
        "run_tags",
        sa.Column("run_id", sa.String(_ID), sa.ForeignKey("runs.run_id"), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("model_id", sa.String(_ID), primary_key=True),
        sa.Column("name", sa.String(255), sa.ForeignKey("models.name"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(_ID), nullable=True),
        sa.Column("artifact_uri", sa.Text, nullable=False),
        sa.Column("feature_set", sa.String(255), nullable=True),
        sa.Column("features", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
    )
    op.create_index("ux_model_versions_name", "model_versions", ["name", "version"],
                    unique=True)
    op.create_index("ix_model_versions_run", "model_versions", ["run_id"])
    op.create_table(
        "model_features",
        sa.Column("model_id", sa.String(_ID), sa.ForeignKey("model_versions.model_id"),
                  primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("view_name", sa.String(255), nullable=False),
        sa.Column("view_version", sa.Integer, nullable=False),
        sa.Column("feature", sa.String(255), nullable=False),
    )
    op.create_index("ix_model_features_view", "model_features", ["view_name", "view_version"])
    op.create_table(
        "model_datasets",
        sa.Column("model_id", sa.String(_ID), sa.ForeignKey("model_versions.model_id"),
                  primary_key=True),
        sa.Column("dataset_id", sa.String(_ID), primary_key=True),
        sa.Column("stage", sa.String(16), primary_key=True),
    )
    op.create_index("ix_model_datasets_dataset", "model_datasets", ["dataset_id"])
    op.create_table(
        "deployments",
        sa.Column("deployment_id", sa.String(_ID), primary_key=True),
        sa.Column("model_id", sa.String(_ID), nullable=False),
        sa.Column("model_ref", sa.String(255), nullable=False),
        sa.Column("environment", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("feature_set", sa.String(255), nullable=True),
        sa.Column("features", sa.Text, nullable=False),
        sa.Column("lineage_snapshot", sa.Text, nullable=False),
        sa.Column("deployed_at", sa.BigInteger, nullable=False),
        sa.Column("deployed_by", sa.String(255), nullable=False),
        sa.Column("ended_at", sa.BigInteger, nullable=True),
        sa.Column("ended_by", sa.String(255), nullable=True),
        sa.Column("end_reason", sa.Text, nullable=True),
        sa.Column("description", sa.Text, nullable=False),
    )
    op.create_index("ix_deployments_env", "deployments", ["environment", "status"])
    op.create_index("ix_deployments_model", "deployments", ["model_id"])
    op.create_table(
        "deployment_exceptions",
        sa.Column("deployment_id", sa.String(_ID), sa.ForeignKey("deployments.deployment_id"),
                  primary_key=True),
        sa.Column("feature_version", sa.String(255), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "deployment_usage",
        sa.Column("deployment_id", sa.String(_ID), primary_key=True),
        sa.Column("feature_version", sa.String(255), primary_key=True),
        sa.Column("bucket_start", sa.BigInteger, primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("deployment_usage", "deployment_exceptions", "deployments",
                  "model_datasets", "model_features", "model_versions", "models", "run_tags",
                  "run_metrics", "run_params", "run_external_ids", "runs", "experiments"):
        op.drop_table(table)
