"""Experiments and runs in the registry: create, log, finish, read, list, compare.

Every log call is its own short write transaction, so what a run logged survives the
process that logged it (a crash or an exception in the run's block loses nothing).
Params are immutable once logged, as in MLflow: logging a key again with another value is
an error, with the same value a no-op.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from featureledger.errors import StateError, TrackingError, UnknownRunError
from featureledger.model.hashing import canonical_json
from featureledger.model.ids import new_id, readable_name
from featureledger.model.timeutil import now_us, to_us
from featureledger.registry import schema
from featureledger.registry.engine import RegistryDB
from featureledger.registry.lineage_edges import record_edges
from featureledger.registry.tracking_records import (
    Experiment,
    MetricPoint,
    RunComparison,
    RunRecord,
)

HAS_RUN = "has_run"  # experiment -> run
_FINAL = ("finished", "failed", "killed")


def _experiment(row: Any) -> Experiment:
    return Experiment(row.experiment_id, row.name, row.description, json.loads(row.tags),
                      row.created_at, row.created_by)


def _check_key(kind: str, key: Any) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > 255:
        raise TrackingError(f"{kind} name {key!r} is not valid; use a non-empty string of at "
                            "most 255 characters")
    return key


class RunRepository:
    """SQL for experiments and runs."""

    def __init__(self, db: RegistryDB) -> None:
        self.db = db

    # -- experiments ------------------------------------------------------------------
    def create_experiment(self, name: str, description: str = "",
                          tags: Mapping[str, str] | None = None, *,
                          exist_ok: bool = True) -> Experiment:
        _check_key("experiment", name)
        t = schema.experiments
        with self.db.write(lock_key=f"experiment:{name}") as conn:
            row = conn.execute(sa.select(t).where(self.db.scope(t), t.c.name == name)).first()
            if row is not None:
                if not exist_ok:
                    raise StateError(f"experiment {name!r} already exists; pick another name "
                                     "or pass exist_ok=True to reuse it")
                return _experiment(row)
            exp = Experiment(new_id("exp"), name, description,
                             {str(k): str(v) for k, v in (tags or {}).items()}, now_us(),
                             self.db.actor)
            conn.execute(t.insert().values(
                project=self.db.project,
                experiment_id=exp.experiment_id, name=name, description=description,
                tags=canonical_json(exp.tags), created_at=exp.created_at,
                created_by=exp.created_by))
            self.db.audit(conn, "create_experiment", "experiment", exp.experiment_id,
                          {"name": name})
        return exp

    def get_experiment(self, name_or_id: str) -> Experiment:
        t = schema.experiments
        col = t.c.experiment_id if name_or_id.startswith("exp_") else t.c.name
        with self.db.read() as conn:
            row = conn.execute(sa.select(t).where(self.db.scope(t), col == name_or_id)).first()
        if row is None:
            raise UnknownRunError(f"unknown experiment {name_or_id!r}; list experiments with "
                                  "'featureledger experiments'")
        return _experiment(row)

    def list_experiments(self) -> list[Experiment]:
        t = schema.experiments
        with self.db.read() as conn:
            return [_experiment(r) for r in conn.execute(
                sa.select(t).where(self.db.scope(t)).order_by(t.c.name))]

    # -- runs -------------------------------------------------------------------------
    def create_run(self, experiment: Experiment, *, name: str | None, parent_run_id: str | None,
                   git: tuple[str | None, bool | None], source: str | None,
                   params: Mapping[str, Any], tags: Mapping[str, Any],
                   external_ids: Mapping[str, str], run_id: str | None = None) -> str:
        run_id = run_id or new_id("run")
        start = now_us()
        with self.db.write() as conn:
            conn.execute(schema.runs.insert().values(
                project=self.db.project,
                run_id=run_id, experiment_id=experiment.experiment_id,
                name=name or readable_name(run_id), parent_run_id=parent_run_id, status="running",
                start_time=start, end_time=None, user=self.db.actor, git_commit=git[0],
                git_dirty=None if git[1] is None else int(git[1]), source=source, error=None))
            self._params(conn, run_id, params)
            self._tags(conn, run_id, tags)
            for system, ext in external_ids.items():
                conn.execute(schema.run_external_ids.insert().values(
                    project=self.db.project, run_id=run_id, system=system,
                    external_id=str(ext)))
            record_edges(conn, [(experiment.experiment_id, run_id, HAS_RUN)])
            self.db.audit(conn, "start_run", "run", run_id,
                          {"experiment": experiment.name, "git_commit": git[0]})
        return run_id

    def _status(self, conn: Connection, run_id: str) -> str:
        status = conn.execute(sa.select(schema.runs.c.status)
                              .where(self.db.scope(schema.runs),
                                     schema.runs.c.run_id == run_id)).scalar()
        if status is None:
            raise UnknownRunError(f"unknown run {run_id!r}; list runs with 'featureledger runs "
                                  "list'")
        return str(status)

    def _params(self, conn: Connection, run_id: str,
                params: Mapping[str, Any]) -> dict[str, str]:
        if not params:
            return {}
        t = schema.run_params
        values = {_check_key("param", k): _param_text(v) for k, v in params.items()}
        existing = dict(conn.execute(sa.select(t.c.key, t.c.value).where(
            self.db.scope(t), t.c.run_id == run_id, t.c.key.in_(list(values)))).all())
        clash = {k: (existing[k], v) for k, v in values.items() if k in existing
                 and existing[k] != v}
        if clash:
            k, (old, new) = next(iter(clash.items()))
            raise TrackingError(f"param {k!r} of run {run_id} is already {old!r}; params are "
                                f"immutable, so it cannot become {new!r}. Log it under another "
                                "name or start a new run")
        rows = [{"project": self.db.project, "run_id": run_id, "key": k, "value": v}
                for k, v in values.items() if k not in existing]
        if rows:
            conn.execute(t.insert(), rows)
        return values

    def _tags(self, conn: Connection, run_id: str, tags: Mapping[str, Any]) -> dict[str, str]:
        t = schema.run_tags
        stored = {}
        for k, v in tags.items():
            _check_key("tag", k)
            conn.execute(t.delete().where(self.db.scope(t), t.c.run_id == run_id, t.c.key == k))
            conn.execute(t.insert().values(project=self.db.project, run_id=run_id, key=k,
                                           value=str(v)))
            stored[k] = str(v)
        return stored

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> dict[str, str]:
        """Record params (immutable); returns them as stored (text)."""
        with self.db.write() as conn:
            self._writable(conn, run_id)
            return self._params(conn, run_id, params)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> dict[str, str]:
        """Set tags (they may change, also after the run ended); returns them as stored."""
        with self.db.write() as conn:
            self._status(conn, run_id)  # tags may still change after a run ended
            return self._tags(conn, run_id, tags)

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int | None = None,
                    timestamp: Any = None) -> list[MetricPoint]:
        ts = now_us() if timestamp is None else to_us(timestamp)
        points = []
        for k, v in metrics.items():
            _check_key("metric", k)
            try:
                value = float(v)
            except (TypeError, ValueError):
                raise TrackingError(f"metric {k!r} must be a number, got {v!r}") from None
            if not math.isfinite(value):
                raise TrackingError(f"metric {k!r} is {value}; log finite numbers only (record "
                                    "a failed evaluation as a tag instead)")
            points.append((k, value))
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
            raise TrackingError(f"metric step must be an integer, got {step!r}")
        t = schema.run_metrics
        out = []
        with self.db.write() as conn:
            self._writable(conn, run_id)
            for k, value in points:
                s = step
                if s is None:  # the next step of this key: a plain series needs no counter
                    last = conn.execute(sa.select(sa.func.max(t.c.step)).where(
                        self.db.scope(t), t.c.run_id == run_id, t.c.key == k)).scalar()
                    s = 0 if last is None else int(last) + 1
                conn.execute(t.insert().values(project=self.db.project, run_id=run_id, key=k,
                                               value=value, step=s, timestamp=ts))
                out.append(MetricPoint(k, value, s, ts))
        return out

    def _writable(self, conn: Connection, run_id: str) -> None:
        status = self._status(conn, run_id)
        if status != "running":
            raise StateError(f"run {run_id} is {status}; params and metrics can only be logged "
                             "while a run is running. Start a new run")

    def set_external_id(self, run_id: str, system: str, external_id: str) -> None:
        t = schema.run_external_ids
        with self.db.write() as conn:
            self._status(conn, run_id)
            conn.execute(t.delete().where(self.db.scope(t), t.c.run_id == run_id,
                                          t.c.system == system))
            conn.execute(t.insert().values(project=self.db.project, run_id=run_id,
                                           system=system, external_id=external_id))

    def find_by_external_id(self, system: str, external_id: str) -> str | None:
        t = schema.run_external_ids
        with self.db.read() as conn:
            return conn.execute(sa.select(t.c.run_id).where(
                self.db.scope(t), t.c.system == system, t.c.external_id == external_id)
                .order_by(t.c.run_id)).scalar()

    def end_run(self, run_id: str, status: str, error: str | None = None) -> None:
        if status not in _FINAL:
            raise TrackingError(f"a run ends as one of {_FINAL}, not {status!r}")
        t = schema.runs
        with self.db.write() as conn:
            current = self._status(conn, run_id)
            if current != "running":
                return  # ending twice keeps the first outcome
            conn.execute(t.update().where(self.db.scope(t), t.c.run_id == run_id)
                         .values(status=status, end_time=now_us(), error=error))
            self.db.audit(conn, f"end_run:{status}", "run", run_id, {"error": error})

    # -- reading ---------------------------------------------------------------------
    def get_run(self, run_id: str) -> RunRecord:
        runs = self._load(sa.select(schema.runs).where(self.db.scope(schema.runs),
                                                       schema.runs.c.run_id == run_id))
        if not runs:
            raise UnknownRunError(f"unknown run {run_id!r}; list runs with 'featureledger runs "
                                  "list'")
        return runs[0]

    def metric_history(self, run_id: str, key: str | None) -> list[MetricPoint]:
        """Every point of metric ``key`` (of every metric, by key, when None), by step."""
        t = schema.run_metrics
        where = [self.db.scope(t), t.c.run_id == run_id]
        if key is not None:
            where.append(t.c.key == key)
        with self.db.read() as conn:
            rows = conn.execute(sa.select(t).where(*where)
                                .order_by(t.c.key, t.c.step, t.c.timestamp, t.c.id)).all()
        return [MetricPoint(r.key, r.value, r.step, r.timestamp) for r in rows]

    def list_runs(self, *, experiment: str | None = None, feature_version: str | None = None,
                  metric: tuple[str, str, float] | None = None, status: str | None = None,
                  limit: int | None = None) -> list[RunRecord]:
        """Runs, newest first, filtered in SQL.

        ``feature_version`` (``view@N``) keeps runs whose datasets or models read that view
        version; ``metric`` is ``(key, op, value)`` on the latest value of the metric.
        """
        r = schema.runs
        q = sa.select(r).where(self.db.scope(r))
        if experiment is not None:
            exp = self.get_experiment(experiment)
            q = q.where(r.c.experiment_id == exp.experiment_id)
        if status is not None:
            q = q.where(r.c.status == status)
        if feature_version is not None:
            view, _, version = feature_version.partition("@")
            if not version.isdigit():
                raise TrackingError(f"feature version {feature_version!r} must look like "
                                    "'view@N', e.g. 'driver_stats@3'")
            d, mf, mv = schema.datasets, schema.model_features, schema.model_versions
            pattern = f'%"{view}@{int(version)}:%'
            via_data = sa.select(d.c.run_id).where(self.db.scope(d), d.c.features.like(pattern))
            via_model = (sa.select(mv.c.run_id).join(mf, mf.c.model_id == mv.c.model_id)
                         .where(self.db.scope(mv, mf), mf.c.view_name == view,
                                mf.c.view_version == int(version)))
            q = q.where(sa.or_(r.c.run_id.in_(via_data), r.c.run_id.in_(via_model)))
        if metric is not None:
            key, op, value = metric
            m = schema.run_metrics
            latest = (sa.select(sa.func.max(m.c.id)).where(self.db.scope(m), m.c.key == key)
                      .group_by(m.c.run_id))
            cmp = {">": m.c.value > value, ">=": m.c.value >= value, "<": m.c.value < value,
                   "<=": m.c.value <= value, "=": m.c.value == value,
                   "==": m.c.value == value, "!=": m.c.value != value}
            if op not in cmp:
                raise TrackingError(f"metric operator {op!r} is not supported; use one of "
                                    f"{', '.join(cmp)}")
            q = q.where(r.c.run_id.in_(sa.select(m.c.run_id).where(
                self.db.scope(m), m.c.id.in_(latest), cmp[op])))
        q = q.order_by(r.c.start_time.desc(), r.c.run_id.desc())
        if limit is not None:
            q = q.limit(limit)
        return self._load(q)

    def _load(self, query: Any) -> list[RunRecord]:
        """Runs with their params, latest metrics, tags and links, a few queries in all."""
        with self.db.read() as conn:
            rows = conn.execute(query).all()
            ids = [row.run_id for row in rows]
            if not ids:
                return []
            e = schema.experiments
            exps = dict(conn.execute(sa.select(e.c.experiment_id, e.c.name)
                                     .where(self.db.scope(e))).all())
            by: dict[str, dict[str, Any]] = {i: {"params": {}, "metrics": {}, "tags": {},
                                                 "external_ids": {}, "datasets": [],
                                                 "models": [], "commits": []} for i in ids}
            for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):
                self._fill(conn, chunk, by)
        return [RunRecord(
            run_id=row.run_id, experiment_id=row.experiment_id,
            experiment=exps.get(row.experiment_id, "?"), name=row.name,
            parent_run_id=row.parent_run_id, status=row.status, start_time=row.start_time,
            end_time=row.end_time, user=row.user, git_commit=row.git_commit,
            git_dirty=None if row.git_dirty is None else bool(row.git_dirty),
            source=row.source, error=row.error, **by[row.run_id]) for row in rows]

    def _fill(self, conn: Connection, ids: list[str], by: dict[str, dict[str, Any]]) -> None:
        p, tg, x = schema.run_params, schema.run_tags, schema.run_external_ids
        scope = self.db.scope
        for rid, k, v in conn.execute(sa.select(p.c.run_id, p.c.key, p.c.value)
                                      .where(scope(p), p.c.run_id.in_(ids)).order_by(p.c.key)):
            by[rid]["params"][k] = v
        for rid, k, v in conn.execute(sa.select(tg.c.run_id, tg.c.key, tg.c.value)
                                      .where(scope(tg), tg.c.run_id.in_(ids))
                                      .order_by(tg.c.key)):
            by[rid]["tags"][k] = v
        for rid, k, v in conn.execute(sa.select(x.c.run_id, x.c.system, x.c.external_id)
                                      .where(scope(x), x.c.run_id.in_(ids))):
            by[rid]["external_ids"][k] = v
        m = schema.run_metrics
        latest = (sa.select(sa.func.max(m.c.id)).where(scope(m), m.c.run_id.in_(ids))
                  .group_by(m.c.run_id, m.c.key))
        for rid, k, v in conn.execute(sa.select(m.c.run_id, m.c.key, m.c.value)
                                      .where(scope(m), m.c.id.in_(latest)).order_by(m.c.key)):
            by[rid]["metrics"][k] = v
        d, mv, c = schema.datasets, schema.model_versions, schema.commits
        for rid, ds in conn.execute(sa.select(d.c.run_id, d.c.dataset_id)
                                    .where(scope(d), d.c.run_id.in_(ids))
                                    .order_by(d.c.created_at)):
            by[rid]["datasets"].append(ds)
        for rid, name, ver in conn.execute(sa.select(mv.c.run_id, mv.c.name, mv.c.version)
                                           .where(scope(mv), mv.c.run_id.in_(ids))
                                           .order_by(mv.c.created_at)):
            by[rid]["models"].append(f"{name}@{ver}")
        for rid, cid in conn.execute(sa.select(c.c.run_id, c.c.commit_id)
                                     .where(scope(c), c.c.run_id.in_(ids))
                                     .order_by(c.c.commit_time)):
            by[rid]["commits"].append(cid)

    # -- comparison ---------------------------------------------------------------------
    def compare(self, run_a: str, run_b: str) -> RunComparison:
        a, b = self.get_run(run_a), self.get_run(run_b)
        params = {k: (a.params.get(k), b.params.get(k))
                  for k in sorted(set(a.params) | set(b.params))}
        metrics = {k: (a.metrics.get(k), b.metrics.get(k))
                   for k in sorted(set(a.metrics) | set(b.metrics))}
        fa, ca = self._read_set(run_a)
        fb, cb = self._read_set(run_b)
        versions = {v: (v in fa, v in fb) for v in sorted(fa | fb)}
        only_a: dict[str, list[str]] = {}
        only_b: dict[str, list[str]] = {}
        for cid in sorted(set(ca) - set(cb)):
            only_a.setdefault(ca[cid], []).append(cid)
        for cid in sorted(set(cb) - set(ca)):
            only_b.setdefault(cb[cid], []).append(cid)
        return RunComparison(run_a, run_b, params, metrics, versions, only_a, only_b,
                             len(set(ca) & set(cb)), (a.datasets, b.datasets))

    def _read_set(self, run_id: str) -> tuple[set[str], dict[str, str]]:
        """View versions a run's datasets and models read, and commit -> view@N of its data."""
        d, dc, c = schema.datasets, schema.dataset_commits, schema.commits
        mv, mf, md = schema.model_versions, schema.model_features, schema.model_datasets
        scope = self.db.scope
        run_datasets = sa.union(
            sa.select(d.c.dataset_id).where(scope(d), d.c.run_id == run_id),
            sa.select(md.c.dataset_id).join(mv, mv.c.model_id == md.c.model_id)
            .where(scope(md, mv), mv.c.run_id == run_id),
        ).subquery()
        with self.db.read() as conn:
            commits = {cid: f"{v}@{n}" for cid, v, n in conn.execute(
                sa.select(c.c.commit_id, c.c.view_name, c.c.view_version)
                .join(dc, dc.c.commit_id == c.c.commit_id)
                .where(scope(c, dc), dc.c.dataset_id.in_(sa.select(run_datasets.c.dataset_id)))
                .distinct())}
            feats = conn.execute(sa.select(d.c.features).where(
                scope(d), d.c.dataset_id.in_(sa.select(run_datasets.c.dataset_id)))
            ).scalars().all()
            model_views = conn.execute(
                sa.select(mf.c.view_name, mf.c.view_version).join(
                    mv, mv.c.model_id == mf.c.model_id)
                .where(scope(mf, mv), mv.c.run_id == run_id)
                .distinct()).all()
        versions = {f"{v}@{n}" for v, n in model_views}
        for text in feats:
            for ref in json.loads(text):
                versions.add(str(ref).partition(":")[0])
        return versions, commits


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else canonical_json(value)
    if len(text) > 8000:
        raise TrackingError(f"param value of {len(text)} characters is too long (limit 8000); "
                            "log large values as an artifact and the path as the param")
    return text
