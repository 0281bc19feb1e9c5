"""Lifecycle governance: retention, deprecation schedules, the catalog, governance metrics.

``retention set|show|apply``, ``deprecate``, ``deprecations`` (list, approve, withdraw),
``review-breaking``, ``search``, ``catalog show|list`` and ``governance report``; each
prints tables, or JSON with ``--json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from featureledger.cli.common import (
    JsonOption,
    RepoOption,
    console,
    open_store,
    print_json,
    short_id,
    show,
    table,
    when,
)


def _iso(us: int | None) -> str:
    """A time for a table cell: ``2026-01-08 12:00`` (UTC), empty for none."""
    return "" if us is None else when(us, seconds=False)


def _expiries(title: str, rows: list[Any]) -> None:
    t = table("commit", "view", "committed (UTC)", "rows", "rule", "kept for", title=title,
              ids=("commit", "view", "committed (UTC)"))
    for e in rows:
        t.add_row(short_id(e.commit_id), f"{e.view}@{e.version}", _iso(e.commit_time),
                  str(e.rows),
                  e.rule, ", ".join(e.deployments))
    console.print(t)


def _deprecations(rows: list[Any]) -> None:
    replaced = any(d.replacement for d in rows)
    approved = any(d.approved_by for d in rows)
    t = table("id", "target", "reason", *(["replacement"] if replaced else []), "retires",
              "by", *(["approved by"] if approved else []), "status", title="deprecations",
              ids=("id", "target", "retires", "status"))
    for d in rows:
        t.add_row(short_id(d.deprecation_id), d.target, show(d.reason, 200),
                  *([d.replacement or ""] if replaced else []), _iso(d.retire_on)[:10],
                  d.requested_by, *([d.approved_by or ""] if approved else []),
                  "withdrawn" if d.withdrawn_at else "in effect")
    console.print(t)


def _entries(rows: list[Any], title: str) -> None:
    # names whole; units and tags are in 'catalog show NAME' and --json
    t = table("name", "kind", "v", "owner", "status", "description", title=title,
              ids=("name",))
    for e in rows:
        t.add_row(show(e.name), e.kind.replace("feature_view", "view"), str(e.version),
                  show(e.owner), e.status, show(e.description, 120))
    console.print(t)


def register(app: typer.Typer) -> None:
    retention = typer.Typer(help="Retention: policies per view, the backlog, enforcement.",
                            no_args_is_help=True)
    app.add_typer(retention, name="retention")

    @retention.command("set")
    def retention_set(
        view: str = typer.Argument(..., help="The feature view (every version)."),
        keep_days: int = typer.Option(None, "--keep-days", help="Keep commits N days."),
        keep_last: int = typer.Option(None, "--keep-last", help="Keep the newest N commits."),
        reason: str = typer.Option(..., "--reason", help="Why (recorded)."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Set a view's retention (neither --keep-days nor --keep-last: keep everything)."""
        with open_store(repo) as store:
            policy = store.set_retention(view, keep_days=keep_days, keep_last=keep_last,
                                         reason=reason)
            if as_json:
                print_json(policy.to_dict() if policy else None)
            else:
                console.print(f"{show(view)}: "
                              + (policy.describe() if policy else "keeps every commit"))

    @retention.command("show")
    def retention_show(repo: Path = RepoOption, as_json: bool = JsonOption) -> None:
        """The retention policies and the backlog (what would expire now)."""
        with open_store(repo) as store:
            policies, backlog = store.retention.policies(), store.retention_backlog()
            if as_json:
                print_json({"policies": [p.to_dict() for p in policies],
                            "backlog": [e.to_dict() for e in backlog]})
                return
            t = table("view", "policy", "reason", "set by", "set at (UTC)",
                      title="retention policies", ids=("view", "set at (UTC)"))
            for p in policies:
                t.add_row(p.view, p.describe(), show(p.reason), p.set_by, _iso(p.set_at))
            console.print(t)
            _expiries(f"backlog: {len(backlog)} commit(s) expire now", backlog)

    @retention.command("apply")
    def retention_apply(
        view: str = typer.Option(None, "--view", help="Only this view."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would expire."),
        force: str = typer.Option(None, "--force", metavar="REASON",
                                  help="Also expire commits active deployments depend on, "
                                       "recording REASON."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Expire what the policies say and delete its files, one commit at a time
        (safe to run on a schedule and to interrupt)."""
        with open_store(repo) as store:
            report = store.apply_retention(view=view, dry_run=dry_run, force=force)
            if as_json:
                print_json(report.to_dict())
                return
            verb = "would expire" if dry_run else "expired"
            _expiries(f"{verb}: {len(report.expired)} commit(s)", report.expired)
            if report.kept:
                _expiries(f"kept for active deployments: {len(report.kept)} (--force "
                          "REASON expires them)", report.kept)
            if not dry_run:
                console.print(f"{report.files_deleted} file(s) deleted, "
                              f"{len(report.rewritten)} segment(s) rewritten, "
                              f"{len(report.swept)} left by an earlier run swept")
            if report.undeleted:
                console.print(f"[red]{len(report.undeleted)} file(s) could not be deleted[/] "
                              f"(e.g. {show(report.undeleted[0])}); the next run retries")
                raise typer.Exit(1)

    @app.command()
    def deprecate(
        target: str = typer.Argument(..., help="VIEW, VIEW@N, VIEW:FEATURE or VIEW@N:FEATURE."),
        reason: str = typer.Option(..., "--reason", help="Why (recorded)."),
        replacement: str = typer.Option(None, "--replacement", help="What to read instead."),
        retire_on: str = typer.Option(None, "--retire-on", metavar="YYYY-MM-DD",
                                      help="From this day on, reads fail."),
        force: str = typer.Option(None, "--force", metavar="REASON",
                                  help="Go ahead although active deployments read it."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Deprecate a view, a view version or a feature: reads warn and are counted, and
        fail after --retire-on (except deployments with an exception)."""
        with open_store(repo) as store:
            dep = store.deprecate(target, reason, replacement=replacement,
                                  retire_on=retire_on, force=force)
            if as_json:
                print_json(dep.to_dict())
            else:
                console.print(f"{dep.deprecation_id}: {show(dep.describe(), 1_000)}; another "
                              f"principal approves it with 'featureledger deprecations "
                              f"--approve {dep.deprecation_id}'")

    @app.command()
    def deprecations(
        view: str = typer.Option(None, "--view", help="Only this view's."),
        every: bool = typer.Option(False, "--all", help="Withdrawn ones too."),
        approve: str = typer.Option(None, "--approve", metavar="ID",
                                    help="Approve this deprecation (not as its requester)."),
        withdraw: str = typer.Option(None, "--withdraw", metavar="ID",
                                     help="Withdraw this deprecation (needs --reason)."),
        reason: str = typer.Option(None, "--reason", help="Why (approve, withdraw)."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """List deprecations; approve or withdraw one."""
        with open_store(repo) as store:
            if approve:
                store.approve_deprecation(approve, reason)
            if withdraw:
                store.withdraw_deprecation(withdraw, reason or "")
            rows = store.deprecations(view=view, withdrawn=every)
            if as_json:
                print_json([d.to_dict() for d in rows])
            else:
                _deprecations(rows)

    @app.command("review-breaking")
    def review_breaking(
        version: str = typer.Argument(..., help="VIEW@N applied as a breaking change."),
        reason: str = typer.Option(None, "--reason", help="What the review found."),
        repo: Path = RepoOption,
    ) -> None:
        """Record a review of a breaking change (by a principal other than who applied it)."""
        from featureledger.registry.lifecycle import parse_target

        with open_store(repo) as store:
            name, number, _ = parse_target(version)
            if number is None:
                raise typer.BadParameter("name the version: VIEW@N")
            store.registry.lifecycle.review_breaking(name, number, reason)
            console.print(f"{show(version)}: reviewed")

    @app.command()
    def search(
        text: str = typer.Argument(..., help="Words to find in names, descriptions, tags, owners."),
        tag: str = typer.Option(None, "--tag", help="Only entries with this tag (KEY[=VALUE])."),
        owner: str = typer.Option(None, "--owner", help="Only entries of this owner."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Find views and features in the catalog."""
        with open_store(repo) as store:
            rows = store.search(text, tag=tag, owner=owner)
            if as_json:
                print_json([e.to_dict() for e in rows])
            else:
                _entries(rows, f"{len(rows)} match(es) for {show(text)!r}")

    catalog = typer.Typer(help="The catalog: list and explain views and features.",
                          no_args_is_help=True)
    app.add_typer(catalog, name="catalog")

    @catalog.command("list")
    def catalog_list(
        tag: str = typer.Option(None, "--tag", help="Only entries with this tag (KEY[=VALUE])."),
        owner: str = typer.Option(None, "--owner", help="Only entries of this owner."),
        kind: str = typer.Option(None, "--kind", help="feature_view or feature."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Every view and feature, by tag and owner."""
        with open_store(repo) as store:
            rows = store.catalog_entries(tag=tag, owner=owner, kind=kind)
            if as_json:
                print_json([e.to_dict() for e in rows])
            else:
                _entries(rows, "catalog")

    @catalog.command("show")
    def catalog_show(
        name: str = typer.Argument(..., help="VIEW or VIEW:FEATURE (VIEW@N pins the leaderboard)."),
        metric: str = typer.Option(None, "--metric", help="Rank the leaderboard on this metric."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Explain a view or feature: docs, versions with their hypotheses, deprecations,
        retention, the decision log and the leaderboard."""
        with open_store(repo) as store:
            info = store.catalog_show(name, metric=metric)
            if as_json:
                print_json(info)
                return
            e = info["entry"]
            console.print(f"[bold]{show(e['name'])}[/] ({e['kind']}, {e['status']}) owner "
                          f"{show(e['owner']) or '-'}; {show(e['description'], 500) or 'no description'}")
            if e.get("unit") or e.get("dtype"):
                console.print(f"dtype {e.get('dtype')}, unit {e.get('unit') or '-'}")
            if e["tags"]:
                console.print("tags: " + show(", ".join(f"{k}={v}" for k, v in e["tags"].items())))
            if info["retention"]:
                r = info["retention"]
                console.print(f"retention: keep {r['keep_days']} day(s)" if r["keep_days"]
                              else f"retention: keep the last {r['keep_last']} commit(s)")
            t = table("version", "status", "created (UTC)", "by", "experiment", "hypothesis",
                      title="versions", ids=("created (UTC)",))
            for v in info["versions"]:
                t.add_row(str(v["version"]), v["status"], _iso(v["created_at"]),
                          v["created_by"], show(v["experiment"] or ""),
                          show(v["hypothesis"] or "", 200))
            console.print(t)
            if info["deprecations"]:
                from featureledger.registry.lifecycle import Deprecation

                _deprecations([Deprecation(**{k: d[k] for k in Deprecation.__dataclass_fields__})
                               for d in info["deprecations"]])
            t = table("when (UTC)", "who", "action", "object", "reason",
                      title="decision log", ids=("when (UTC)",))
            for d in info["decisions"]:
                t.add_row(_iso(d["at"]), d["actor"], d["action"], show(d["object"]),
                          show(d["reason"] or "", 300))
            console.print(t)
            t = table("run", "experiment", "models", "feature versions read", "metrics",
                      title="leaderboard", ids=("run",))
            for row in info["leaderboard"]:
                t.add_row(f"{show(row['run'])}\n{short_id(row['run_id'])}", row["experiment"],
                          ", ".join(row["models"]), show(", ".join(row["features"]), 400),
                          ", ".join(f"{k}={v:g}" for k, v in sorted(row["metrics"].items())))
            console.print(t)

    governance = typer.Typer(help="Governance metrics.", no_args_is_help=True)
    app.add_typer(governance, name="governance")

    @governance.command("report")
    def governance_report(
        window_days: int = typer.Option(7, "--window-days",
                                        help="Count deprecated reads of the last N days."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Denied requests, deprecated features still read, undocumented features,
        retention backlog, unreviewed breaking changes, unapproved deprecations."""
        with open_store(repo) as store:
            report = store.governance_report(window_days=window_days)
            if as_json:
                print_json(report.to_dict())
                return
            t = table("metric", "value", title="governance")
            for name, value in report.gauges().items():
                t.add_row(name.replace("_", " "), f"{value:g}")
            console.print(t)
            for title, items in (
                    ("deprecated features read", report.deprecated_features_read),
                    ("without owner or description",
                     [f"{u['name']} ({', '.join(u['missing'])})" for u in report.undocumented]),
                    ("unreviewed breaking changes",
                     [f"{u['feature_version']} by {u['applied_by']}: {u['reason']}"
                      for u in report.unreviewed_breaking_changes]),
                    ("unapproved deprecations",
                     [u["message"] for u in report.unapproved_deprecations])):
                if items:
                    console.print(f"[bold]{title}[/]")
                    for item in items:
                        console.print(f"  {show(item, 400)}")
