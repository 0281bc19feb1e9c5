"""Commit seals: each commit row carries a sha256 over its other columns, taken when it is
written and when its status changes, so that an edit made outside featureledger shows.

The column is nullable and existing rows are left without a seal: sealing them now would
vouch for whatever they hold today. ``reconcile`` lists them as unsealed (not as tampered),
and reads serve them as before.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("commits", sa.Column("row_digest", sa.String(64), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite drops a column by copying the table
    with op.batch_alter_table("commits") as batch:
        batch.drop_column("row_digest")
