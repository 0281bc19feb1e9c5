"""Definition versions: plan, apply, read, deprecate.

Every applied change of a definition's spec is a new version (1, 2, 3, ...); versions are
never edited. A change of descriptions, owner or tags only updates the docs of the latest
version in place (and is audited). ``apply`` is idempotent: the same definition is a no-op.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from featureledger.errors import (
    ConcurrencyError,
    DefinitionError,
    IncompatibleChangeError,
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
from featureledger.model.hashing import canonical_json
from featureledger.model.references import FeatureRef, parse_reference
from featureledger.model.timeutil import now_us
from featureledger.registry import schema
from featureledger.registry.engine import RegistryDB
from featureledger.registry.lineage_edges import (
    DERIVES,
    FEEDS,
    IN_SET,
    feature_set_node,
    record_edges,
    source_node,
    view_node,
)

Action = Literal["unchanged", "new", "new_version", "docs_update"]
_KIND_ORDER = {"entity": 0, "feature_view": 1, "feature_set": 2}
_UNKNOWN = {
    "entity": UnknownEntityError,
    "feature_view": UnknownViewError,
    "feature_set": UnknownFeatureSetError,
}
_LABEL = {"entity": "entity", "feature_view": "feature view", "feature_set": "feature set"}


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "changes": [_change_dict(c) for c in self.changes],
            "refused": [_change_dict(c) for c in self.refused],
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


def _row_to_record(row: Any) -> DefinitionRecord:
    data = json.loads(row.spec)
    docs = json.loads(row.docs)
    definition = definition_from_dict(_merge_docs(data, docs))
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

    def __init__(self, db: RegistryDB) -> None:
        self.db = db

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

    def resolve(self, ref: str | FeatureRef) -> tuple[FeatureRef, DefinitionRecord]:
        """Pin a feature reference to a view version and check the feature exists."""
        r = parse_reference(ref)
        rec = self.get("feature_view", r.view, r.version)
        rec.definition.field(r.feature)  # raises UnknownFeatureError naming the fields
        return r.pinned(rec.version), rec

    # -- plan / apply ----------------------------------------------------------------
    def plan(self, defs: builtins.list[Definition]) -> Plan:
        with self.db.read() as conn:
            return self._plan(conn, defs)

    def apply(self, defs: builtins.list[Definition], *, allow_breaking: str | None = None,
              retries: int = 20) -> Plan:
        """Apply definitions atomically: all planned changes, or nothing.

        A change refused by a view's compatibility mode raises IncompatibleChangeError,
        unless ``allow_breaking`` gives the reason to record.
        """
        if allow_breaking is not None and not allow_breaking.strip():
            raise DefinitionError("--allow-breaking needs a reason, e.g. 'backfill planned'")
        last: Exception | None = None
        for _ in range(retries):
            try:
                with self.db.write(lock_key="apply") as conn:
                    plan = self._plan(conn, defs)
                    if plan.refused and allow_breaking is None:
                        raise IncompatibleChangeError(_refusal_message(plan), plan.refused)
                    self._write(conn, plan, allow_breaking)
                    plan.applied = True
                    plan.breaking_reason = allow_breaking
                    return plan
            except sa.exc.IntegrityError as exc:  # another writer took the version number
                last = exc
                continue
        raise ConcurrencyError(
            f"apply lost {retries} races in a row with other writers ({last}); retry"
        )

    def _plan(self, conn: Connection, defs: builtins.list[Definition]) -> Plan:
        seen: dict[tuple[str, str], Definition] = {}
        for d in defs:
            key = (d.kind, d.name)
            if key in seen and seen[key] != d:
                raise DefinitionError(
                    f"{_LABEL[d.kind]} {d.name!r} is defined twice with different content; "
                    "keep one definition"
                )
            seen[key] = d
        ordered = sorted(seen.values(), key=lambda d: (_KIND_ORDER[d.kind], d.name))
        pending: dict[tuple[str, str], Definition] = {}
        items = []
        for d in ordered:
            d = self._complete(conn, d, pending)
            pending[(d.kind, d.name)] = d
            items.append(self._plan_one(conn, d))
        return Plan(items)

    def _complete(self, conn: Connection, d: Definition,
                  pending: dict[tuple[str, str], Definition]) -> Definition:
        """Fill join keys of views from entities and pin feature-set references."""
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
            for text in d.features:
                r = parse_reference(text)
                v = pending.get(("feature_view", r.view))
                latest = self._latest_row(conn, "feature_view", r.view)
                if r.version is None:
                    if v is not None:
                        version = self._planned_version(conn, v, latest)
                        view = v
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
                view.field(r.feature)  # type: ignore[union-attr]
                pinned.append(str(r.pinned(version)))
            return d.model_copy(update={"features": pinned})
        return d

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
            record_edges(conn, _definition_edges(d, item.to_version or 1))
            if isinstance(d, FeatureView):
                self._mark_children_stale(conn, d.name)
            self.db.audit(
                conn, "create_version", d.kind, f"{d.name}@{item.to_version}",
                {
                    "definition_hash": d.definition_hash,
                    "changes": [_change_dict(c) for c in item.changes],
                    "breaking_reason": reason if item.refused else None,
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

    def set_status(self, kind: str, name: str, version: int, status: str,
                   reason: str | None = None) -> DefinitionRecord:
        """Deprecate or retire a version (the only edit a version ever receives)."""
        if status not in ("active", "deprecated", "retired"):
            raise DefinitionError(
                f"status {status!r} is not valid; use active, deprecated or retired"
            )
        self.get(kind, name, version)
        t = schema.definitions
        with self.db.write() as conn:
            conn.execute(
                t.update()
                .where(self.db.scope(t), t.c.kind == kind, t.c.name == name,
                       t.c.version == version)
                .values(status=status, status_reason=reason)
            )
            self.db.audit(conn, f"set_status:{status}", kind, f"{name}@{version}",
                          {"reason": reason})
        return self.get(kind, name, version)


def _definition_edges(d: Definition, version: int) -> builtins.list[tuple[str, str, str]]:
    if isinstance(d, FeatureView):
        me = view_node(d.name, version)
        edges = []
        path = getattr(d.source, "path", None)
        if path:
            edges.append((source_node(path), me, FEEDS))
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
