"""Training dataset records: what a historical retrieval produced and exactly what it read.

A dataset row, its ``dataset_commits`` rows and its lineage edges (``commit -read-> dataset``
for every commit read, ``dataset -used_by-> run`` when a run was active) are written in one
registry transaction, so a dataset is either fully recorded or not at all. Rows are never
updated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from featureledger.errors import StateError, UnknownDatasetError
from featureledger.model.hashing import canonical_json
from featureledger.model.timeutil import from_us
from featureledger.registry import schema
from featureledger.registry.engine import RegistryDB
from featureledger.registry.lineage_edges import READ, USED_BY, record_edges


@dataclass(frozen=True)
class DatasetRecord:
    """One recorded training dataset."""

    dataset_id: str
    created_at: int  # µs since epoch, UTC
    created_by: str
    run_id: str | None
    feature_set: str | None  # name@version when built from a feature set
    features: list[str]  # pinned references, in output order
    as_of: int | None  # µs; None when every visible commit was read
    entity_digest: str
    entity_path: str | None  # stored entity rows, relative to the offline store root
    content_hash: str
    row_count: int
    arrow_schema: str
    manifest: dict[str, Any]
    commit_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["created_at_iso"] = from_us(self.created_at).isoformat()
        return d


class DatasetRepository:
    """Reads and writes dataset records."""

    def __init__(self, db: RegistryDB) -> None:
        self.db = db

    def rows(self, ids: list[str]) -> dict[str, Any]:
        """The stored rows of datasets ``ids`` by id; UnknownDatasetError names any missing."""
        t = schema.datasets
        with self.db.read() as conn:
            rows = {r.dataset_id: r for r in conn.execute(
                sa.select(t).where(self.db.scope(t), t.c.dataset_id.in_(ids)))} if ids else {}
        missing = [d for d in ids if d not in rows]
        if missing:
            raise UnknownDatasetError(f"unknown dataset(s) {', '.join(missing)}; datasets come "
                                      "from store.get_historical_features")
        return rows

    def insert(self, rec: DatasetRecord) -> DatasetRecord:
        """Record a dataset, the commits it read and its lineage edges in one transaction."""
        try:
            self._insert(rec)
        except sa.exc.IntegrityError as exc:
            raise StateError(
                f"dataset {rec.dataset_id} could not be recorded: it already exists or names a "
                f"commit the registry does not hold ({exc.orig}); nothing was written. Retry "
                "the retrieval, which makes a new dataset id"
            ) from None
        return rec

    def _insert(self, rec: DatasetRecord) -> None:
        t = schema.datasets
        with self.db.write() as conn:
            conn.execute(t.insert().values(
                project=self.db.project,
                dataset_id=rec.dataset_id,
                created_at=rec.created_at,
                created_by=rec.created_by,
                run_id=rec.run_id,
                feature_set=rec.feature_set,
                features=canonical_json(rec.features),
                as_of=rec.as_of,
                entity_digest=rec.entity_digest,
                entity_path=rec.entity_path,
                content_hash=rec.content_hash,
                row_count=rec.row_count,
                arrow_schema=rec.arrow_schema,
                manifest=canonical_json(rec.manifest),
            ))
            commit_ids = list(dict.fromkeys(rec.commit_ids))
            if commit_ids:
                conn.execute(schema.dataset_commits.insert(),
                             [{"project": self.db.project, "dataset_id": rec.dataset_id,
                               "commit_id": c} for c in commit_ids])
            edges: list[tuple[str, str, str]] = [(c, rec.dataset_id, READ) for c in commit_ids]
            if rec.run_id:
                edges.append((rec.dataset_id, rec.run_id, USED_BY))
            record_edges(conn, edges)
            self.db.audit(conn, "create_dataset", "dataset", rec.dataset_id,
                          {"features": rec.features, "commits": len(commit_ids),
                           "run_id": rec.run_id, "content_hash": rec.content_hash})

    def get(self, dataset_id: str) -> DatasetRecord:
        t = schema.datasets
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(t).where(self.db.scope(t), t.c.dataset_id == dataset_id)).first()
            if row is None:
                raise UnknownDatasetError(
                    f"unknown dataset {dataset_id!r}; list datasets with "
                    "'featureledger datasets list'"
                )
            commits = self._commit_ids(conn, [dataset_id])
        return _record(row, commits.get(dataset_id, []))

    def list(self, *, run_id: str | None = None, commit_id: str | None = None,
             limit: int | None = 100) -> list[DatasetRecord]:
        """Datasets, newest first; optionally only a run's, or only those that read a commit."""
        t = schema.datasets
        q = sa.select(t).where(self.db.scope(t))
        if run_id is not None:
            q = q.where(t.c.run_id == run_id)
        if commit_id is not None:
            dc = schema.dataset_commits
            q = q.where(t.c.dataset_id.in_(
                sa.select(dc.c.dataset_id).where(self.db.scope(dc), dc.c.commit_id == commit_id)))
        q = q.order_by(t.c.created_at.desc(), t.c.dataset_id.desc())
        if limit is not None:
            q = q.limit(limit)
        with self.db.read() as conn:
            rows = conn.execute(q).all()
            commits = self._commit_ids(conn, [r.dataset_id for r in rows])
        return [_record(r, commits.get(r.dataset_id, [])) for r in rows]

    def entity_paths(self) -> set[str]:
        """The stored entity rows' paths (store-relative) of every dataset of the project:
        what ``gc`` must keep."""
        t = schema.datasets
        out = set()
        with self.db.read() as conn:
            for ds, path in conn.execute(sa.select(t.c.dataset_id, t.c.entity_path)
                                         .where(self.db.scope(t))):
                if path is None:  # rows from before the column: the manifest has it
                    row = conn.execute(sa.select(t.c.manifest).where(
                        self.db.scope(t), t.c.dataset_id == ds)).scalar_one()
                    path = json.loads(row)["entity"]["path"]
                out.add(path)
        return out

    def _commit_ids(self, conn: Any, dataset_ids: Sequence[str]) -> dict[str, Sequence[str]]:
        dc = schema.dataset_commits
        out: dict[str, Any] = {}
        for i in range(0, len(dataset_ids), 500):
            chunk = dataset_ids[i:i + 500]
            q = (sa.select(dc.c.dataset_id, dc.c.commit_id)
                 .where(self.db.scope(dc), dc.c.dataset_id.in_(chunk)).order_by(dc.c.commit_id))
            for ds, cmt in conn.execute(q):
                out.setdefault(ds, []).append(cmt)
        return out


def _record(row: Any, commit_ids: Sequence[str]) -> DatasetRecord:
    manifest = json.loads(row.manifest)
    # the manifest keeps the commits in read order; the table only knows the set
    ordered = manifest.get("commit_ids") or commit_ids
    return DatasetRecord(
        dataset_id=row.dataset_id,
        created_at=row.created_at,
        created_by=row.created_by,
        run_id=row.run_id,
        feature_set=row.feature_set,
        features=json.loads(row.features),
        as_of=row.as_of,
        entity_digest=row.entity_digest,
        entity_path=row.entity_path,
        content_hash=row.content_hash,
        row_count=row.row_count,
        arrow_schema=row.arrow_schema,
        manifest=manifest,
        commit_ids=list(ordered),
    )
