"""Definition versions: plan, apply, read, deprecate.

Every applied change of a definition's spec is a new version (1, 2, 3, ...); versions are
never edited. A change of descriptions, owner or tags only updates the docs of the latest
version in place (and is audited). ``apply`` is idempotent: the same definition is a no-op.
"""

from __future__ import annotations

import builtins
import functools
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from featureledger.errors import (
    ConcurrencyError,
    DefinitionError,
    DefinitionTamperedError,
    IncompatibleChangeError,
    NameTooLongError,
    UnknownEntityError,
    UnknownFeatureError,
    UnknownFeatureSetError,
    UnknownViewError,
)
from featureledger.model.compat import (
    Change,
    classify_generic_change,
    classify_view_change,
    violations,
)
from featureledger.model.definitions import (
    Definition,
    Entity,
    FeatureSet,
    FeatureView,
    definition_from_dict,
)
from featureledger.model.hashing import canonical_json, content_hash
from featureledger.model.projection import VersionInfo, VersionProjection, data_chain
from featureledger.model.references import FeatureRef, parse_reference
from featureledger.model.timeutil import now_us
from featureledger.registry import schema
from featureledger.registry.engine import RegistryDB
from featureledger.registry.lineage_edges import (
    DERIVES,
    FEEDS,
    IN_SET,
    feature_set_node,
    file_source_uri,
    record_edges,
    source_node,
    view_node,
)

Action = Literal["unchanged", "new", "new_version", "docs_update"]
_KIND_ORDER = {"entity": 0, "feature_view": 1, "request_view": 2, "feature_set": 3}
_UNKNOWN = {
    "entity": UnknownEntityError,
    "feature_view": UnknownViewError,
    "feature_set": UnknownFeatureSetError,
    "request_view": UnknownViewError,
}
_LABEL = {"entity": "entity", "feature_view": "feature view", "feature_set": "feature set",
          "request_view": "request view"}
# The longest name the store can hold: the registry keeps names in String(255) columns,
# some as "name@version" (audit entries, feature-set pins), and the offline store makes a
# view's name a folder name (at most 255 bytes on common file systems).
NAME_LIMIT = 240


@dataclass(frozen=True)
class DefinitionRecord:
    """One stored version of a definition."""

    kind: str
    name: str
    version: int
    definition: Any
    definition_hash: str
    created_at: int
    created_by: str
    changes: list[dict[str, Any]]
    breaking_reason: str | None
    status: str
    status_reason: str | None
    stale: bool

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class PlanItem:
    kind: str
    name: str
    action: Action
    from_version: int | None
    to_version: int | None
    changes: list[Change] = field(default_factory=list)
    refused: list[Change] = field(default_factory=list)
    compatibility: str | None = None
    definition: Any = None
    # a new feature-view version: the versions whose commits it reads (newest first, with
    # how each is projected) and the committed commits of each
    data_sources: list[dict[str, Any]] = field(default_factory=list)
    starts_empty: bool = False  # a new version (after the first) that carries no data
    migration: bool = False  # a migration fills the new version from the previous one
    notes: list[str] = field(default_factory=list)  # where data comes from, re-pins, ...

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "changes": [_change_dict(c) for c in self.changes],
            "refused": [_change_dict(c) for c in self.refused],
            "data_sources": self.data_sources,
            "starts_empty": self.starts_empty,
            "migration": self.migration,
            "notes": self.notes,
        }


@dataclass
class Plan:
    items: list[PlanItem]
    applied: bool = False
    breaking_reason: str | None = None

    @property
    def refused(self) -> list[PlanItem]:
        return [i for i in self.items if i.refused]

    @property
    def changed(self) -> list[PlanItem]:
        return [i for i in self.items if i.action != "unchanged"]

    def to_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "items": [i.to_dict() for i in self.items]}


def _change_dict(c: Change) -> dict[str, Any]:
    return {"change": c.change, "field": c.field, "detail": c.detail}


@functools.lru_cache(maxsize=256)
def _parsed(spec: str, docs: str) -> Any:
    """The definition a stored spec and docs describe. Definitions are frozen, so one
    parse serves every read of the same text (a view is read several times per retrieval,
    ~2 ms of validation each); the hash check below still runs on every read."""
    return definition_from_dict(_merge_docs(json.loads(spec), json.loads(docs)))


def _row_to_record(row: Any) -> DefinitionRecord:
    """The record of a stored version, refused (DefinitionTamperedError) when its spec no
    longer hashes to the definition hash recorded when it was applied."""
    label = f"{_LABEL.get(row.kind, row.kind)} {row.name}@{row.version}"
    try:
        definition = _parsed(row.spec, row.docs)
    except (ValueError, TypeError) as exc:  # not JSON, or not a definition any more
        raise _tampered(row, label, f"its stored spec no longer parses ({exc})") from None
    # The hash covers what affects data (fields, types, ranges, checks, source, ...): an
    # edit of the spec, or docs that shadow a spec key, changes it. Without this check an
    # edited range passes `plan` as unchanged and validates against the edited bounds.
    if definition.definition_hash != row.definition_hash:
        raise _tampered(row, label, "its stored spec no longer matches its definition hash "
                        f"{row.definition_hash[:12]}")
    return DefinitionRecord(
        kind=row.kind,
        name=row.name,
        version=row.version,
        definition=definition,
        definition_hash=row.definition_hash,
        created_at=row.created_at,
        created_by=row.created_by,
        changes=json.loads(row.changes),
        breaking_reason=row.breaking_reason,
        status=row.status,
        status_reason=row.status_reason,
        stale=bool(row.stale),
    )


def _tampered(row: Any, label: str, what: str) -> DefinitionTamperedError:
    return DefinitionTamperedError(
        f"{label} cannot be loaded: {what}, so it was changed in the registry after it was "
        "applied (versions are never edited). Restore it from the audit trail, which keeps "
        "the spec it was created with: store.registry.definitions.restore_from_audit("
        f"{row.kind!r}, {row.name!r}, {row.version}), or restore the row from a registry "
        "backup. Until then every read of it (plan, apply, ingest, retrieval, listings) is "
        "refused, so no data is checked against an edited spec",
        kind=row.kind, name=row.name, version=row.version)


def docs_match(row: Any) -> bool:
    """Whether a stored version's docs (descriptions, owner, tags) still match their hash."""
    try:
        return bool(content_hash(json.loads(row.docs)) == row.docs_hash)
    except ValueError:
        return False


def _merge_docs(spec: Any, docs: Any) -> Any:
    if isinstance(spec, dict) and isinstance(docs, dict):
        out = dict(spec)
        for k, v in docs.items():
            out[k] = _merge_docs(spec.get(k), v) if isinstance(v, (dict, list)) else v
        return out
    if isinstance(spec, list) and isinstance(docs, list) and len(spec) == len(docs):
        return [_merge_docs(s, d) for s, d in zip(spec, docs, strict=False)]
    return spec if docs in (None, [], {}) else docs


class DefinitionRepository:
    """Reads and writes definition versions."""

    def __init__(self, db: RegistryDB, *, source_base: Path | None = None) -> None:
        self.db = db
        # the project folder: a view's relative source path names a file under it
        self.source_base = source_base

    # -- reads ---------------------------------------------------------------------
    def get(self, kind: str, name: str, version: int | None = None,
            conn: Connection | None = None) -> DefinitionRecord:
        t = schema.definitions
        q = sa.select(t).where(self.db.scope(t), t.c.kind == kind, t.c.name == name)
        q = q.where(t.c.version == version) if version else q.order_by(t.c.version.desc())
        with _maybe(self.db, conn) as c:
            row = c.execute(q.limit(1)).first()
            if row is None:
                existing = [r[0] for r in c.execute(
                    sa.select(t.c.version)
                    .where(self.db.scope(t), t.c.kind == kind, t.c.name == name)
                    .order_by(t.c.version))]
        if row is None:
            label = _LABEL.get(kind, kind)
            if existing:
                raise _UNKNOWN.get(kind, UnknownFeatureError)(
                    f"{label} {name!r} has no version {version}; "
                    f"versions are {', '.join(map(str, existing))}"
                )
            raise _UNKNOWN.get(kind, UnknownFeatureError)(
                f"unknown {label} {name!r}; run 'featureledger list' to see what is "
                "registered, or apply its definition first"
            )
        return _row_to_record(row)

    def view(self, name: str, version: int | None = None) -> DefinitionRecord:
        return self.get("feature_view", name, version)

    def versions(self, kind: str, name: str) -> builtins.list[DefinitionRecord]:
        t = schema.definitions
        with self.db.read() as c:
            rows = c.execute(
                sa.select(t).where(self.db.scope(t), t.c.kind == kind, t.c.name == name)
                .order_by(t.c.version)
            ).all()
        if not rows:
            self.get(kind, name)  # raises the helpful error
        return [_row_to_record(r) for r in rows]

    def list(self, kind: str | None = None, latest_only: bool = True) -> builtins.list[DefinitionRecord]:
        t = schema.definitions
        q = sa.select(t).where(self.db.scope(t))
        if kind:
            q = q.where(t.c.kind == kind)
        if latest_only:
            latest = (
                sa.select(t.c.kind, t.c.name, sa.func.max(t.c.version).label("v"))
                .where(self.db.scope(t))
                .group_by(t.c.kind, t.c.name)
                .subquery()
            )
            q = q.join(latest, sa.and_(t.c.kind == latest.c.kind, t.c.name == latest.c.name,
                                       t.c.version == latest.c.v))
        with self.db.read() as c:
            rows = c.execute(q.order_by(t.c.kind, t.c.name, t.c.version)).all()
        return [_row_to_record(r) for r in rows]

    def names(self, kind: str, among: Collection[str]) -> set[str]:
        """Which of ``among`` name a definition of ``kind`` (one indexed query, nothing
        parsed: what a retrieval asks to tell request views from stored ones)."""
        if not among:
            return set()
        t = schema.definitions
        with self.db.read() as c:
            return set(c.execute(sa.select(t.c.name).distinct().where(
                self.db.scope(t), t.c.kind == kind, t.c.name.in_(sorted(among)))).scalars())

    def data_chain(self, name: str, version: int | None = None,
                   conn: Connection | None = None) -> builtins.list[VersionProjection]:
        """The versions whose commits ``name@version`` reads (newest first: the version
        itself, then each older version it carries data from, with its projection).
        See :mod:`featureledger.model.projection`."""
        t = schema.definitions
        q = sa.select(t).where(self.db.scope(t), t.c.kind == "feature_view", t.c.name == name)
        if version is not None:
            q = q.where(t.c.version <= version)
        with _maybe(self.db, conn) as c:
            rows = c.execute(q.order_by(t.c.version)).all()
        if not rows or (version is not None and rows[-1].version != version):
            self.get("feature_view", name, version, conn=conn)  # raises the helpful error
        infos = [_version_info(_row_to_record(r)) for r in rows]
        return data_chain(infos, infos[-1].version)

    def resolve(self, ref: str | FeatureRef) -> tuple[FeatureRef, DefinitionRecord]:
        """Pin a feature reference to a view version and check the feature exists."""
        r = parse_reference(ref)
        rec = self.get("feature_view", r.view, r.version)
        rec.definition.require_feature(r.feature)  # UnknownFeatureError names the fields
        return r.pinned(rec.version), rec

    # -- plan / apply ----------------------------------------------------------------
    def plan(self, defs: builtins.list[Definition], *,
             migrating: Collection[str] = ()) -> Plan:
        """What ``apply`` would do. ``migrating`` names the views whose new version a
        migration fills (so it does not start empty)."""
        with self.db.read() as conn:
            return self._plan(conn, defs, frozenset(migrating))

    def apply(self, defs: builtins.list[Definition], *, allow_breaking: str | None = None,
              retries: int = 20, migrating: Collection[str] = (),
              within: Callable[[Connection, Plan], None] | None = None) -> Plan:
        """Apply definitions atomically: all planned changes, or nothing.

        A change refused by a view's compatibility mode raises IncompatibleChangeError,
        unless ``allow_breaking`` gives the reason to record. ``within(conn, plan)`` runs
        inside the same transaction after the versions are written (migrations commit
        their rows there, so a new version and its migrated data appear together).
        """
        if allow_breaking is not None and not allow_breaking.strip():
            raise DefinitionError("--allow-breaking needs a reason, e.g. 'backfill planned'")
        last: Exception | None = None
        for _ in range(retries):
            try:
                with self.db.write(lock_key="apply") as conn:
                    plan = self._plan(conn, defs, frozenset(migrating))
                    if plan.refused and allow_breaking is None:
                        raise IncompatibleChangeError(_refusal_message(plan), plan.refused)
                    self._write(conn, plan, allow_breaking)
                    if within is not None:
                        within(conn, plan)
                    plan.applied = True
                    plan.breaking_reason = allow_breaking
                    return plan
            except sa.exc.IntegrityError as exc:  # another writer took the version number
                last = exc
                continue
        raise ConcurrencyError(
            f"apply lost {retries} races in a row with other writers ({last}); retry"
        )

    def _plan(self, conn: Connection, defs: builtins.list[Definition],
              migrating: frozenset[str] = frozenset()) -> Plan:
        seen: dict[tuple[str, str], Definition] = {}
        for d in defs:
            check_name_length(d.kind, d.name)
            key = (d.kind, d.name)
            if key in seen and seen[key] != d:
                raise DefinitionError(
                    f"{_LABEL[d.kind]} {d.name!r} is defined twice with different content; "
                    "keep one definition"
                )
            seen[key] = d
        ordered = sorted(seen.values(), key=lambda d: (_KIND_ORDER[d.kind], d.name))
        pending: dict[tuple[str, str], Definition] = {}
        view_items: dict[str, PlanItem] = {}
        items = []
        for d in ordered:
            notes: builtins.list[str] = []
            d = self._complete(conn, d, pending, view_items, notes)
            pending[(d.kind, d.name)] = d
            item = self._plan_one(conn, d)
            if isinstance(d, FeatureView) and item.action == "new_version":
                self._plan_data(conn, item, d.name in migrating)
                view_items[d.name] = item
            elif isinstance(d, FeatureView) and d.name in migrating:
                raise DefinitionError(
                    f"a migration is given for feature view {d.name!r}, but this apply "
                    "makes no new version of it; drop the migration")
            item.notes.extend(notes)
            items.append(item)
        return Plan(items)

    def _plan_data(self, conn: Connection, item: PlanItem, migrating: bool) -> None:
        """Where a new feature-view version's data comes from, in the plan's words."""
        t = schema.commits
        rows = conn.execute(
            sa.select(schema.definitions).where(self.db.scope(schema.definitions),
                                                schema.definitions.c.kind == "feature_view",
                                                schema.definitions.c.name == item.name)
            .order_by(schema.definitions.c.version)).all()
        infos = [_version_info(_row_to_record(r)) for r in rows]
        new = item.to_version or 1
        infos.append(VersionInfo(new, item.definition, [c.change for c in item.changes],
                                 breaking=bool(item.refused)))
        chain = data_chain(infos, new)
        counts: dict[int, int] = dict(conn.execute(
            sa.select(t.c.view_version, sa.func.count())
            .where(self.db.scope(t), t.c.view_name == item.name, t.c.status == "committed")
            .group_by(t.c.view_version)).all())
        item.data_sources = [{"version": p.version, "projection": p.describe(),
                              "commits": int(counts.get(p.version, 0))} for p in chain[1:]]
        item.starts_empty = len(chain) == 1 and not migrating
        item.migration = migrating
        ref = f"{item.name}@{new}"
        prev = f"{item.name}@{new - 1}"
        if len(chain) > 1:
            parts = [f"{item.name}@{p['version']} ({p['commits']} commits: {p['projection']})"
                     for p in item.data_sources if p["commits"]] or [
                f"{item.name}@{item.data_sources[0]['version']} (no commits yet)"]
            item.notes.append(f"{ref} reads its own commits and those of {', '.join(parts)}")
        else:
            prev_chain = data_chain(infos[:-1], new - 1) if new > 1 else []
            readable = int(sum(counts.get(p.version, 0) for p in prev_chain))
            why = ("a breaking change" if item.refused else
                   "its changes do not keep old rows readable: "
                   + ", ".join(c.change for c in item.changes if not c.cls.carries_data))
            if migrating:
                item.notes.append(f"{ref} does not carry {prev}'s data ({why}); the migration "
                                  f"fills it from the {readable} commits readable as {prev}")
            else:
                item.notes.append(f"{ref} starts empty ({why}): {readable} commits stay "
                                  f"readable as {prev}; ingest into {ref} or apply with a "
                                  "migration to fill it")
        deps = self._deployments_reading(conn, item.name, new - 1)
        for dep_id, model in deps:
            item.notes.append(f"deployment {dep_id} (model {model}) stays on {prev}: "
                              "deployments keep their pinned versions; redeploy to move")

    def _complete(self, conn: Connection, d: Definition,
                  pending: dict[tuple[str, str], Definition],
                  view_items: dict[str, PlanItem] | None = None,
                  notes: builtins.list[str] | None = None) -> Definition:
        """Fill join keys of views from entities and pin feature-set references.

        An unpinned reference follows the view's newest version, except to a new version
        that starts empty: a feature set keeps the version it pins (a note says so).
        """
        view_items = view_items or {}
        notes = notes if notes is not None else []
        if isinstance(d, FeatureView):
            ents: dict[str, Entity] = {}
            for name in d.entities:
                e = pending.get(("entity", name))
                if e is None:
                    try:
                        e = self.get("entity", name, conn=conn).definition
                    except UnknownEntityError:
                        if not d.join_keys:
                            raise UnknownEntityError(
                                f"feature view {d.name!r} uses entity {name!r}, which is "
                                "neither registered nor part of this apply; define it"
                            ) from None
                        continue
                ents[name] = e  # type: ignore[assignment]
            return d.with_join_keys(ents)
        if isinstance(d, FeatureSet):
            pinned = []
            current = self._current_pins(conn, d.name)
            for text in d.features:
                r = parse_reference(text)
                request = self._request_view_pin(conn, r, pending)
                if request is not None:  # a request-time feature: pinned like a view's
                    pinned.append(request)
                    continue
                v = pending.get(("feature_view", r.view))
                latest = self._latest_row(conn, "feature_view", r.view)
                if r.version is None:
                    item = view_items.get(r.view)
                    held = current.get((r.view, r.feature))
                    if item is not None and item.starts_empty and held is not None:
                        version = held
                        view = self.get("feature_view", r.view, version, conn=conn).definition
                        notes.append(
                            f"feature set {d.name!r} keeps {r.view}@{held}:{r.feature}: "
                            f"{r.view}@{item.to_version} starts empty; pin "
                            f"{r.view}@{item.to_version}:{r.feature} explicitly (or migrate "
                            "the old rows) to move it")
                    elif v is not None:
                        version = self._planned_version(conn, v, latest)
                        view = v
                        if held is not None and held != version:
                            notes.append(
                                f"feature set {d.name!r} re-pins {r.view}:{r.feature} from "
                                f"@{held} to @{version}")
                    elif latest is not None:
                        version, view = latest.version, _row_to_record(latest).definition
                    else:
                        raise UnknownViewError(
                            f"feature set {d.name!r} references {text!r}, but feature view "
                            f"{r.view!r} is not registered; apply it first or in the same run"
                        )
                else:
                    version = r.version
                    if v is not None and self._planned_version(conn, v, latest) == version:
                        view = v
                    else:
                        view = self.get("feature_view", r.view, version, conn=conn).definition
                view.require_feature(r.feature)  # type: ignore[union-attr]
                pinned.append(str(r.pinned(version)))
            return d.model_copy(update={"features": pinned})
        return d

    def _request_view_pin(self, conn: Connection, r: Any,
                          pending: dict[tuple[str, str], Definition]) -> str | None:
        """``r`` pinned to a request view's version (the one this apply makes, else the
        newest, else the one named), or None when ``r`` names no request view."""
        from featureledger.model.definitions import RequestFeatureView

        planned = pending.get(("request_view", r.view))
        latest = self._latest_row(conn, "request_view", r.view)
        if planned is None and latest is None:
            return None
        view: Any = planned
        version = self._planned_version(conn, planned, latest) if planned is not None else 0
        if planned is None:
            view, version = _row_to_record(latest).definition, latest.version
        if r.version is not None and r.version != version:
            view = self.get("request_view", r.view, r.version, conn=conn).definition
            version = r.version
        if not isinstance(view, RequestFeatureView):
            return None
        view.field(r.feature)  # UnknownFeatureError names the fields
        return str(r.pinned(version))

    def _current_pins(self, conn: Connection, name: str) -> dict[tuple[str, str], int]:
        """(view, feature) -> version the latest version of feature set ``name`` pins."""
        row = self._latest_row(conn, "feature_set", name)
        if row is None:
            return {}
        out = {}
        for text in _row_to_record(row).definition.features:
            r = parse_reference(text)
            if r.version is not None:
                out[(r.view, r.feature)] = r.version
        return out

    def _deployments_reading(self, conn: Connection, view: str, version: int
                             ) -> builtins.list[tuple[str, str]]:
        """Active deployments whose model reads ``view@version``: (deployment id, model)."""
        dep = schema.deployments
        rows = conn.execute(sa.select(dep.c.deployment_id, dep.c.model_ref, dep.c.features)
                            .where(self.db.scope(dep), dep.c.status == "active")).all()
        out = []
        for r in rows:
            refs = [parse_reference(f) for f in json.loads(r.features or "[]")]
            if any(x.view == view and x.version == version for x in refs):
                out.append((r.deployment_id, r.model_ref))
        return out

    def _planned_version(self, conn: Connection, d: Definition, latest: Any) -> int:
        if latest is None:
            return 1
        return latest.version if latest.definition_hash == d.definition_hash else (
            latest.version + 1
        )

    def _latest_row(self, conn: Connection, kind: str, name: str) -> Any:
        t = schema.definitions
        return conn.execute(
            sa.select(t).where(self.db.scope(t), t.c.kind == kind, t.c.name == name)
            .order_by(t.c.version.desc()).limit(1)
        ).first()

    def _plan_one(self, conn: Connection, d: Definition) -> PlanItem:
        latest = self._latest_row(conn, d.kind, d.name)
        if latest is None:
            return PlanItem(d.kind, d.name, "new", None, 1, definition=d)
        old = _row_to_record(latest).definition
        if latest.definition_hash == d.definition_hash:
            if old.docs() == d.docs():
                return PlanItem(d.kind, d.name, "unchanged", latest.version, latest.version,
                                definition=d)
            changes = (classify_view_change(old, d) if isinstance(d, FeatureView)
                       else classify_generic_change(old, d))
            return PlanItem(d.kind, d.name, "docs_update", latest.version, latest.version,
                            changes, definition=d)
        if isinstance(d, FeatureView):
            changes = classify_view_change(old, d)
            # the mode of the previous version governs the change (a mode cannot waive itself)
            mode = old.compatibility
            refused = violations(changes, mode)
        else:
            changes = classify_generic_change(old, d)
            mode, refused = None, []
        return PlanItem(d.kind, d.name, "new_version", latest.version, latest.version + 1,
                        changes, refused, mode, definition=d)

    def _write(self, conn: Connection, plan: Plan, reason: str | None) -> None:
        t = schema.definitions
        now = now_us()
        for item in plan.items:
            d = item.definition
            if item.action == "unchanged":
                continue
            if item.action == "docs_update":
                conn.execute(
                    t.update()
                    .where(self.db.scope(t), t.c.kind == d.kind, t.c.name == d.name,
                           t.c.version == item.to_version)
                    .values(docs=canonical_json(d.docs()), docs_hash=d.docs_hash)
                )
                self.db.audit(conn, "update_docs", d.kind, f"{d.name}@{item.to_version}",
                              {"changes": [_change_dict(c) for c in item.changes]})
                continue
            conn.execute(
                t.insert().values(
                    project=self.db.project,
                    kind=d.kind,
                    name=d.name,
                    version=item.to_version,
                    definition_hash=d.definition_hash,
                    spec=canonical_json(d.to_dict()),
                    docs=canonical_json(d.docs()),
                    docs_hash=d.docs_hash,
                    created_at=now,
                    created_by=self.db.actor,
                    changes=canonical_json([_change_dict(c) for c in item.changes]),
                    breaking_reason=reason if item.refused else None,
                    status="active",
                    status_reason=None,
                    stale=0,
                )
            )
            record_edges(conn, _definition_edges(d, item.to_version or 1, self.source_base))
            if isinstance(d, FeatureView):
                self._mark_children_stale(conn, d.name)
            self.db.audit(
                conn, "create_version", d.kind, f"{d.name}@{item.to_version}",
                {
                    "definition_hash": d.definition_hash,
                    "changes": [_change_dict(c) for c in item.changes],
                    "breaking_reason": reason if item.refused else None,
                    # the spec as stored, so an edited row can be restored from the trail
                    "spec": d.to_dict(),
                },
            )

    def _mark_children_stale(self, conn: Connection, parent: str) -> None:
        t = schema.definitions
        rows = conn.execute(
            sa.select(t.c.name, t.c.version, t.c.spec)
            .where(self.db.scope(t), t.c.kind == "feature_view")
        ).all()
        for r in rows:
            spec = json.loads(r.spec)
            parents = (spec.get("transformation") or {}).get("parents") or []
            if any(p.split("@")[0] == parent for p in parents):
                conn.execute(
                    t.update()
                    .where(self.db.scope(t), t.c.kind == "feature_view", t.c.name == r.name,
                           t.c.version == r.version)
                    .values(stale=1)
                )

    def restore_from_audit(self, kind: str, name: str, version: int) -> DefinitionRecord:
        """Write back the spec and hash that ``name@version`` was created with, as its
        ``create_version`` audit entry recorded them, after an edit made outside
        featureledger (see :func:`_row_to_record`); audited as ``restore_spec``.

        The spec is checked against the hash recorded beside it before it is written, and a
        version whose row is intact is left alone.
        """
        t, a = schema.definitions, schema.audit_log
        obj = f"{name}@{version}"
        label = f"{_LABEL.get(kind, kind)} {obj}"
        with self.db.write() as conn:
            row = conn.execute(sa.select(t).where(
                self.db.scope(t), t.c.kind == kind, t.c.name == name,
                t.c.version == version)).first()
            if row is None:
                raise _UNKNOWN.get(kind, UnknownFeatureError)(f"{label} is not registered")
            try:
                return _row_to_record(row)  # intact: nothing to restore
            except DefinitionTamperedError:
                pass
            entry = conn.execute(sa.select(a.c.details).where(
                self.db.scope(a), a.c.object_kind == kind, a.c.object_id == obj,
                a.c.action == "create_version").order_by(a.c.id.desc()).limit(1)).scalar()
            details = json.loads(entry) if entry else {}
            spec, want = details.get("spec"), details.get("definition_hash")
            if spec is None or want is None:
                raise DefinitionTamperedError(
                    f"{label}: its audit trail does not hold the spec it was created with "
                    "(versions applied before specs were audited); restore the row from a "
                    "registry backup", kind=kind, name=name, version=version)
            original = definition_from_dict(spec)
            if original.definition_hash != want:
                raise DefinitionTamperedError(
                    f"{label}: the spec in its audit trail does not match the hash recorded "
                    "with it, so the audit trail was edited too; restore the registry from a "
                    "backup", kind=kind, name=name, version=version)
            values: dict[str, Any] = {"spec": canonical_json(spec), "definition_hash": want}
            try:  # docs that shadow a spec key go back to those the version was created with
                merged = definition_from_dict(_merge_docs(spec, json.loads(row.docs)))
                docs_reset = merged.definition_hash != want
            except (ValueError, TypeError):
                docs_reset = True
            if docs_reset:
                values.update(docs=canonical_json(original.docs()),
                              docs_hash=original.docs_hash)
            conn.execute(t.update().where(
                self.db.scope(t), t.c.kind == kind, t.c.name == name,
                t.c.version == version).values(**values))
            self.db.audit(conn, "restore_spec", kind, obj,
                          {"definition_hash": want, "edited_hash": row.definition_hash,
                           "docs_reset": docs_reset})
        return self.get(kind, name, version)

    def set_status(self, kind: str, name: str, version: int, status: str,
                   reason: str | None = None) -> DefinitionRecord:
        """Deprecate or retire a version (the only edit a version ever receives)."""
        self.get(kind, name, version)
        with self.db.write() as conn:
            self.set_status_in(conn, kind, name, version, status, reason)
        return self.get(kind, name, version)

    def set_status_in(self, conn: Connection, kind: str, name: str, version: int,
                      status: str, reason: str | None = None) -> None:
        """:meth:`set_status` inside the caller's write transaction (audited there)."""
        if status not in ("active", "deprecated", "retired"):
            raise DefinitionError(
                f"status {status!r} is not valid; use active, deprecated or retired"
            )
        t = schema.definitions
        conn.execute(
            t.update()
            .where(self.db.scope(t), t.c.kind == kind, t.c.name == name,
                   t.c.version == version)
            .values(status=status, status_reason=reason)
        )
        self.db.audit(conn, f"set_status:{status}", kind, f"{name}@{version}",
                      {"reason": reason})


def check_name_length(kind: str, name: str) -> None:
    """Refuse a definition name longer than the store can hold (see NAME_LIMIT)."""
    size = len(name.encode("utf-8"))
    if max(len(name), size) <= NAME_LIMIT:
        return
    shown = name[:40] + "..."
    length = f"{len(name)} characters" + (f" ({size} bytes)" if size != len(name) else "")
    raise NameTooLongError(
        f"{_LABEL.get(kind, kind)} name {shown!r} is {length}; the registry and the offline "
        f"store hold names of at most {NAME_LIMIT} (bytes in UTF-8). Nothing was applied; "
        "give it a shorter name", column="definitions.name", limit=NAME_LIMIT)


def _version_info(rec: DefinitionRecord) -> VersionInfo:
    return VersionInfo(rec.version, rec.definition, [c["change"] for c in rec.changes],
                       breaking=rec.breaking_reason is not None)


def _definition_edges(d: Definition, version: int, base: Path | None = None
                      ) -> builtins.list[tuple[str, str, str]]:
    if isinstance(d, FeatureView):
        me = view_node(d.name, version)
        edges = []
        path = getattr(d.source, "path", None)
        if path:
            edges.append((source_node(file_source_uri(path, base)), me, FEEDS))
        if d.transformation is not None:
            for parent in d.transformation.parents:
                name, _, v = parent.partition("@")
                if v:
                    edges.append((view_node(name, int(v)), me, DERIVES))
        return edges
    if isinstance(d, FeatureSet):
        me = feature_set_node(d.name, version)
        views = {parse_reference(f) for f in d.features}
        return sorted({(view_node(r.view, r.version or 0), me, IN_SET) for r in views})
    return []


def _refusal_message(plan: Plan) -> str:
    lines = ["apply refused; nothing was applied:"]
    for item in plan.refused:
        for c in item.refused:
            where = f"field {c.field!r}" if c.field else "definition"
            lines.append(
                f"  - {_LABEL[item.kind]} {item.name!r} {where}: {c.change} ({c.detail}) "
                f"is not allowed under compatibility mode {item.compatibility!r}: "
                f"{c.cls.summary}"
            )
    lines.append(
        "Fix the definition, publish it under a new name, or rerun with "
        "--allow-breaking 'REASON' to record the breaking change."
    )
    return "\n".join(lines)


class _maybe:
    """Use the caller's connection, or open a read transaction."""

    def __init__(self, db: RegistryDB, conn: Connection | None) -> None:
        self.db, self.conn = db, conn
        self._cm: Any = None

    def __enter__(self) -> Connection:
        if self.conn is not None:
            return self.conn
        self._cm = self.db.read()
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)
