"""Applying definitions, with migrations for versions that would start empty.

A new feature-view version reached through changes that keep old rows readable carries
the data of the versions before it (see :mod:`featureledger.model.projection`); any other
new version starts empty. ``apply(..., migrations={"view": "SELECT ..."})`` fills such a
version from the previous version's rows: the SQL (one SELECT in DuckDB's dialect, run on
a sandboxed connection that reads nothing but the relation ``old``) is run over the rows
of each committed commit readable as the previous version, and each result is validated
against the new version (strictly: one bad row refuses the whole apply) and written as a
commit of the new version, with a lineage edge from the commit it was computed from. The
new version, its migrated commits and their edges are one registry transaction: the
version never exists without its data.

After an apply, every new version that has data (carried or migrated) is materialized
online up to where its previous version was, so reads of ``view:feature`` keep being
answered the moment the version changes.

>>> import tempfile
>>> from featureledger import Entity, FeatureStore, FeatureView, Field
>>> store = FeatureStore(tempfile.mkdtemp())
>>> driver = Entity(name="driver", join_keys={"driver_id": "int64"})
>>> v1 = FeatureView(name="stats", entities=["driver"], fields=[Field(name="trips", dtype="int64")])
>>> _ = store.apply([driver, v1])
>>> v2 = FeatureView(name="stats", entities=["driver"],
...                  fields=[Field(name="trips", dtype="int64"), Field(name="km", dtype="float64")])
>>> store.plan([driver, v2]).items[1].notes
['stats@2 reads its own commits and those of stats@1 (no commits yet)']
>>> store.close()
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING

from featureledger.errors import DefinitionError, RetrievalError
from featureledger.events import CommitCompleted
from featureledger.governance.access import AccessControl
from featureledger.governance.policy import Policy, diff_policies
from featureledger.ingest.validation import conform_strict
from featureledger.model.ids import new_id
from featureledger.offline.duckdb.guard import check_query
from featureledger.offline.duckdb.sandbox import SandboxError, query, result_types, single_select
from featureledger.offline.engine import ViewScan
from featureledger.registry.commits import require_sealed
from featureledger.registry.lineage_edges import MIGRATED

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlalchemy.engine import Connection

    from featureledger.context import StoreContext
    from featureledger.model.definitions import Definition, FeatureView
    from featureledger.offline.storage import WrittenFiles
    from featureledger.registry import Plan, PlanItem
    from featureledger.registry.commits import CommitRecord


def _migrated_record(commit_time: int, stored: pa.Table, files: WrittenFiles, *,
                     commit_id: str, view: str, version: int, timestamp_field: str, user: str,
                     run: str | None, source: CommitRecord, sql: str) -> CommitRecord:
    import pyarrow.compute as pc

    from featureledger.registry.commits import CommitRecord

    ts = stored.column(timestamp_field).cast("int64")
    n = stored.num_rows
    return CommitRecord(
        commit_id=commit_id, view_name=view, view_version=version, commit_time=commit_time,
        user=user, run_id=run,
        source={"type": "migration", "from_commit": source.commit_id,
                "from_version": source.view_version},
        steps=[{"step": "migrate", "params": {"sql": sql, "from_commit": source.commit_id,
                                              "from_version": source.view_version}}],
        row_count=n, rejected_count=0,
        validation={"mode": "strict", "rows_checked": n, "rows_valid": n}, profile={},
        files=files.files, content_digest=files.content_digest,
        min_event_ts=pc.min(ts).as_py(), max_event_ts=pc.max(ts).as_py())


class ApplyService:
    """``plan`` and ``apply`` of definitions, with migrations and online follow-up."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    def plan(self, definitions: list[Definition], *,
             migrations: Mapping[str, str] | None = None,
             policy: Policy | None = None) -> Plan:
        """What ``apply`` would do, with every change classified and, for each new
        feature-view version, where its data comes from (``PlanItem.notes``); with
        ``policy``, also how the access policy would change (an item of kind
        ``access_policy``)."""
        check_row_checks_safe(definitions)
        check_transformations_safe(definitions)
        plan = self.ctx.registry.definitions.plan(
            definitions, migrating=self._checked(migrations))
        check_planned_views(plan)
        self._derived_notes(plan)
        if policy is not None:
            plan.items.append(self._policy_item(policy))
        return plan

    def _policy_item(self, policy: Policy) -> PlanItem:
        """The plan item of the access policy: new, a new version (with what changes in
        principals and roles; tokens counted, never shown) or unchanged."""
        from featureledger.model.compat import Change
        from featureledger.registry import PlanItem
        from featureledger.registry.policies import policy_hash

        current = self.ctx.registry.policies.current()
        spec = policy.to_spec()
        if current is not None and current.policy_hash == policy_hash(spec):
            return PlanItem("access_policy", "policy", "unchanged", current.version,
                            current.version, definition=policy)
        changes = [Change(c["change"], c["field"], c["detail"])
                   for c in diff_policies(current.spec if current else None, spec)]
        item = PlanItem("access_policy", "policy", "new" if current is None else "new_version",
                        current.version if current else None,
                        (current.version if current else 0) + 1, changes=changes,
                        definition=policy)
        if current is None:
            item.notes.append("access control starts: everything this policy does not grant "
                              "is denied from now on, on every path (SDK, CLI, server)")
        return item

    def _derived_notes(self, plan: Plan) -> None:
        """Notes on derived views: which of their commits a new parent version makes
        stale, and which are stale already (a parent commit quarantined or rolled back)."""
        from featureledger.registry.derivations import derivation, stale_reasons

        registry = self.ctx.registry
        views = {r.name: r for r in registry.definitions.list("feature_view")}
        children: dict[str, list[str]] = {}
        for r in views.values():
            t = r.definition.transformation
            for name, version in (t.parent_refs() if t is not None else []):
                if version is None:
                    children.setdefault(name, []).append(r.name)
        for item in plan.items:
            if item.kind != "feature_view":
                continue
            if item.action == "new_version" and item.to_version:
                for child in children.get(item.name, []):
                    live = registry.commits.list(child, statuses=("committed",))
                    old = [c for c in live if any(
                        p["view"] == item.name and int(p["version"]) < item.to_version
                        for p in (derivation(c.source) or {}).get("parents", []))]
                    if old:
                        item.notes.append(
                            f"derived view {child!r}: {len(old)} commit(s) read an older "
                            f"version of {item.name}; they become stale with "
                            f"{item.name}@{item.to_version}: run 'featureledger derive "
                            f"{child}' to recompute them")
            if item.name in views and views[item.name].definition.transformation is not None:
                live = registry.commits.list(item.name, statuses=("committed",))
                stale = {c: w for c, w in stale_reasons(registry.db, live).items() if w}
                if stale:
                    first = next(iter(stale.values()))[0]
                    item.notes.append(
                        f"derived view {item.name!r} has {len(stale)} stale commit(s) (e.g. "
                        f"{first}); run 'featureledger derive {item.name}' to recompute them")

    def rollback_definition(self, view: str, to_version: int, *, reason: str) -> Plan:
        """Make ``view``'s definition that of version ``to_version`` again, as a new version
        (nothing is deleted; the new version carries the data the compatibility rules let
        it read, and the online store follows as for any apply). The change is applied
        even where it is breaking, with ``reason`` recorded, and audited as a rollback."""
        from featureledger.errors import StateError

        if not reason or not reason.strip():
            raise StateError("say why: rolling a definition back needs a reason")
        reg = self.ctx.registry
        latest = reg.definitions.get("feature_view", view)
        if to_version >= latest.version:
            raise StateError(
                f"{view}@{to_version} is not older than the latest version "
                f"{latest.ref}; name an earlier version (see 'featureledger versions {view}')")
        old = reg.definitions.get("feature_view", view, to_version)
        plan = self.apply([old.definition], allow_breaking=f"rollback: {reason}")
        reg.db.audit_now("view_rollback:definition", "feature_view", view,
                         {"from_version": latest.version, "to_definition": to_version,
                          "new_version": reg.definitions.get("feature_view", view).version,
                          "reason": reason}, decision="allow")
        return plan

    def apply(self, definitions: list[Definition], *, allow_breaking: str | None = None,
              migrations: Mapping[str, str] | None = None,
              policy: Policy | None = None, experiment: str | None = None,
              hypothesis: str | None = None) -> Plan:
        """Apply ``definitions`` atomically; ``migrations`` maps a view name to the SQL
        that fills its new version from the previous version's rows (relation ``old``);
        ``policy`` becomes the access policy in force, in the same transaction (audited).
        ``experiment`` (a name, created when new, or an ``exp_`` id) and ``hypothesis``
        record, for every feature-view version this apply creates, what it was created to
        test (in the catalog, and as a lineage edge from the experiment).

        With a policy in force, the principal needs ``apply`` on each definition that
        changes and ``admin`` to change the policy; a refusal applies nothing."""
        check_row_checks_safe(definitions)
        check_transformations_safe(definitions)
        sql = self._checked(migrations)
        migrated: list[CommitRecord] = []
        access = self.ctx.part(AccessControl)
        policy_item = self._policy_item(policy) if policy is not None else None
        if access.enabled():
            # each changed definition as it is now and as it would be: a change of owner,
            # tags or region must be allowed on both sides
            registry = self.ctx.registry.definitions
            preview = registry.plan(definitions, migrating=sql)
            access.require("apply", [
                access.object_resource(d, i.kind) for i in preview.changed
                for d in ([i.definition] if not i.from_version
                          else [registry.get(i.kind, i.name, i.from_version).definition,
                                i.definition])], what="an apply")
            if policy_item is not None and policy_item.action != "unchanged":
                access.require_admin(what="an apply of the access policy")
        experiment_id = self._experiment(experiment, hypothesis)

        def migrate(conn: Connection, plan: Plan) -> None:
            # the views are complete here (join keys from their entities): a check that
            # names no column of its view, or does not bind, refuses the whole apply
            check_planned_views(plan)
            for item in plan.items:
                if item.kind == "feature_view" and item.name in sql:
                    if not item.migration:
                        raise DefinitionError(
                            f"feature view {item.name!r}: its new version "
                            f"{item.name}@{item.to_version} carries the data of "
                            f"{item.name}@{item.from_version} already; a migration is only "
                            "for a version that would start empty. Drop the migration")
                    migrated.extend(self._migrate(conn, item, sql[item.name]))
            if policy is not None and policy_item is not None \
                    and policy_item.action != "unchanged":
                self.ctx.registry.policies.write(
                    conn, policy.to_spec(), reason=None,
                    changes=[{"change": c.change, "field": c.field, "detail": c.detail}
                             for c in policy_item.changes])
            if experiment_id is not None and hypothesis is not None:
                for item in plan.items:
                    if item.kind == "feature_view" and item.action in ("new", "new_version"):
                        self.ctx.registry.lifecycle.record_hypothesis(
                            conn, item.name, item.to_version or 1, experiment_id,
                            hypothesis.strip())

        plan = self.ctx.registry.definitions.apply(
            definitions, allow_breaking=allow_breaking, migrating=sql,
            within=migrate)
        if policy_item is not None:
            plan.items.append(policy_item)
        for record in migrated:  # visible now that the transaction committed
            self.ctx.events.emit(CommitCompleted(commit=record, source="migration"))
        self._follow_online(plan)
        self._derived_notes(plan)
        return plan

    def _experiment(self, experiment: str | None, hypothesis: str | None) -> str | None:
        """The id of the experiment new versions are created for (created when new)."""
        if experiment is None and hypothesis is None:
            return None
        if not experiment or not experiment.strip() or not hypothesis or not hypothesis.strip():
            raise DefinitionError(
                "an experiment and a hypothesis go together: pass both (CLI --experiment "
                "NAME --hypothesis 'TEXT'), e.g. experiment='eta-v2', hypothesis='trip "
                "distance improves ETA error'")
        runs = self.ctx.registry.runs
        if experiment.startswith("exp_"):
            return runs.get_experiment(experiment).experiment_id
        return runs.create_experiment(experiment.strip(), exist_ok=True).experiment_id

    def _checked(self, migrations: Mapping[str, str] | None) -> dict[str, str]:
        out = {}
        for view, text in (migrations or {}).items():
            if not isinstance(text, str) or not text.strip():
                raise DefinitionError(f"the migration of {view!r} is empty; give one SELECT "
                                      "over the relation 'old'")
            try:
                single_select(text, f"the migration of {view!r}")
            except RetrievalError as exc:
                raise DefinitionError(str(exc)) from None
            out[view] = check_query(text, f"the migration of {view!r}", ["old"],
                                    DefinitionError)
        return out

    # -- migrations -----------------------------------------------------------------------
    def _migrate(self, conn: Connection, item: PlanItem, sql: str) -> list[CommitRecord]:
        """Run ``sql`` over each commit readable as the previous version; commit each result
        as a commit of the new version (inside the apply's transaction ``conn``)."""
        from featureledger.context import current_run_id
        from featureledger.ingest.commit import commit_in

        registry = self.ctx.registry
        name, new, prev = item.name, item.to_version or 1, item.from_version or 1
        registry.db.lock(conn, f"commit:{name}")
        chain = registry.definitions.data_chain(name, prev, conn=conn)
        old_view = registry.definitions.get("feature_view", name, prev, conn=conn).definition
        new_view: FeatureView = item.definition
        commits = registry.commits.list(name, versions=[p.version for p in chain])
        require_sealed(commits, "migrated")  # an edited row is not copied into a new version
        run = current_run_id()
        written: list[WrittenFiles] = []
        records: list[CommitRecord] = []
        engine = self.ctx.engine
        try:
            for c in commits:
                if not c.row_count:
                    continue
                rows = engine.rows(ViewScan.of(
                    join_keys=list(old_view.join_keys), timestamp_field=old_view.timestamp_field,
                    created_field=old_view.created_timestamp_field,
                    features=old_view.feature_names, output_names=old_view.feature_names,
                    dtypes=[f.dtype for f in old_view.fields], ttl_us=None,
                    store=self.ctx.offline_store,
                    commits=[c], chain=chain, tie_break=False, event_range=None))
                # a fixed row order, so the migrated commit's files are reproducible
                rows = rows.sort_by([(k, "ascending") for k in
                                     [*old_view.join_keys, old_view.timestamp_field]])
                result = self._run_sql(sql, rows, f"{name}@{prev}", c.commit_id)
                data = conform_strict(
                    new_view, result, f"migration of {c.commit_id} into {name}@{new}",
                    "Fix the rows (or the SQL that made them) to match the view's schema "
                    "and checks.")
                commit_id = new_id("cmt")
                build = functools.partial(
                    _migrated_record, commit_id=commit_id, view=name, version=new,
                    timestamp_field=new_view.timestamp_field, user=registry.actor, run=run,
                    source=c, sql=sql)
                committed, _, files = commit_in(
                    self.ctx, conn, view=name, version=new, commit_id=commit_id, rows=data,
                    build=build, source_uri=None, run=run,
                    audit={"source": "migration", "from_commit": c.commit_id},
                    edges=[(c.commit_id, commit_id, MIGRATED)])
                written.append(files)
                records.append(committed)
        except BaseException:
            for files in written:  # the transaction rolls back: so must the files
                self.ctx.offline_store.remove_commit_files(files.files)
            raise
        return records

    def _run_sql(self, sql: str, rows: pa.Table, old: str, commit_id: str) -> pa.Table:
        try:
            return query(sql, {"old": rows})
        except SandboxError as exc:
            raise DefinitionError(
                f"the migration SQL failed on the rows of {commit_id} ({old}): "
                f"{exc.first_line}. It runs over the relation 'old' (the previous version's "
                "columns) and must return the new version's columns") from None

    # -- online ---------------------------------------------------------------------------
    def _follow_online(self, plan: Plan) -> None:
        """Materialize each new version with data as far as its previous version was."""
        items = [i for i in plan.items
                 if i.kind == "feature_view" and i.action == "new_version"
                 and not i.starts_empty and i.from_version and i.to_version]
        if not items:
            return
        from featureledger.online.materialization import MaterializationService

        online = self.ctx.part(MaterializationService)
        for item in items:
            name, old, new = item.name, item.from_version or 1, item.to_version or 1
            try:
                done = online.follow_version(name, old, new)
            except Exception as exc:  # the apply stands; say what is left to do
                item.notes.append(f"{name}@{new} is not yet online ({exc}); run "
                                  "'featureledger materialize' to load it")
                continue
            if done is not None:
                item.notes.append(f"{name}@{new} materialized online as far as "
                                  f"{name}@{old} was ({done} keys)")


# -- row checks at apply ----------------------------------------------------------------------
def check_row_checks_safe(definitions: list[Definition]) -> None:
    """Refuse, before anything is planned, a view whose row check is not one expression the
    SQL guard accepts (a DefinitionError naming the view, the check and what is wrong)."""
    from featureledger.model.definitions import FeatureView
    from featureledger.offline.duckdb.guard import check_expression

    for d in definitions:
        if isinstance(d, FeatureView):
            for chk in d.checks:
                check_expression(chk.expr, f"feature view {d.name!r}, row check "
                                           f"{chk.name!r}:", DefinitionError)


def check_transformations_safe(definitions: list[Definition]) -> None:
    """Refuse, before anything is planned, a derived view whose SQL the guard does not
    accept (one SELECT over its parents, no table function, no COPY/ATTACH/INSTALL ...)."""
    from featureledger.model.definitions import FeatureView

    for d in definitions:
        if isinstance(d, FeatureView) and d.transformation is not None \
                and d.transformation.language == "sql":
            t = d.transformation
            relations = [name for name, _ in t.parent_refs()] + (["params"] if t.params else [])
            what = f"the transformation of derived view {d.name!r}"
            try:
                single_select(t.code, what)
            except RetrievalError as exc:
                raise DefinitionError(str(exc)) from None
            check_query(t.code, what, relations, DefinitionError)


def check_planned_views(plan: Plan) -> None:
    """Every new feature-view version of ``plan`` with row checks: each names only the
    view's columns and binds on them to a boolean (checked on an empty table of the
    view's schema, on the sandbox), else a DefinitionError."""
    for item in plan.items:
        if item.kind == "feature_view" and item.action not in ("unchanged", "docs_update") \
                and item.definition is not None and item.definition.checks:
            bind_row_checks(item.definition)


def bind_row_checks(view: FeatureView) -> None:
    """Bind every row check of ``view`` on an empty table of its stored schema."""
    from featureledger.ingest.casting import stored_schema
    from featureledger.ingest.validation import row_check

    empty = {"_v": stored_schema(view).empty_table()}
    for chk in view.checks:
        expr = row_check(view, chk.name, chk.expr, DefinitionError)
        try:
            kind = result_types(f"SELECT {expr.sql} AS ok FROM _v", empty)[0]
        except SandboxError as exc:
            raise DefinitionError(
                f"row check {chk.name!r} of feature view {view.name!r} cannot be "
                f"evaluated: {exc.first_line}. A row check is a DuckDB SQL boolean over "
                "the view's columns") from None
        if kind not in ("BOOLEAN", '"NULL"', "NULL"):
            raise DefinitionError(
                f"row check {chk.name!r} of feature view {view.name!r} is of type "
                f"{kind}, not a boolean; write a condition, e.g. 'min_fare <= max_fare'")
