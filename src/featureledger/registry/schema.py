"""The registry's tables (SQLAlchemy Core). Migrations in ``migrations/`` create them.

Times are stored as integer microseconds since the Unix epoch (UTC): exact, ordered and
identical on SQLite and PostgreSQL. JSON documents are stored as text in canonical form.

Every table has a ``project`` column: several projects share one registry database, and
each sees only its own rows (``registry/scope.py`` holds the condition every query uses and
the check that enforces it). The column is NOT NULL without a default, so an insert that
forgets it fails. Where a name is unique (definitions, experiments, models, lineage nodes),
it is unique per project, so the project leads those keys; ids (``cmt_...``, ``run_...``)
are global UUIDv7s and stay keys on their own.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()
PROJECT_LENGTH = 64


def _project(primary_key: bool = False) -> Column[str]:
    return Column("project", String(PROJECT_LENGTH), nullable=False, primary_key=primary_key)


# Every version of every definition; rows are never updated except ``docs``/``status``.
definitions = Table(
    "definitions",
    metadata,
    _project(primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("definition_hash", String(64), nullable=False),
    Column("spec", Text, nullable=False),  # full definition, canonical JSON (to_dict)
    Column("docs", Text, nullable=False),  # descriptions/owner/tags, updated in place
    Column("docs_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("changes", Text, nullable=False),  # classified changes against the previous version
    Column("breaking_reason", Text, nullable=True),  # --allow-breaking reason, if any
    Column("status", String(16), nullable=False, default="active"),  # active/deprecated/retired
    Column("status_reason", Text, nullable=True),
    Column("stale", Integer, nullable=False, default=0),  # derived view whose parent moved on
)
Index("ix_definitions_hash", definitions.c.project, definitions.c.kind, definitions.c.name,
      definitions.c.definition_hash)

# Monotonic registry generation per project: bumped by every change of that project; caches
# key on it, so one project's writes never invalidate another's caches.
registry_state = Table(
    "registry_state",
    metadata,
    _project(primary_key=True),
    Column("generation", BigInteger, nullable=False),
    # the audit chain's head (revision 0007): last sequence number and entry hash
    Column("audit_seq", BigInteger, nullable=True),
    Column("audit_head", String(64), nullable=True),
)

# One immutable ingestion write into one view version.
commits = Table(
    "commits",
    metadata,
    Column("commit_id", String(64), primary_key=True),
    _project(),
    Column("view_name", String(255), nullable=False),
    Column("view_version", Integer, nullable=False),
    Column("commit_time", BigInteger, nullable=False),  # µs UTC; visibility clock
    Column("user", String(255), nullable=False),
    Column("run_id", String(64), nullable=True),
    Column("source", Text, nullable=False),  # JSON: description, uri, content digest
    Column("steps", Text, nullable=False),  # JSON list: transformation steps with params
    Column("row_count", BigInteger, nullable=False),
    Column("rejected_count", BigInteger, nullable=False, default=0),
    Column("validation", Text, nullable=False),  # JSON validation report
    Column("profile", Text, nullable=False),  # JSON statistics profile
    Column("files", Text, nullable=False),  # JSON list of paths relative to the offline root
    Column("content_digest", String(64), nullable=False),  # sha256 over the stored files
    Column("min_event_ts", BigInteger, nullable=True),
    Column("max_event_ts", BigInteger, nullable=True),
    # committed / quarantined / rolled_back / expired (retention deleted its data)
    Column("status", String(16), nullable=False),
    Column("status_reason", Text, nullable=True),
    Column("status_changed_at", BigInteger, nullable=True),
    # JSON {path: {"size": n[, "sha256": hex]}}: what reconcile checks the files against
    Column("file_manifest", Text, nullable=True),
    # sha256 over every other column as stored (registry/commits.py: seal), taken at insert
    # and at each status change; NULL for rows written before revision 0005
    Column("row_digest", String(64), nullable=True),
)
Index("ix_commits_view", commits.c.project, commits.c.view_name, commits.c.view_version,
      commits.c.commit_time)
Index("ix_commits_run", commits.c.run_id)

# A compacted segment (revision 0006): the rows of several commits of one view version
# rewritten into files clustered by join key and sorted by event time. Every row keeps its
# ``_commit_id`` and ``_commit_time``, so readers pick rows by commit as before; commit rows
# are never changed by compaction. ``active`` segments are where their commits are read
# from; a segment superseded by a newer compaction is ``retired`` (its files stay for a
# grace period, for readers that planned before).
segments = Table(
    "segments",
    metadata,
    Column("segment_id", String(64), primary_key=True),
    _project(),
    Column("view_name", String(255), nullable=False),
    Column("view_version", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("commit_ids", Text, nullable=False),  # JSON list, in commit order
    Column("files", Text, nullable=False),  # JSON list of paths relative to the offline root
    Column("file_manifest", Text, nullable=False),  # JSON {path: {size, rows, key range}}
    Column("content_digest", String(64), nullable=False),  # sha256 over the files, in order
    Column("row_count", BigInteger, nullable=False),
    Column("min_event_ts", BigInteger, nullable=True),
    Column("max_event_ts", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),  # active / retired
    Column("retired_at", BigInteger, nullable=True),
    # sha256 over the other columns but status/retired_at, taken at insert (see
    # registry/segments.py): an edited commit list or file list is refused on read
    Column("row_digest", String(64), nullable=False),
)
Index("ix_segments_view", segments.c.project, segments.c.view_name, segments.c.view_version,
      segments.c.status)

# The result of a historical retrieval.
datasets = Table(
    "datasets",
    metadata,
    Column("dataset_id", String(64), primary_key=True),
    _project(),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("run_id", String(64), nullable=True),
    Column("feature_set", String(255), nullable=True),  # name@version when built from a set
    Column("features", Text, nullable=False),  # JSON list of pinned references
    Column("as_of", BigInteger, nullable=True),
    Column("entity_digest", String(64), nullable=False),
    Column("entity_path", Text, nullable=True),  # stored entity rows, for reproduce()
    Column("content_hash", String(64), nullable=False),
    Column("row_count", BigInteger, nullable=False),
    Column("arrow_schema", Text, nullable=False),
    Column("manifest", Text, nullable=False),  # JSON: everything else (null counts, options)
)
Index("ix_datasets_run", datasets.c.run_id)

# The exact commits a dataset read (also an edge set of the lineage graph).
dataset_commits = Table(
    "dataset_commits",
    metadata,
    Column("dataset_id", String(64), ForeignKey("datasets.dataset_id"), primary_key=True),
    Column("commit_id", String(64), ForeignKey("commits.commit_id"), primary_key=True),
    _project(),
)
Index("ix_dataset_commits_commit", dataset_commits.c.commit_id)

# The lineage graph: one row per edge, written in the same transaction as the operation
# that creates it. Node ids are global ids (cmt_..., ds_..., run_..., mdl_..., dep_...) or
# kind-prefixed names (view:driver_stats@3, feature_set:fraud@2, source:<uri>).
lineage_edges = Table(
    "lineage_edges",
    metadata,
    _project(primary_key=True),
    Column("src", String(512), primary_key=True),
    Column("dst", String(512), primary_key=True),
    Column("relation", String(64), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("details", Text, nullable=True),
)
Index("ix_lineage_dst", lineage_edges.c.project, lineage_edges.c.dst)

# Append-only audit trail of every registry change and every denied request: one hash
# chain per project (revision 0007; see registry/audit.py).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _project(),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("object_kind", String(32), nullable=False),
    Column("object_id", String(255), nullable=False),
    Column("details", Text, nullable=False),
    Column("seq", BigInteger, nullable=True),
    Column("prev_hash", String(64), nullable=True),
    Column("entry_hash", String(64), nullable=True),
    Column("signature", String(64), nullable=True),
    # "allow" or "deny" (revision 0011): what count_denied and the --denied listing read;
    # also inside the hashed details
    Column("decision", String(8), nullable=False, server_default="allow"),
)
Index("ix_audit_decision", audit_log.c.project, audit_log.c.decision, audit_log.c.seq)
Index("ix_audit_object", audit_log.c.project, audit_log.c.object_kind, audit_log.c.object_id)
Index("ix_audit_seq", audit_log.c.project, audit_log.c.seq, unique=True)

# -- tracking (revision 0002): experiments, runs, models, deployments, usage -------------

experiments = Table(
    "experiments",
    metadata,
    Column("experiment_id", String(64), primary_key=True),
    _project(),
    Column("name", String(255), nullable=False),
    Column("description", Text, nullable=False),  # the hypothesis the experiment tests
    Column("tags", Text, nullable=False),  # JSON object
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
    UniqueConstraint("project", "name", name="uq_experiments_project_name"),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    _project(),
    Column("experiment_id", String(64), ForeignKey("experiments.experiment_id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("parent_run_id", String(64), nullable=True),
    Column("status", String(16), nullable=False),  # running / finished / failed / killed
    Column("start_time", BigInteger, nullable=False),
    Column("end_time", BigInteger, nullable=True),
    Column("user", String(255), nullable=False),
    Column("git_commit", String(64), nullable=True),
    Column("git_dirty", Integer, nullable=True),
    Column("source", Text, nullable=True),  # entry point (script) when known
    Column("error", Text, nullable=True),  # why a failed run failed
)
Index("ix_runs_experiment", runs.c.experiment_id, runs.c.start_time)

# External ids of a run in other systems (an MLflow run id), both ways.
run_external_ids = Table(
    "run_external_ids",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.run_id"), primary_key=True),
    Column("system", String(32), primary_key=True),
    _project(),
    Column("external_id", String(255), nullable=False),
)
Index("ix_run_external_ids_ext", run_external_ids.c.project, run_external_ids.c.system,
      run_external_ids.c.external_id)

run_params = Table(
    "run_params",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.run_id"), primary_key=True),
    Column("key", String(255), primary_key=True),
    _project(),
    Column("value", Text, nullable=False),
)

run_metrics = Table(
    "run_metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),  # logging order
    _project(),
    Column("run_id", String(64), ForeignKey("runs.run_id"), nullable=False),
    Column("key", String(255), nullable=False),
    Column("value", Float, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
)
Index("ix_run_metrics_run", run_metrics.c.run_id, run_metrics.c.key, run_metrics.c.step)

run_tags = Table(
    "run_tags",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.run_id"), primary_key=True),
    Column("key", String(255), primary_key=True),
    _project(),
    Column("value", Text, nullable=False),
)

models = Table(
    "models",
    metadata,
    _project(primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("description", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("model_id", String(64), primary_key=True),
    _project(),
    Column("name", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("run_id", String(64), nullable=True),
    Column("artifact_uri", Text, nullable=False),
    Column("feature_set", String(255), nullable=True),  # name@version it consumes, if any
    Column("features", Text, nullable=False),  # JSON list of pinned references, in input order
    Column("description", Text, nullable=False),
    Column("tags", Text, nullable=False),  # JSON object
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
    # the artifact as logged, when it is a local file or folder (see offline.storage.path_digest)
    Column("artifact_sha256", String(64), nullable=True),
    Column("artifact_size", BigInteger, nullable=True),
    ForeignKeyConstraint(["project", "name"], ["models.project", "models.name"],
                         name="fk_model_versions_project_models"),
)
Index("ux_model_versions_name", model_versions.c.project, model_versions.c.name,
      model_versions.c.version, unique=True)
Index("ix_model_versions_run", model_versions.c.run_id)

# One row per feature a model version reads (set-based checks join on it).
model_features = Table(
    "model_features",
    metadata,
    Column("model_id", String(64), ForeignKey("model_versions.model_id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    _project(),
    Column("view_name", String(255), nullable=False),
    Column("view_version", Integer, nullable=False),
    Column("feature", String(255), nullable=False),
)
Index("ix_model_features_view", model_features.c.project, model_features.c.view_name,
      model_features.c.view_version)

# Datasets a model version was trained / validated / tested on. No foreign key to datasets:
# reconciliation reports a dataset that went missing instead of the database hiding it.
model_datasets = Table(
    "model_datasets",
    metadata,
    Column("model_id", String(64), ForeignKey("model_versions.model_id"), primary_key=True),
    Column("dataset_id", String(64), primary_key=True),
    Column("stage", String(16), primary_key=True),  # training / validation / test
    _project(),
)
Index("ix_model_datasets_dataset", model_datasets.c.dataset_id)

deployments = Table(
    "deployments",
    metadata,
    Column("deployment_id", String(64), primary_key=True),
    _project(),
    Column("model_id", String(64), nullable=False),
    Column("model_ref", String(255), nullable=False),  # name@version at deploy time
    Column("environment", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # active / undeployed / superseded
    Column("feature_set", String(255), nullable=True),
    Column("features", Text, nullable=False),  # JSON: the active feature set, pinned
    Column("lineage_snapshot", Text, nullable=False),  # JSON: frozen upstream graph
    Column("deployed_at", BigInteger, nullable=False),
    Column("deployed_by", String(255), nullable=False),
    Column("ended_at", BigInteger, nullable=True),
    Column("ended_by", String(255), nullable=True),
    Column("end_reason", Text, nullable=True),
    Column("description", Text, nullable=False),
)
Index("ix_deployments_env", deployments.c.project, deployments.c.environment,
      deployments.c.status)
Index("ix_deployments_model", deployments.c.model_id)

# A recorded permission for a deployment to keep reading a deprecated or retired version.
deployment_exceptions = Table(
    "deployment_exceptions",
    metadata,
    Column("deployment_id", String(64), ForeignKey("deployments.deployment_id"),
           primary_key=True),
    Column("feature_version", String(255), primary_key=True),  # view@version
    _project(),
    Column("reason", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
)

# Online reads per deployment, feature version and time bucket: counters, never a row per
# request. The project is part of the key, so an upsert can only add to its own counters.
deployment_usage = Table(
    "deployment_usage",
    metadata,
    _project(primary_key=True),
    Column("deployment_id", String(64), primary_key=True),
    Column("feature_version", String(255), primary_key=True),  # view@version
    Column("bucket_start", BigInteger, primary_key=True),  # µs UTC, start of the bucket
    Column("requests", BigInteger, nullable=False),
    Column("rows", BigInteger, nullable=False),
)

# -- access control (revision 0008): the applied access policy, versioned --------------------
# One row per applied version of a project's policy (principals, roles, permissions, hashed
# tokens). The newest version is in force; none means access is open. Tokens appear only as
# salted hashes (governance/tokens.py), never in plain text.
access_policies = Table(
    "access_policies",
    metadata,
    _project(primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("policy_hash", String(64), nullable=False),  # sha256 of the canonical spec
    Column("spec", Text, nullable=False),  # canonical JSON of the policy
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("reason", Text, nullable=True),
)

# -- governance (revision 0009): retention, deprecation schedules, catalog -------------------
# A commit's data deleted by retention keeps its row with status ``expired`` (the time in
# ``status_changed_at``), so datasets that read it can say which commits expired and when.

# Retention per feature view (every version): keep commits younger than ``keep_days``, or
# the newest ``keep_last`` commits; a view without a row keeps everything.
retention_policies = Table(
    "retention_policies",
    metadata,
    _project(primary_key=True),
    Column("view_name", String(255), primary_key=True),
    Column("keep_days", Integer, nullable=True),
    Column("keep_last", Integer, nullable=True),
    Column("reason", Text, nullable=False),
    Column("set_at", BigInteger, nullable=False),
    Column("set_by", String(255), nullable=False),
)

# A deprecation (and, with ``retire_on``, its retirement) of a view, a view version, a
# feature or a feature of one version (``view_version`` / ``feature`` NULL: every one).
# Approval by a principal other than the requester is recorded beside it.
deprecations = Table(
    "deprecations",
    metadata,
    Column("deprecation_id", String(64), primary_key=True),
    _project(),
    Column("view_name", String(255), nullable=False),
    Column("view_version", Integer, nullable=True),
    Column("feature", String(255), nullable=True),
    Column("reason", Text, nullable=False),
    Column("replacement", String(512), nullable=True),
    Column("retire_on", BigInteger, nullable=True),  # µs UTC; reads fail from then on
    Column("requested_at", BigInteger, nullable=False),
    Column("requested_by", String(255), nullable=False),
    Column("forced_reason", Text, nullable=True),  # over active deployments that read it
    Column("approved_at", BigInteger, nullable=True),
    Column("approved_by", String(255), nullable=True),
    Column("withdrawn_at", BigInteger, nullable=True),
    Column("withdrawn_by", String(255), nullable=True),
)
Index("ix_deprecations_view", deprecations.c.project, deprecations.c.view_name)

# Reads of deprecated features, counted per feature, reader (``offline``, ``online`` or a
# deployment id) and hour: counters, never a row per read.
deprecated_reads = Table(
    "deprecated_reads",
    metadata,
    _project(primary_key=True),
    Column("reader", String(64), primary_key=True),
    Column("feature", String(512), primary_key=True),  # view@version:feature
    Column("bucket_start", BigInteger, primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("rows", BigInteger, nullable=False),
)

# The experiment and hypothesis a feature-view version was created for (apply
# --experiment --hypothesis); also a lineage edge experiment -> view version.
version_hypotheses = Table(
    "version_hypotheses",
    metadata,
    _project(primary_key=True),
    Column("view_name", String(255), primary_key=True),
    Column("view_version", Integer, primary_key=True),
    Column("experiment_id", String(64), nullable=False),
    Column("hypothesis", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
)
# -- data quality (revision 0010) -------------------------------------------------------
# A view's quality policy: drift thresholds, baseline, the limits that quarantine a commit.
quality_policies = Table(
    "quality_policies",
    metadata,
    _project(primary_key=True),
    Column("view_name", String(255), primary_key=True),
    Column("policy", Text, nullable=False),  # canonical JSON
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", String(255), nullable=False),
)

# The quality check of a commit (drift against the policy's baseline, rejected rows),
# written when the commit is checked; the commit row itself is sealed and never changes.
quality_checks = Table(
    "quality_checks",
    metadata,
    Column("check_id", String(64), primary_key=True),
    _project(),
    Column("commit_id", String(64), nullable=False),
    Column("view_name", String(255), nullable=False),
    Column("view_version", Integer, nullable=False),
    Column("checked_at", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # ok | drift | failed | skipped
    Column("action", String(16), nullable=False),  # none | alert | quarantine
    Column("result", Text, nullable=False),  # canonical JSON (the drift report and more)
)
Index("ix_quality_checks_commit", quality_checks.c.project, quality_checks.c.commit_id)
Index("ix_quality_checks_view", quality_checks.c.project, quality_checks.c.view_name,
      quality_checks.c.checked_at)

# Alerts: one row per open problem (deduplicated on ``dedup_key`` while open), seen again
# counts up ``occurrences``; acknowledged alerts stay as history.
quality_alerts = Table(
    "quality_alerts",
    metadata,
    Column("alert_id", String(64), primary_key=True),
    _project(),
    Column("dedup_key", String(512), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("severity", String(16), nullable=False),  # info | warning | critical
    Column("subject", String(512), nullable=False),
    Column("message", Text, nullable=False),
    Column("evidence", Text, nullable=False),  # canonical JSON
    Column("lineage_node", String(512), nullable=True),
    Column("status", String(16), nullable=False),  # open | acknowledged
    Column("created_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=False),
    Column("occurrences", Integer, nullable=False),
    Column("acked_at", BigInteger, nullable=True),
    Column("acked_by", String(255), nullable=True),
)
Index("ix_quality_alerts_open", quality_alerts.c.project, quality_alerts.c.status,
      quality_alerts.c.dedup_key)

# Sampled online requests (the feature log), written in batches: one row per sampled
# entity row with the values served, to compare with a model's training data.
feature_log = Table(
    "feature_log",
    metadata,
    Column("log_id", String(64), primary_key=True),
    _project(),
    Column("logged_at", BigInteger, nullable=False),
    Column("deployment_id", String(64), nullable=True),
    Column("model_id", String(64), nullable=True),
    Column("features", Text, nullable=False),  # canonical JSON: {reference: value}
)
Index("ix_feature_log_target", feature_log.c.project, feature_log.c.deployment_id,
      feature_log.c.logged_at)

__all__ = [
    "PROJECT_LENGTH",
    "access_policies",
    "audit_log",
    "commits",
    "dataset_commits",
    "datasets",
    "definitions",
    "deployment_exceptions",
    "deployment_usage",
    "deployments",
    "deprecated_reads",
    "deprecations",
    "experiments",
    "feature_log",
    "lineage_edges",
    "metadata",
    "model_datasets",
    "model_features",
    "model_versions",
    "models",
    "quality_alerts",
    "quality_checks",
    "quality_policies",
    "registry_state",
    "retention_policies",
    "run_external_ids",
    "run_metrics",
    "run_params",
    "run_tags",
    "runs",
    "version_hypotheses",
]
