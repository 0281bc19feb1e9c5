"""The quality scoreboard: KPIs per view, commit, experiment and deployment.

Every row has the same columns, so one table (CLI), one JSON document (the web UI) and
one chart read them alike:

* ``validation_pass_rate``: valid rows over checked rows (rejected ones count against);
* ``drift``: the status of the newest quality check (``ok``, ``drift``, ``failed``,
  ``skipped``, or ``unchecked`` when no policy ever checked it);
* ``freshness_s``: seconds since the newest committed commit (``data_age_s``: since its
  newest event time);
* ``completeness``: the share of non-null feature values in the committed rows;
* ``open_alerts``: alerts still open about the subject (a view's include its commits').

An experiment's KPIs are those of the commits its runs' training datasets read; a
deployment's those of its model's training datasets, plus its skew status when the
feature log has samples. Everything comes from the registry: commit rows (their
validation report and profile), quality checks and alerts; no data is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from featureledger.model.timeutil import now_us
from featureledger.registry.quality import ALERT_OPEN, QualityRepository

if TYPE_CHECKING:
    from featureledger.context import StoreContext
    from featureledger.registry.commits import CommitRecord

_SEVERITY = {"unchecked": 0, "skipped": 0, "ok": 1, "drift": 2, "failed": 3}


@dataclass(frozen=True)
class Score:
    """The KPIs of one subject."""

    kind: str  # view | commit | experiment | deployment
    subject: str
    validation_pass_rate: float | None
    drift: str
    freshness_s: float | None
    completeness: float | None
    open_alerts: int
    commits: int = 0
    quarantined: int = 0
    data_age_s: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Scoreboard:
    generated_at: int
    rows: list[Score]

    def of(self, kind: str) -> list[Score]:
        return [r for r in self.rows if r.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        return {"generated_at": self.generated_at, "rows": [r.to_dict() for r in self.rows]}


def _completeness(commits: Iterable[CommitRecord], features: set[str] | None) -> float | None:
    values = nulls = 0
    for c in commits:
        for name, col in (c.profile.get("columns") or {}).items():
            if features is not None and name not in features:
                continue
            values += int(col.get("count") or 0)
            nulls += int(col.get("nulls") or 0) + int(col.get("nans") or 0)
    return None if values == 0 else 1.0 - nulls / values


def _pass_rate(commits: Iterable[CommitRecord]) -> float | None:
    valid = checked = 0
    for c in commits:
        valid += c.row_count
        checked += c.row_count + c.rejected_count
    return None if checked == 0 else valid / checked


class ScoreboardService:
    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx
        self.repo = QualityRepository(ctx.registry.db)

    def scoreboard(self, *, views: Sequence[str] | None = None,
                   commits: int = 5) -> Scoreboard:
        reg = self.ctx.registry
        now = now_us()
        open_alerts = self.repo.alerts(status=ALERT_OPEN)
        alerts_by_subject: dict[str, int] = {}
        for a in open_alerts:
            alerts_by_subject[a.subject] = alerts_by_subject.get(a.subject, 0) + 1
        checks = self.repo.checks()
        latest_check: dict[str, str] = {}  # commit id -> status (newest first in checks)
        for ch in checks:
            latest_check.setdefault(ch.commit_id, ch.status)
        rows: list[Score] = []
        names = list(views) if views else [d.name for d in reg.definitions.list("feature_view")]
        by_id: dict[str, CommitRecord] = {}
        features_of: dict[str, set[str]] = {}
        for name in names:
            rec = reg.definitions.view(name)
            feats = set(rec.definition.feature_names)
            features_of[name] = feats
            chain = [p.version for p in reg.definitions.data_chain(rec.name, rec.version)]
            every = [c for c in reg.commits.list(rec.name, versions=chain, statuses=None)
                     if c.status != "pending"]
            for c in every:
                by_id[c.commit_id] = c
            rows.append(self._score("view", rec.ref, every, feats, latest_check,
                                    alerts_by_subject, now,
                                    extra_subjects=[f"{rec.name}@{v}" for v in chain]))
            for c in every[-commits:] if commits else []:
                rows.append(self._score("commit", c.commit_id, [c], feats, latest_check,
                                        alerts_by_subject, now,
                                        details={"view": c.view_ref, "status": c.status}))
        for exp in reg.runs.list_experiments():
            ids: list[str] = []
            for run in reg.runs.list_runs(experiment=exp.name):
                for ds in reg.datasets.list(run_id=run.run_id):
                    ids.extend(ds.commit_ids)
            rows.append(self._score("experiment", exp.name, self._commits(ids, by_id), None,
                                    latest_check, alerts_by_subject, now))
        for dep in reg.models.list_deployments(active_only=True):
            model = reg.models.get(dep.model_id)
            ids = []
            for ds_ids in model.datasets.values():
                for ds_id in ds_ids:
                    ids.extend(reg.datasets.get(ds_id).commit_ids)
            rows.append(self._score("deployment", dep.deployment_id, self._commits(ids, by_id),
                                    None, latest_check, alerts_by_subject, now,
                                    extra_subjects=[dep.model_ref],
                                    details={"model": dep.model_ref,
                                             "environment": dep.environment}))
        return Scoreboard(now, rows)

    def _commits(self, ids: list[str], known: dict[str, CommitRecord]) -> list[CommitRecord]:
        wanted = list(dict.fromkeys(ids))
        missing = [i for i in wanted if i not in known]
        if missing:
            for c in self.ctx.registry.commits.get_many(missing):
                known[c.commit_id] = c
        return [known[i] for i in wanted]

    def _score(self, kind: str, subject: str, commits: list[CommitRecord],
               features: set[str] | None, latest_check: dict[str, str],
               alerts: dict[str, int], now: int, *, extra_subjects: Sequence[str] = (),
               details: dict[str, Any] | None = None) -> Score:
        live = [c for c in commits if c.status == "committed"]
        statuses = [latest_check[c.commit_id] for c in commits if c.commit_id in latest_check]
        if kind in ("view", "commit") and statuses:
            drift = statuses[-1] if kind == "commit" else latest_check.get(
                next((c.commit_id for c in reversed(commits) if c.commit_id in latest_check),
                     ""), "unchecked")
        else:
            drift = max(statuses, key=lambda s: _SEVERITY.get(s, 0)) if statuses \
                else "unchecked"
        newest = max((c.commit_time for c in live), default=None)
        newest_event = max((c.max_event_ts for c in live if c.max_event_ts is not None),
                           default=None)
        subjects = {subject, *extra_subjects, *(c.commit_id for c in commits)}
        return Score(
            kind=kind, subject=subject, validation_pass_rate=_pass_rate(commits),
            drift=drift,
            freshness_s=(now - newest) / 1e6 if newest is not None else None,
            completeness=_completeness(live if kind != "commit" else commits, features),
            open_alerts=sum(alerts.get(s, 0) for s in subjects),
            commits=len(commits), quarantined=sum(c.status == "quarantined" for c in commits),
            data_age_s=(now - newest_event) / 1e6 if newest_event is not None else None,
            details=details or {})
