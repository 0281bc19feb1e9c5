"""Data-quality commands: drift, quality-policy, checks, schema-drift, alerts, scoreboard,
rollback-view, bias, skew."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from featureledger.cli.common import JsonOption, RepoOption, console, open_store, print_json, show
from featureledger.model.timeutil import from_us

_STATUS = {"ok": "green", "drift": "yellow", "skew": "yellow", "failed": "red",
           "skipped": "cyan", "unchecked": "dim"}


def _num(v: Any, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _features_table(title: str, features: list[Any]) -> Table:
    t = Table(title=title)
    for col in ("feature", "kind", "drift", "PSI", "KS", "JS", "chi2 p", "mean shift (sd)",
                "null rate", "reasons"):
        t.add_column(col, overflow="fold")
    for f in features:
        m = f.metrics
        t.add_row(show(f.feature), f.kind,
                  "[yellow]yes[/]" if f.drifted else "[green]no[/]",
                  _num(m.get("psi")), _num(m.get("ks")), _num(m.get("js")),
                  _num(m.get("chi2_p")), _num(m.get("mean_shift")),
                  f"{_num(m.get('null_rate_baseline'), 3)} -> "
                  f"{_num(m.get('null_rate_current'), 3)}",
                  show("; ".join(f.reasons)) + (" (approximate)" if f.approximate else ""))
    return t


def _policy_from(text: str | None, path: Path | None) -> dict[str, Any]:
    import yaml

    from featureledger.errors import QualityError

    if path is not None:
        text = path.read_text()
    try:
        data = yaml.safe_load(text or "{}") or {}
    except yaml.YAMLError as exc:
        raise QualityError(f"the policy is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise QualityError("a quality policy is a mapping, e.g. {on_drift: quarantine}")
    return data


def register(app: typer.Typer) -> None:
    @app.command()
    def drift(
        view: str = typer.Argument(..., help="Feature view (NAME or NAME@VERSION)."),
        baseline: str = typer.Option(
            "previous", "--baseline",
            help="previous[:N], commits:A..B, commits:A,B, commit:ID, "
                 "window:START..END (commit time) or dataset:DS_ID."),
        current: str = typer.Option("latest", "--current",
                                    help="The side compared with the baseline (same forms)."),
        exact: bool = typer.Option(False, "--exact",
                                   help="Compute from the rows, not from stored profiles."),
        feature: list[str] = typer.Option([], "--feature", help="Only these features."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Per-feature drift of VIEW between a baseline and the current data."""
        name, _, ver = view.partition("@")
        with open_store(repo) as store:
            report = store.drift(name, baseline=baseline, current=current,
                                 version=int(ver) if ver else None, exact=exact,
                                 features=feature or None)
        if as_json:
            print_json(report.to_dict())
            return
        b, c = report.baseline, report.current
        console.print(f"{report.view}: baseline {show(b['spec'])} ({b['commits']} commits, "
                      f"{b['rows']} rows) vs {show(c['spec'])} ({c['commits']} commits, "
                      f"{c['rows']} rows), from {report.method}")
        console.print(_features_table("drift", report.features))
        style = _STATUS[report.status]
        console.print(f"[{style}]{report.status}[/]"
                      + (f": {', '.join(report.drifted)}" if report.drifted else ""))

    @app.command("quality-policy")
    def quality_policy(
        view: str = typer.Argument(..., help="Feature view name."),
        set_: str | None = typer.Option(
            None, "--set", help="The policy as YAML/JSON, e.g. "
                                "'{on_drift: quarantine, max_rejected_fraction: 0.05}'."),
        file: Path | None = typer.Option(None, "--file", help="Read the policy from a file."),
        remove: bool = typer.Option(False, "--remove", help="Remove the view's policy."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Show, set or remove VIEW's quality policy (checked on every ingestion)."""
        with open_store(repo) as store:
            if remove:
                store.set_quality_policy(view, None)
                pol = None
            elif set_ is not None or file is not None:
                pol = store.set_quality_policy(view, _policy_from(set_, file))
            else:
                pol = store.quality_policy(view)
        doc = pol.to_dict() if pol is not None else None
        if as_json:
            print_json(doc)
        elif doc is None:
            console.print(f"{view}: no quality policy")
        else:
            console.print(f"{view}: " + show(json.dumps(doc, indent=2), 10_000))

    @app.command()
    def checks(
        view: str | None = typer.Argument(None, help="Only this feature view."),
        limit: int = typer.Option(20, "--limit", help="At most this many, newest first."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """The quality checks of commits (drift against the policy's baseline)."""
        with open_store(repo) as store:
            found = store.quality_checks(view, limit=limit)
        if as_json:
            print_json([c.to_dict() for c in found])
            return
        t = Table(title="quality checks")
        for col in ("checked (UTC)", "commit", "view", "status", "action", "drifted"):
            t.add_column(col, overflow="fold")
        for c in found:
            drifted = (c.result.get("drift") or {}).get("drifted") or []
            t.add_row(from_us(c.checked_at).strftime("%Y-%m-%d %H:%M:%S"), c.commit_id,
                      f"{c.view_name}@{c.view_version}",
                      f"[{_STATUS.get(c.status, '')}]{c.status}[/]", c.action,
                      show(", ".join(drifted)))
        console.print(t)

    @app.command("schema-drift")
    def schema_drift_cmd(
        view: str = typer.Argument(..., help="Feature view (NAME or NAME@VERSION)."),
        path: str | None = typer.Argument(None, help="Parquet/CSV input; default: the "
                                                     "view's own source."),
        mapping: list[str] = typer.Option([], "--map", help="Column map as for ingest."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """How a source's columns differ from VIEW's definition (exit 3 on an error)."""
        from featureledger.cli.data_cmds import _parse_map

        name, _, ver = view.partition("@")
        with open_store(repo) as store:
            report = store.schema_drift(name, path, version=int(ver) if ver else None,
                                        column_map=_parse_map(mapping))
        if as_json:
            print_json(report.to_dict())
        elif not report.findings:
            console.print(f"[green]{name}: the source matches the definition[/]")
        else:
            t = Table(title=f"{name}: schema drift")
            for col in ("kind", "column", "field", "severity", "detail", "what to do"):
                t.add_column(col, overflow="fold")
            for f in report.findings:
                sev = {"error": "red", "warning": "yellow"}.get(f.severity, "")
                t.add_row(f.kind, show(f.column), show(f.field or "-"),
                          f"[{sev}]{f.severity}[/]" if sev else f.severity, show(f.detail),
                          show(f.action))
            console.print(t)
        if report.errors:
            raise typer.Exit(3)

    @app.command()
    def alerts(
        ack: str | None = typer.Option(None, "--ack", help="Acknowledge this alert id."),
        reason: str | None = typer.Option(None, "--reason", help="Why (with --ack)."),
        all_: bool = typer.Option(False, "--all", help="Acknowledged ones too."),
        subject: str | None = typer.Option(None, "--subject",
                                           help="Only about this view, commit or deployment."),
        limit: int = typer.Option(50, "--limit", help="At most this many, newest first."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """List open alerts, or acknowledge one with --ack ID."""
        with open_store(repo) as store:
            if ack is not None:
                a = store.acknowledge_alert(ack, reason)
                if as_json:
                    print_json(a.to_dict())
                else:
                    console.print(f"acknowledged {a.alert_id} ({show(a.subject)})")
                return
            found = store.alerts(status=None if all_ else "open", subject=subject,
                                 limit=limit)
        if as_json:
            print_json([a.to_dict() for a in found])
            return
        t = Table(title="alerts")
        for col in ("alert", "severity", "rule", "subject", "message", "seen", "last (UTC)",
                    "status", "lineage"):
            t.add_column(col, overflow="fold")
        for a in found:
            sev = {"critical": "red", "warning": "yellow"}.get(a.severity, "")
            t.add_row(a.alert_id, f"[{sev}]{a.severity}[/]" if sev else a.severity, a.rule,
                      show(a.subject), show(a.message, 300), str(a.occurrences),
                      from_us(a.last_seen_at).strftime("%Y-%m-%d %H:%M:%S"), a.status,
                      show(a.lineage_node or "-"))
        console.print(t)

    @app.command()
    def scoreboard(
        view: list[str] = typer.Option([], "--view", help="Only these views."),
        commits: int = typer.Option(5, "--commits", help="Commits shown per view."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Quality KPIs per view, commit, experiment and deployment."""
        with open_store(repo) as store:
            board = store.scoreboard(views=view or None, commits=commits)
        if as_json:
            print_json(board.to_dict())
            return
        t = Table(title="quality scoreboard")
        for col in ("kind", "subject", "pass rate", "drift", "freshness", "completeness",
                    "open alerts", "commits", "quarantined"):
            t.add_column(col, overflow="fold")
        for r in board.rows:
            t.add_row(r.kind, show(r.subject),
                      "-" if r.validation_pass_rate is None
                      else f"{r.validation_pass_rate:.2%}",
                      f"[{_STATUS.get(r.drift, '')}]{r.drift}[/]",
                      "-" if r.freshness_s is None else f"{r.freshness_s:,.0f}s",
                      "-" if r.completeness is None else f"{r.completeness:.2%}",
                      str(r.open_alerts), str(r.commits), str(r.quarantined))
        console.print(t)

    @app.command("rollback-view")
    def rollback_view(
        view: str = typer.Argument(..., help="Feature view name."),
        to_commit: str | None = typer.Option(None, "--to-commit",
                                             help="Keep the data up to this commit."),
        to_time: str | None = typer.Option(None, "--to-time",
                                           help="Keep the data committed up to this time."),
        to_version: int | None = typer.Option(None, "--to-version",
                                              help="Make this version's definition current."),
        reason: str = typer.Option(..., "--reason", help="Why (audited)."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Roll VIEW back to an earlier data state or definition; nothing is deleted."""
        from featureledger.errors import StateError

        if (to_version is not None) + (to_commit is not None) + (to_time is not None) != 1:
            raise StateError("give exactly one of --to-commit, --to-time, --to-version")
        with open_store(repo) as store:
            if to_version is not None:
                plan = store.rollback_definition(view, to_version, reason=reason)
                doc: Any = [{"name": i.name, "action": i.action, "to_version": i.to_version}
                            for i in plan.items]
                text = f"{view}: definition of version {to_version} applied as " + ", ".join(
                    f"{i['name']}@{i['to_version']} ({i['action']})" for i in doc)
            else:
                done = store.rollback_data(view, to_commit=to_commit, to_time=to_time,
                                           reason=reason)
                doc = [c.commit_id for c in done]
                text = (f"{view}: {len(done)} commit(s) rolled back"
                        + (": " + ", ".join(doc) if doc else ""))
        if as_json:
            print_json(doc)
        else:
            console.print(text)

    @app.command()
    def bias(
        dataset_id: str = typer.Argument(..., help="A training dataset (ds_...)."),
        population: str = typer.Option("previous:1000000", "--population",
                                       help="The population baseline of each view."),
        exact: bool = typer.Option(False, "--exact", help="From the rows, not profiles."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """A training dataset's distributions and entity coverage vs the population."""
        with open_store(repo) as store:
            report = store.training_bias(dataset_id, population=population, exact=exact)
        _print_skew(report, as_json)

    @app.command()
    def skew(
        deployment: str = typer.Argument(..., help="A deployment (dep_...) or model."),
        since: str | None = typer.Option(None, "--since", help="Only samples since then."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Served values (sampled feature log) vs the model's training data."""
        with open_store(repo) as store:
            report = store.serving_skew(deployment, since=since)
        _print_skew(report, as_json)


def _print_skew(report: Any, as_json: bool) -> None:
    if as_json:
        print_json(report.to_dict())
        return
    console.print(f"{report.kind} of {report.subject}: {report.sample_rows} rows")
    console.print(_features_table(report.kind, report.features))
    for view, cov in report.coverage.items():
        if cov.get("coverage") is not None:
            console.print(f"{view}: {cov['covered_entities']} of "
                          f"{cov['population_entities']} entities covered "
                          f"({cov['coverage']:.1%}), {cov['unknown_entities']} unknown")
    console.print(f"[{_STATUS[report.status]}]{report.status}[/]")
