"""Compacted segments: the rows of many small commits of one view version rewritten into
a few files clustered by join key and sorted by event time (``offline/compaction.py``).

A new table only; commit rows are not touched, so a registry upgraded to this revision
reads exactly as before until something is compacted.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("segment_id", sa.String(64), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("view_name", sa.String(255), nullable=False),
        sa.Column("view_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("commit_ids", sa.Text, nullable=False),
        sa.Column("files", sa.Text, nullable=False),
        sa.Column("file_manifest", sa.Text, nullable=False),
        sa.Column("content_digest", sa.String(64), nullable=False),
        sa.Column("row_count", sa.BigInteger, nullable=False),
        sa.Column("min_event_ts", sa.BigInteger, nullable=True),
        sa.Column("max_event_ts", sa.BigInteger, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("retired_at", sa.BigInteger, nullable=True),
        sa.Column("row_digest", sa.String(64), nullable=False),
    )
    op.create_index("ix_segments_view", "segments",
                    ["project", "view_name", "view_version", "status"])


def downgrade() -> None:
    op.drop_index("ix_segments_view", table_name="segments")
    op.drop_table("segments")
