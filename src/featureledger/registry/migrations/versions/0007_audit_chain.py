"""The audit trail becomes a hash chain: each entry carries its project's sequence number,
the previous entry's hash and its own (see ``registry/audit.py``); the chain's head is kept
in ``registry_state``.

Entries written before this revision are chained in the order they were written (by id),
per project, so ``audit verify`` covers them from here on.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from featureledger.registry.audit import GENESIS, entry_hash

    op.add_column("audit_log", sa.Column("seq", sa.BigInteger, nullable=True))
    op.add_column("audit_log", sa.Column("prev_hash", sa.String(64), nullable=True))
    op.add_column("audit_log", sa.Column("entry_hash", sa.String(64), nullable=True))
    op.add_column("audit_log", sa.Column("signature", sa.String(64), nullable=True))
    op.add_column("registry_state", sa.Column("audit_seq", sa.BigInteger, nullable=True))
    op.add_column("registry_state", sa.Column("audit_head", sa.String(64), nullable=True))

    conn = op.get_bind()
    log = sa.table("audit_log", sa.column("id"), sa.column("project"), sa.column("at"),
                   sa.column("actor"), sa.column("action"), sa.column("object_kind"),
                   sa.column("object_id"), sa.column("details"), sa.column("seq"),
                   sa.column("prev_hash"), sa.column("entry_hash"))
    state = sa.table("registry_state", sa.column("project"), sa.column("generation"),
                     sa.column("audit_seq"), sa.column("audit_head"))
    heads: dict[str, tuple[int, str]] = {}
    rows = conn.execute(sa.select(log).order_by(log.c.id)).fetchall()
    for row in rows:
        seq, prev = heads.get(row.project, (0, GENESIS))
        seq += 1
        digest = entry_hash(project=row.project, seq=seq, at=row.at, actor=row.actor,
                            action=row.action, kind=row.object_kind, object_id=row.object_id,
                            details=row.details, prev_hash=prev)
        conn.execute(log.update().where(log.c.id == row.id).values(
            seq=seq, prev_hash=prev, entry_hash=digest))
        heads[row.project] = (seq, digest)
    known = set(conn.execute(sa.select(state.c.project)).scalars())
    for project, (seq, digest) in heads.items():
        if project in known:
            conn.execute(state.update().where(state.c.project == project).values(
                audit_seq=seq, audit_head=digest))
        else:
            conn.execute(state.insert().values(project=project, generation=0, audit_seq=seq,
                                               audit_head=digest))
    op.create_index("ix_audit_seq", "audit_log", ["project", "seq"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_audit_seq", table_name="audit_log")
    with op.batch_alter_table("audit_log") as batch:
        for name in ("signature", "entry_hash", "prev_hash", "seq"):
            batch.drop_column(name)
    with op.batch_alter_table("registry_state") as batch:
        batch.drop_column("audit_head")
        batch.drop_column("audit_seq")
