"""Derived views: derive (incremental, backfill, full) and the stale commits of a view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from featureledger.cli.common import JsonOption, RepoOption, console, open_store, print_json, show


def register(app: typer.Typer) -> None:
    @app.command()
    def derive(
        view: str = typer.Argument(..., help="The derived feature view."),
        full: bool = typer.Option(False, "--full",
                                  help="Recompute everything: the live derived commits are "
                                       "rolled back in the same transaction."),
        start: str | None = typer.Option(None, "--start",
                                         help="Backfill from this event time (ISO 8601)."),
        end: str | None = typer.Option(None, "--end",
                                       help="Backfill up to this event time (exclusive)."),
        chunk: str | None = typer.Option(None, "--chunk",
                                         help="Backfill in pieces this long (1d, 6h): one "
                                              "commit each, resumable."),
        stale: bool = typer.Option(False, "--stale",
                                   help="Only list the stale commits and why; derive nothing."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Compute a derived view's pending rows from its parents and commit them.

        Incremental by default (only parent commits not yet derived, plus stale derived
        commits recomputed); rerun after an interruption to continue; nothing new, no commit.
        """
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        with open_store(repo) as store:
            if stale:
                found = store.stale(view)
                if as_json:
                    print_json({c: list(why) for c, why in found.items()})
                    return
                if not found:
                    console.print(f"{show(view)}: no stale commits")
                for cid, why in found.items():
                    console.print(f"[yellow]stale[/] {cid}: {show('; '.join(why), 1_000)}")
                return
            if as_json or (start is None and end is None):
                result = store.derive(view, full=full, start=start, end=end, chunk=chunk)
            else:
                with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                              MofNCompleteColumn(), TextColumn("{task.fields[rows]} rows"),
                              TimeElapsedColumn(), console=console,
                              transient=False) as bar:
                    task = bar.add_task(f"derive {view}", total=None, rows=0)

                    def progress(p: Any) -> None:
                        bar.update(task, completed=p.done, total=p.total, rows=p.rows)

                    result = store.derive(view, full=full, start=start, end=end, chunk=chunk,
                                          progress=progress)
        if as_json:
            print_json(result.to_dict())
            return
        if result.unchanged:
            console.print(f"{result.view_ref}: nothing to derive (every parent commit is "
                          "derived and nothing is stale)")
        for c in result.commits:
            console.print(f"committed [bold]{c.commit_id}[/] to {c.view_ref}: {c.row_count} "
                          f"rows from {len(c.source['parents'][0]['commits'])} parent "
                          "commit(s)")
        for cid in result.superseded:
            console.print(f"rolled back stale {cid} (superseded)")
        if result.stale_left:
            console.print(f"[yellow]{len(result.stale_left)} stale commit(s) left[/]: run "
                          f"'featureledger derive {show(view)}' to recompute them")
