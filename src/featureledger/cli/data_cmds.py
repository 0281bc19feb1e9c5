"""Data commands: ingest, commits, commit show, quarantine, rollback, restore, compact, gc."""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from featureledger.cli.common import (
    JsonOption,
    RepoOption,
    console,
    err_console,
    open_store,
    print_json,
    short_hash,
    short_id,
    show,
    show_repr,
    table,
    when,
)
from featureledger.model.timeutil import from_us

if TYPE_CHECKING:
    from rich.table import Table

_STATUS_STYLE = {"committed": "green", "quarantined": "yellow", "rolled_back": "red",
                 "pending": "cyan"}  # a push not landed yet


def _parse_map(items: list[str]) -> dict[str, str | None] | None:
    from featureledger.errors import IngestionError

    out: dict[str, str | None] = {}
    for item in items:
        src, sep, dst = item.partition("=")
        if not sep or not src:
            raise IngestionError(
                f"--map {item!r} is not understood; write --map input_column=field_name, or "
                "--map input_column= to drop a column"
            )
        out[src.strip()] = dst.strip() or None
    return out or None


def _sample_cell(sample: dict[str, Any]) -> str:
    sizes = sample.get("truncated") or {}
    return f"row {sample['row']}: " + ", ".join(
        f"{show(k)}={show_repr(v)}" + (f" ({sizes[k]})" if k in sizes else "")
        for k, v in sample["values"].items())


def report_table(report: Any, title: str = "validation") -> Table:
    """A validation report as a table: one row per rule that failed, with sample rows (every
    value cut to ``bounds.value_chars``, with its size; markup escaped)."""
    t = table("rule", "constraint", "failed", "first rows",
              title=f"{show(title)}: {report.rows_rejected} of {report.rows_checked} rows "
                    "rejected")
    for r in report.failures:
        samples = "\n".join(_sample_cell(s) for s in r.sample)
        t.add_row(f"[red]{show(r.rule)}[/]", show(r.detail), str(r.failed), samples)
    return t


def _print_unparsed(report: Any, out: Any) -> None:
    """The input lines a report says could not be parsed (drop_invalid), if any."""
    if not getattr(report, "rows_unparsed", 0):
        return
    out.print(f"[yellow]{report.rows_unparsed} input line(s) could not be parsed[/] and were "
              "not read:")
    for u in report.unparsed[:10]:
        out.print(f"  {show(u['file'])} line {u['line']}: {show(u['problem'])}")
    if report.rows_unparsed > 10:
        out.print(f"  ... and {report.rows_unparsed - 10} more")


def _commit_table(commits: list[Any]) -> Table:
    """Commits in 80 columns: the rejected count and the run only when some commit has
    them."""
    rejected = any(c.rejected_count for c in commits)
    runs = any(c.run_id for c in commits)
    cols = ["commit", "view", "committed (UTC)", "rows", *(["rejected"] if rejected else []),
            "status", "by", *(["run"] if runs else [])]
    t = table(*cols, title="commits", ids=("commit", "view", "committed (UTC)", "rows",
                                            "status", "run"))
    for c in commits:
        style = _STATUS_STYLE.get(c.status, "")
        status = f"[{style}]{c.status}[/]"
        stale = ""
        if c.stale:  # a derived commit whose inputs changed: 'derive VIEW' recomputes it
            stale = f"[yellow]stale[/]: {show('; '.join(c.stale), 300)}"
        t.add_row(short_id(c.commit_id), c.view_ref, when(c.commit_time, seconds=False),
                  str(c.row_count), *([str(c.rejected_count)] if rejected else []),
                  status + (" [yellow]stale[/]" if c.stale else ""), show(c.user),
                  *([short_id(c.run_id)] if runs else []))
        if stale:
            t.add_row("", stale, *[""] * (len(cols) - 2))
    return t


def _print_commit(c: Any) -> None:
    console.print(f"[bold]{c.commit_id}[/]  {c.view_ref}  "
                  f"[{_STATUS_STYLE.get(c.status, '')}]{c.status}[/]"
                  + (f" ({c.status_reason})" if c.status_reason else ""))
    console.print(f"  committed {from_us(c.commit_time).isoformat()} by {c.user}"
                  + (f" in run {c.run_id}" if c.run_id else ""))
    console.print(f"  rows {c.row_count}, rejected {c.rejected_count}")
    console.print(f"  source {show(c.source.get('uri'))} (sha256 "
                  f"{short_hash(c.source.get('digest'))})")
    for step in c.steps:
        where = f" {step['column']}" if "column" in step else ""
        console.print(f"  step {show(step['step'])}{show(where)}: "
                      f"{show(json.dumps(step.get('params', {}), default=str), 2_000)}")
    # files live under a folder named after the commit: that folder once, then the names
    folder = posixpath.commonpath(c.files) if len(c.files) > 1 else posixpath.dirname(
        c.files[0]) if c.files else ""
    console.print(f"  content sha256 {short_hash(c.content_digest)}; files in "
                  f"{show(folder.replace(c.commit_id, '<commit>'))}/:")
    for f in c.files:
        console.print(f"    {show(posixpath.relpath(f, folder) if folder else f)}")
    if c.validation.get("rejected_path"):
        console.print(f"  rejected rows: {c.validation['rejected_path']}")
    if c.validation.get("rows_unparsed"):
        console.print(f"  unparsed input lines: {c.validation['rows_unparsed']}")
    t = table("column", "count", "nulls", "min", "max", "mean", "p50", "distinct~",
              title="profile")
    for name, p in c.profile.get("columns", {}).items():
        q = p.get("quantiles") or {}
        mean = p.get("mean")
        t.add_row(show(name), str(p.get("count")), str(p.get("nulls")),
                  show(p.get("min", "")), show(p.get("max", "")),
                  "" if mean is None else f"{mean:.6g}" if isinstance(mean, float)
                  else show(mean),
                  show(q.get("p50", "")), str(p.get("distinct_estimate", "")))
    console.print(t)


def register(app: typer.Typer) -> None:
    @app.command()
    def ingest(
        view: str = typer.Argument(..., help="Feature view name (NAME or NAME@VERSION)."),
        path: str | None = typer.Argument(
            None, help="Parquet/CSV file, folder or glob, relative to the repository; "
                       "default: the view's own source."),
        mode: str = typer.Option("strict", "--mode",
                                 help="strict: any invalid row rejects the commit; "
                                      "drop_invalid: commit the valid rows."),
        duplicates: str = typer.Option(
            "reject", "--duplicates",
            help="Rows with the same keys and event time. reject: they all fail; "
                 "keep_last: keep the latest created timestamp, then the latest in the "
                 "input, and drop the others."),
        mapping: list[str] = typer.Option([], "--map",
                                          help="Rename an input column: --map src=field "
                                               "(--map src= drops it). Repeatable."),
        filter_sql: str | None = typer.Option(None, "--filter",
                                              help="One DuckDB SQL boolean expression selecting "
                                                   "input rows."),
        run_id: str | None = typer.Option(None, "--run-id", help="Attribute to this run."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Validate a file and write it as one commit of VIEW (exit 3 when rejected)."""
        from featureledger.errors import ValidationFailedError

        name, _, ver = view.partition("@")
        with open_store(repo) as store:
            try:
                result = store.ingest(name, path, version=int(ver) if ver else None,
                                      mode=mode, duplicates=duplicates,
                                      column_map=_parse_map(mapping),
                                      filter=filter_sql, run_id=run_id)
            except ValidationFailedError as exc:
                if as_json:
                    print_json({"error": "validation_failed", "message": str(exc),
                                "report": getattr(exc.report, "to_dict", dict)()})
                else:
                    if exc.report is not None:
                        err_console.print(report_table(exc.report, f"{name}: rejected"))
                        _print_unparsed(exc.report, err_console)
                    else:
                        err_console.print(show(str(exc), 2_000))
                    err_console.print("[red]nothing was written[/]; fix the data or use "
                                      "--mode drop_invalid")
                raise typer.Exit(3) from None
        if as_json:
            print_json(result.to_dict())
            return
        superseded = result.report.rows_superseded
        console.print(f"committed [bold]{result.commit_id}[/] to {result.view_ref}")
        console.print(f"  {result.row_count} rows, {result.rejected_count} rejected"
                      + (f", {superseded} superseded by a later duplicate (dropped)"
                         if superseded else ""))
        if result.rejected_count:
            console.print(report_table(result.report, "dropped rows"))
            console.print(f"rejected rows kept in {result.rejected_path}")
        _print_unparsed(result.report, console)
        if result.quality is not None:  # the view's quality policy checked the commit
            q = result.quality
            console.print(f"quality check: {q.status}"
                          + (f"; [yellow]{result.commit.status}[/]: "
                             f"{show(result.commit.status_reason or '', 500)}"
                             if result.commit.status != "committed" else ""))

    @app.command()
    def commits(
        view: str | None = typer.Argument(None, help="Only this feature view."),
        status: str | None = typer.Option(None, "--status",
                                          help="committed, pending, quarantined or rolled_back."),
        limit: int | None = typer.Option(None, "--limit", help="At most this many."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """List commits, oldest first."""
        with open_store(repo) as store:
            found = store.commits(view, status=status, limit=limit)
        if as_json:
            print_json([c.to_dict() for c in found])
        else:
            console.print(_commit_table(found))

    commit_app = typer.Typer(help="Inspect one commit.", no_args_is_help=True)
    app.add_typer(commit_app, name="commit")

    @commit_app.command("show")
    def commit_show(commit_id: str, repo: Path = RepoOption, as_json: bool = JsonOption) -> None:
        """A commit's source, steps, files, validation report and profile."""
        with open_store(repo) as store:
            c = store.get_commit(commit_id)
        if as_json:
            print_json(c.to_dict())
        else:
            _print_commit(c)

    def _status_command(verb: str, help_text: str) -> None:
        @app.command(verb, help=help_text)
        def _cmd(commit_id: str,
                 reason: str = typer.Option(..., "--reason", help="Why (kept in the audit)."),
                 repo: Path = RepoOption, as_json: bool = JsonOption) -> None:
            with open_store(repo) as store:
                c = getattr(store, verb)(commit_id, reason)
            if as_json:
                print_json(c.to_dict())
            else:
                console.print(f"{c.commit_id} is now [{_STATUS_STYLE[c.status]}]{c.status}[/]")

    _status_command("quarantine", "Hide a commit from retrieval and serving (reversible).")
    _status_command("rollback", "Mark a commit rolled back: never read unless restored.")
    _status_command("restore", "Make a quarantined or rolled-back commit visible again.")

    @app.command()
    def compact(
        view: str | None = typer.Argument(None, help="Feature view (default: every view)."),
        version: int | None = typer.Option(None, "--version",
                                           help="Only this version of the view."),
        min_commits: int = typer.Option(2, "--min-commits",
                                        help="Compact a version with at least this many "
                                             "commits outside a segment."),
        list_: bool = typer.Option(False, "--list", help="List the active segments."),
        retire: str | None = typer.Option(None, "--retire", metavar="SEGMENT",
                                          help="Read a segment's commits from their own "
                                               "files again."),
        reason: str = typer.Option("", "--reason", help="Why (recorded with --retire)."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Rewrite small commit files into files clustered by key and sorted by time."""
        with open_store(repo) as store:
            if list_:
                segs = store.segments(view)
                if as_json:
                    print_json([{k: v for k, v in s.to_dict().items()
                                 if k != "file_manifest"} for s in segs])
                    return
                t = table("segment", "view", "commits", "rows", "files", "created (UTC)",
                          ids=("segment", "view", "created (UTC)"))
                for seg in segs:
                    t.add_row(short_id(seg.segment_id), seg.view_ref, str(len(seg.commit_ids)),
                              str(seg.row_count), str(len(seg.files)),
                              when(seg.created_at, seconds=False))
                console.print(t)
                return
            if retire is not None:
                seg = store.retire_segment(retire, reason or "retired by hand")
                if as_json:
                    print_json({"segment_id": seg.segment_id, "status": seg.status})
                else:
                    console.print(f"segment {seg.segment_id} retired: its "
                                  f"{len(seg.commit_ids)} commits are read from their own "
                                  "files")
                return
            results = store.compact(view, version=version, min_commits=min_commits)
        if as_json:
            print_json([r.to_dict() for r in results])
            return
        for r in results:
            if r.segment_id is None:
                console.print(f"{r.view}@{r.version}: {r.reason}")
            else:
                console.print(f"{r.view}@{r.version}: {r.commits} commits, {r.rows} rows, "
                              f"{r.files_before} -> {r.files_after} file(s) in "
                              f"{r.seconds:.2f}s (segment {r.segment_id})")

    @app.command()
    def gc(
        grace: float = typer.Option(3600, "--grace",
                                    help="Keep unreferenced folders younger than this (s)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would go."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Remove commit files no registry row references (left by interrupted ingestions)."""
        with open_store(repo) as store:
            report = store.gc(grace_seconds=grace, dry_run=dry_run)
        if as_json:
            print_json({"removed": report.removed, "kept_recent": report.kept_recent,
                        "bytes_freed": report.bytes_freed, "dry_run": dry_run})
            return
        verb = "would remove" if dry_run else "removed"
        console.print(f"{verb} {len(report.removed)} folder(s), {report.bytes_freed} bytes; "
                      f"kept {len(report.kept_recent)} younger than {grace:g}s")
        for rel in report.removed:
            console.print(f"  {rel}")
