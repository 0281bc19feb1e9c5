"""File integrity: each commit's file manifest (sizes, side-file digests) and each model
artifact's sha256 and size, recorded when written so that reconcile can check them.

Both are nullable: rows written before this revision have no record, and reconcile falls
back to checking that their files exist.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("commits", sa.Column("file_manifest", sa.Text, nullable=True))
    op.add_column("model_versions", sa.Column("artifact_sha256", sa.String(64), nullable=True))
    op.add_column("model_versions", sa.Column("artifact_size", sa.BigInteger, nullable=True))


def downgrade() -> None:
    # batch mode: SQLite drops a column by copying the table
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("artifact_size")
        batch.drop_column("artifact_sha256")
    with op.batch_alter_table("commits") as batch:
        batch.drop_column("file_manifest")
