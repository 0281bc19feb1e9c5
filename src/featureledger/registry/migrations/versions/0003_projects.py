"""Projects: every table gets a ``project`` column, and names become unique per project.

Revision ID: 0003
Revises: 0002

Before this revision a registry held one project's rows without saying which, so several
projects sharing a database saw each other's definitions and commits. Now every row names
its project, and what was unique by name is unique by (project, name): definitions,
experiments, models, lineage edges, usage counters and the generation counter.

Rows that exist when the upgrade runs are given to the project of the process that
upgrades (``config.attributes["project"]``, which RegistryDB sets to its own project;
'default' otherwise). A repository's own registry is only ever opened by that repository,
so its rows go to the right project; a registry already shared by several projects before
the upgrade cannot be told apart row by row, so it goes to whichever project opens it
first, as the README says. The upgrade is recorded in that project's audit trail.
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_PROJECT = sa.String(64)

# every table holds project data
_TABLES = ("definitions", "registry_state", "commits", "datasets", "dataset_commits",
           "lineage_edges", "audit_log", "experiments", "runs", "run_external_ids",
           "run_params", "run_metrics", "run_tags", "models", "model_versions",
           "model_features", "model_datasets", "deployments", "deployment_exceptions",
           "deployment_usage")

# tables whose key holds a name (or, for usage counters, a key an upsert conflicts on)
_PRIMARY_KEYS = {
    "definitions": ["project", "kind", "name", "version"],
    "registry_state": ["project"],
    "lineage_edges": ["project", "src", "dst", "relation"],
    "models": ["project", "name"],
    "deployment_usage": ["project", "deployment_id", "feature_version", "bucket_start"],
}

# indexes whose queries now filter on the project first: (table, name, columns, unique)
_INDEXES = [
    ("definitions", "ix_definitions_hash", ["project", "kind", "name", "definition_hash"],
     False),
    ("commits", "ix_commits_view", ["project", "view_name", "view_version", "commit_time"],
     False),
    ("lineage_edges", "ix_lineage_dst", ["project", "dst"], False),
    ("audit_log", "ix_audit_object", ["project", "object_kind", "object_id"], False),
    ("run_external_ids", "ix_run_external_ids_ext", ["project", "system", "external_id"],
     False),
    ("model_versions", "ux_model_versions_name", ["project", "name", "version"], True),
    ("model_features", "ix_model_features_view", ["project", "view_name", "view_version"],
     False),
    ("deployments", "ix_deployments_env", ["project", "environment", "status"], False),
]

# SQLite reflects unnamed constraints; these names let the batch copy drop the old ones
_SQLITE_NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s",
                 "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _project() -> str:
    from featureledger.config import check_project_name

    return check_project_name(context.config.attributes.get("project") or "default")


def upgrade() -> None:
    project = _project()
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in _TABLES:
        # existing rows get the project through the default, which is dropped below so
        # that an insert naming no project fails
        op.add_column(table, sa.Column("project", _PROJECT, nullable=False,
                                       server_default=project))
    if postgres:  # the old foreign key depends on the primary key of models being changed
        op.drop_constraint("model_versions_name_fkey", "model_versions", type_="foreignkey")
    for table in _TABLES:
        # the copied table's columns carry their primary-key flags; the project column's
        # must match the new key, or SQLAlchemy warns that flags and key differ
        override = ((sa.Column("project", _PROJECT, nullable=False, primary_key=True),)
                    if table in _PRIMARY_KEYS and not postgres else ())
        with op.batch_alter_table(table, naming_convention=_SQLITE_NAMES,
                                  reflect_args=override) as b:
            b.alter_column("project", existing_type=_PROJECT, existing_nullable=False,
                           server_default=None)
            if table in _PRIMARY_KEYS:
                if postgres:
                    b.drop_constraint(f"{table}_pkey", type_="primary")
                if table == "registry_state":
                    b.drop_column("id")
                b.create_primary_key(f"pk_{table}", _PRIMARY_KEYS[table])
            for t, name, columns, unique in _INDEXES:
                if t == table:
                    b.drop_index(name)
                    b.create_index(name, columns, unique=unique)
            if table == "experiments":
                b.drop_constraint("experiments_name_key" if postgres else
                                  "uq_experiments_name", type_="unique")
                b.create_unique_constraint("uq_experiments_project_name", ["project", "name"])
            if table == "model_versions":
                if not postgres:
                    b.drop_constraint("fk_model_versions_name_models", type_="foreignkey")
                b.create_foreign_key("fk_model_versions_project_models", "models",
                                     ["project", "name"], ["project", "name"])
    # the adoption is recorded in the adopting project's audit trail, with what it adopted
    counts = {t: op.get_bind().execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar()
              for t in _TABLES if t not in ("registry_state", "audit_log")}
    adopted = {t: int(n) for t, n in counts.items() if n}
    if adopted:
        from featureledger.model.hashing import canonical_json
        from featureledger.model.timeutil import current_user, now_us

        audit = sa.table("audit_log", sa.column("project"), sa.column("at"),
                         sa.column("actor"), sa.column("action"), sa.column("object_kind"),
                         sa.column("object_id"), sa.column("details"))
        op.execute(audit.insert().values(
            project=project, at=now_us(), actor=current_user(), action="adopt_unscoped_rows",
            object_kind="registry", object_id="0003",
            details=canonical_json({"rows": adopted, "reason": "written before projects "
                                    "existed; they belong to the project that upgraded"})))


def downgrade() -> None:
    from featureledger.errors import StateError

    raise StateError(
        "revision 0003 (projects) cannot be downgraded: rows of several projects would "
        "merge into one. Restore a backup taken before the upgrade instead")
