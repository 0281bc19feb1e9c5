"""Audit entries carry their decision (``allow`` / ``deny``) in a column of their own.

Denied requests were counted by matching ``"decision":"deny"`` in the entries' JSON
details, which also counted any entry whose details held that pair anywhere (a view
tagged ``decision: deny``, say), and the audit listing filtered denials only after its
row limit. The column is filled from each existing entry's top-level ``decision``; the
details (and so the chain's hashes) are unchanged.

Revision ID: 0011
Revises: 0010
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("decision", sa.String(8), nullable=False,
                                   server_default="allow"))
    op.create_index("ix_audit_decision", "audit_log", ["project", "decision", "seq"])
    conn = op.get_bind()
    t = sa.table("audit_log", sa.column("id", sa.Integer), sa.column("details", sa.Text),
                 sa.column("decision", sa.String))
    # candidates by text, decided by the parsed details' own top-level key
    rows = conn.execute(sa.select(t.c.id, t.c.details).where(
        t.c.details.like('%"decision"%'))).all()
    for row_id, details in rows:
        try:
            value = json.loads(details).get("decision")
        except (ValueError, AttributeError):
            continue
        if isinstance(value, str) and value != "allow":
            conn.execute(t.update().where(t.c.id == row_id).values(decision=value[:8]))


def downgrade() -> None:
    op.drop_index("ix_audit_decision", table_name="audit_log")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("decision")
