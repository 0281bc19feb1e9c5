"""Definition commands: init, plan, apply, list, show, versions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from featureledger.cli.common import (
    JsonOption,
    RepoOption,
    console,
    open_store,
    print_json,
    short_hash,
    table,
    when,
)
from featureledger.cli.common import show as show_value

if TYPE_CHECKING:
    from rich.table import Table

_ACTION_STYLE = {
    "unchanged": "dim",
    "new": "green",
    "new_version": "yellow",
    "docs_update": "cyan",
}


def _plan_table(plan: Any, title: str) -> Table:
    t = table("kind", "name", "action", "version", "changes", title=title,
              ids=("kind", "name", "version"))
    for item in plan.items:
        version = (
            f"{item.from_version} -> {item.to_version}"
            if item.action == "new_version"
            else str(item.to_version)
        )
        lines = []
        refused = {id(c) for c in item.refused}
        for c in item.changes:
            mark = "[red]REFUSED[/] " if id(c) in refused else ""
            where = f"{c.field}: " if c.field else ""
            lines.append(f"{mark}{c.change} ({where}{c.detail})")
        style = _ACTION_STYLE.get(item.action, "")
        t.add_row(item.kind, item.name, f"[{style}]{item.action}[/]", version,
                  "\n".join(lines) or "-")
    return t


def _print_plan(plan: Any, title: str, as_json: bool) -> None:
    if as_json:
        print_json(plan.to_dict())
        return
    console.print(_plan_table(plan, title))
    changed = len(plan.changed)
    verb = "changed" if plan.applied else "would change"
    console.print(
        f"{changed} of {len(plan.items)} object(s) {verb}" if changed
        else "Everything is unchanged."
    )
    for item in plan.items:
        for note in item.notes:
            style = "yellow" if item.starts_empty else "cyan"
            console.print(f"[{style}]- {note}[/]")
    for item in plan.refused:
        console.print(
            f"[red]{item.kind} {item.name!r}: {len(item.refused)} change(s) break compatibility "
            f"mode {item.compatibility!r}[/]"
        )


MigrationOption = typer.Option(
    None, "--migration", metavar="VIEW=FILE",
    help="Fill VIEW's new version from its previous version's rows with the SELECT in FILE "
         "(over the relation 'old'); repeatable.")


def _migrations(repo: Path, specs: list[str] | None) -> dict[str, str] | None:
    if not specs:
        return None
    out = {}
    for spec in specs:
        view, eq, file = spec.partition("=")
        if not eq or not view or not file:
            raise typer.BadParameter(f"--migration {spec!r}: write VIEW=FILE, e.g. "
                                     "driver_stats=migrations/driver_stats_v3.sql")
        path = Path(file) if Path(file).is_absolute() else repo / file
        if not path.is_file():
            raise typer.BadParameter(f"--migration {spec!r}: {path} is not a file")
        out[view] = path.read_text()
    return out


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        path: Path = typer.Argument(Path("demo-repo"), help="Folder to create."),
        with_data: bool = typer.Option(True, "--with-data/--no-data",
                                       help="Also generate the sample data."),
        force: bool = typer.Option(False, "--force", help="Write into a non-empty folder."),
        data_end: str = typer.Option(
            None, "--data-end", metavar="DATE",
            help="End of the 7 days of sample data: an ISO date or 'today' "
                 "(default 2026-01-08, the same files everywhere)."),
    ) -> None:
        """Scaffold a working feature repository with a deterministic sample-data generator."""
        from featureledger.cli.scaffold import scaffold

        files = scaffold(path, force=force, with_data=with_data, data_end=data_end)
        console.print(f"Created feature repository [bold]{path}[/] with {len(files)} files:")
        for f in files:
            console.print(f"  {f}")
        console.print(f"Next: featureledger --repo {path} plan")

    @app.command()
    def plan(repo: Path = RepoOption, as_json: bool = JsonOption,
             migration: list[str] = MigrationOption) -> None:
        """Show what apply would do: every change classified, and for each new version
        where its data comes from and which feature sets it re-pins."""
        result = open_store(repo).plan(migrations=_migrations(repo, migration))
        _print_plan(result, "plan", as_json)
        if result.refused:
            raise typer.Exit(4)

    @app.command()
    def apply(
        repo: Path = RepoOption,
        allow_breaking: str = typer.Option(
            None, "--allow-breaking", metavar="REASON",
            help="Apply changes that break a compatibility mode, recording REASON."),
        as_json: bool = JsonOption,
        migration: list[str] = MigrationOption,
        experiment: str = typer.Option(
            None, "--experiment", metavar="NAME",
            help="The experiment new feature-view versions are created for."),
        hypothesis: str = typer.Option(
            None, "--hypothesis", metavar="TEXT",
            help="What they are created to test (with --experiment)."),
    ) -> None:
        """Apply the repository's definitions (idempotent; all or nothing)."""
        store = open_store(repo)
        result = store.apply(allow_breaking=allow_breaking,
                             migrations=_migrations(repo, migration),
                             experiment=experiment, hypothesis=hypothesis)
        _print_plan(result, "applied", as_json)

    @app.command("list")
    def list_(
        kind: str = typer.Argument(None, help="entity, feature_view or feature_set"),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """List registered definitions (latest versions)."""
        store = open_store(repo)
        records = store.list(_kind(kind) if kind else None)
        if as_json:
            print_json([_record_summary(r) for r in records])
            return
        t = table("kind", "name", "version", "status", "description", title="definitions",
                  ids=("kind", "name"))
        for r in records:
            t.add_row(r.kind, r.name, str(r.version), r.status,
                      show_value(getattr(r.definition, "description", "") or ""))
        console.print(t)

    @app.command()
    def show(
        name: str = typer.Argument(..., help="Name, optionally name@VERSION."),
        kind: str = typer.Option("feature_view", "--kind", "-k"),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Show one definition version in full."""
        store = open_store(repo)
        base, _, v = name.partition("@")
        rec = store.registry.definitions.get(_kind(kind), base, int(v) if v else None)
        if as_json:
            print_json({**_record_summary(rec), "definition": rec.definition.to_dict()})
            return
        _print_definition(rec)

    @app.command()
    def versions(
        name: str = typer.Argument(..., help="Feature view name."),
        diff: str = typer.Option(None, "--diff", metavar="A..B",
                                 help="Classified diff between two versions, e.g. 1..3."),
        kind: str = typer.Option("feature_view", "--kind", "-k"),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """History of a definition, or the diff between two of its versions."""
        store = open_store(repo)
        if diff:
            a, sep, b = diff.partition("..")
            if not sep or not a.isdigit() or not b.isdigit():
                from featureledger.errors import DefinitionError

                raise DefinitionError(f"--diff {diff!r} must look like 1..3")
            changes = store.diff_versions(name, int(a), int(b))
            if as_json:
                print_json([{"change": c.change, "field": c.field, "detail": c.detail,
                             "backward": c.cls.backward, "forward": c.cls.forward}
                            for c in changes])
                return
            t = table("change", "field", "detail", "backward", "forward",
                      title=f"{name}: v{a} -> v{b}")
            for c in changes:
                t.add_row(c.change, c.field or "", c.detail, _yn(c.cls.backward),
                          _yn(c.cls.forward))
            console.print(t if changes else "identical")
            return
        records = store.versions(name, _kind(kind))
        if as_json:
            print_json([_record_summary(r) for r in records])
            return
        t = table("version", "created", "by", "status", "changes",
                  title=f"versions of {name}", ids=("created",))
        for r in records:
            changes = "\n".join(
                f"{c['change']} ({c['field'] + ': ' if c['field'] else ''}{c['detail']})"
                for c in r.changes
            )
            if r.breaking_reason:
                changes += f"\n[yellow]allowed: {r.breaking_reason}[/]"
            t.add_row(str(r.version), when(r.created_at, seconds=False),
                      show_value(r.created_by), r.status, changes or "-")
        console.print(t)


def _print_definition(rec: Any) -> None:
    """One definition version, in lines and a field table that fit 80 columns."""
    from featureledger.model.display import format_duration, format_value

    d = rec.definition
    console.print(f"[bold]{rec.kind} {rec.name}@{rec.version}[/]  {rec.status}"
                  f"{'  [yellow]STALE[/]' if rec.stale else ''}")
    console.print(f"created {when(rec.created_at)} UTC by {show_value(rec.created_by)}")
    console.print(f"hash {short_hash(rec.definition_hash)}")
    if getattr(d, "description", ""):
        console.print(f"description: {show_value(d.description)}")
    if getattr(d, "owner", ""):
        console.print(f"owner: {show_value(d.owner)}")
    if getattr(d, "tags", None):
        console.print("tags: " + show_value(", ".join(f"{k}={v}" if v else k
                                                     for k, v in d.tags.items())))
    if rec.kind == "feature_view":
        keys = ", ".join(f"{k} ({t})" for k, t in d.join_keys.items())
        console.print(f"entities: {', '.join(d.entities)}  keys: {keys}")
        created = (f"  created: {d.created_timestamp_field}" if d.created_timestamp_field
                   else "")
        console.print(f"timestamp: {d.timestamp_field}{created}  "
                      f"ttl: {format_duration(d.ttl) if d.ttl is not None else 'none'}  "
                      f"compatibility: {d.compatibility}")
        source = getattr(d.source, "path", None) or getattr(d.source, "name", None)
        if source:
            console.print(f"source: {show_value(source)}")
        t = table("field", "dtype", "null", "constraints", "unit", "description",
                  ids=("field",))
        for f in d.fields:
            t.add_row(f.name, f.dtype, "yes" if f.nullable else "no",
                      show_value("; ".join(_constraints(f, format_value))),
                      show_value(f.unit or ""), show_value(f.description))
        console.print(t)
        for c in d.checks:
            console.print(f"check {show_value(c.name)}: {show_value(c.expr, 2_000)}")
        for a in d.aggregations:
            slide = f" every {format_duration(a.slide)}" if a.slide else ""
            console.print(f"aggregation {show_value(a.name or '')}: {a.function}"
                          f"({show_value(a.column)}) over {format_duration(a.window)}{slide}")
        tr = d.transformation
        if tr is not None:
            console.print(f"transformation ({tr.language}) of {', '.join(tr.parents)}"
                          + (f", window {tr.window}" if tr.window else "") + ":")
            console.print(show_value(tr.code, 2_000), soft_wrap=True)
    elif rec.kind == "feature_set":
        for f in d.features:
            console.print(f"  {show_value(f)}")
    else:
        console.print("join keys: " + ", ".join(f"{k} ({t})" for k, t in d.join_keys.items()))
    if rec.breaking_reason:
        console.print(f"[yellow]breaking change allowed: {show_value(rec.breaking_reason)}[/]")


def _constraints(f: Any, fmt: Any) -> list[str]:
    """A field's constraints as a person writes them: ``0 <= x <= 1``, ``>= 0``,
    ``in [bike, van]``, ``regex ^[A-Z]{2}$``, ``default 0``."""
    out = []
    if f.min is not None and f.max is not None:
        out.append(f"{fmt(f.min)} <= x <= {fmt(f.max)}")
    elif f.min is not None:
        out.append(f">= {fmt(f.min)}")
    elif f.max is not None:
        out.append(f"<= {fmt(f.max)}")
    if f.allowed_values is not None:
        out.append(f"in {fmt(f.allowed_values)}")
    if f.regex is not None:
        out.append(f"regex {f.regex}")
    if f.default is not None:
        out.append(f"default {fmt(f.default)}")
    if f.allow_nan:
        out.append("NaN allowed")
    if f.tags:
        out.append("tags " + ", ".join(f"{k}={v}" if v else k for k, v in f.tags.items()))
    return out


def _yn(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[red]no[/]"


def _kind(kind: str) -> str:
    from featureledger.errors import DefinitionError

    aliases = {"view": "feature_view", "views": "feature_view", "feature_view": "feature_view",
               "feature_views": "feature_view", "entity": "entity", "entities": "entity",
               "feature_set": "feature_set", "feature_sets": "feature_set", "set": "feature_set"}
    if kind not in aliases:
        raise DefinitionError(f"unknown kind {kind!r}; use entity, feature_view or feature_set")
    return aliases[kind]


def _record_summary(r: Any) -> dict[str, Any]:
    return {
        "kind": r.kind,
        "name": r.name,
        "version": r.version,
        "status": r.status,
        "definition_hash": r.definition_hash,
        "created_at": r.created_at,
        "created_by": r.created_by,
        "changes": r.changes,
        "breaking_reason": r.breaking_reason,
        "stale": r.stale,
    }
