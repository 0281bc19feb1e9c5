"""The audit trail: list entries, verify the hash chain."""

from __future__ import annotations

from pathlib import Path

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


def register(app: typer.Typer) -> None:
    audit = typer.Typer(help="The audit trail: every change and every denied request, "
                             "hash-chained.", no_args_is_help=True)
    app.add_typer(audit, name="audit")

    @audit.command("list")
    def list_entries(
        kind: str | None = typer.Option(None, "--kind", help="Only this object kind "
                                                             "(commit, feature_view, run ...)."),
        object_id: str | None = typer.Option(None, "--object", help="Only this object."),
        action: str | None = typer.Option(None, "--action", help="Only this action."),
        actor: str | None = typer.Option(None, "--actor", help="Only this principal."),
        denied: bool = typer.Option(False, "--denied", help="Only refused requests."),
        limit: int = typer.Option(50, "--limit", help="At most this many, newest first."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """The newest audit entries, newest first."""
        with open_store(repo) as store:
            found = store.audit_trail(kind=kind, object_id=object_id, action=action,
                                      actor=actor, decision="deny" if denied else None,
                                      limit=limit)
        if as_json:
            print_json([e.to_dict() for e in found])
            return
        t = table("seq", "at (UTC)", "actor", "action", "object", "decision",
                  ids=("seq", "at (UTC)", "decision"))
        for e in found:
            t.add_row(str(e.seq), when(e.at, seconds=False), show(e.actor, 24),
                      show(e.action, 32), f"{show(e.object_kind, 24)} "
                      f"{show(short_id(e.object_id), 48)}",
                      e.decision if e.decision == "allow" else f"[red]{e.decision}[/]")
        console.print(t)

    @audit.command("verify")
    def verify(
        key_env: str | None = typer.Option(
            None, "--key-env", help="Environment variable holding the signing key (default "
                                    "FEATURELEDGER_AUDIT_KEY when set): signatures checked."),
        anchor: str | None = typer.Option(
            None, "--anchor", help="SEQ:HASH printed by an earlier verify and kept outside "
                                   "the registry: it must still be in the chain."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Walk the audit hash chain; exit 1 naming the first edited, deleted, inserted or
        reordered entry."""
        import os

        key = None
        if key_env:
            key = os.environ.get(key_env)
            if not key:
                console.print(f"[red]error[/] environment variable {show(key_env, 64)} is "
                              "not set; export the audit signing key there")
                raise typer.Exit(2)
        with open_store(repo) as store:
            result = store.verify_audit(key=key, anchor=anchor)
        if as_json:
            print_json(result.to_dict())
        elif result.ok:
            signed = (f", {result.signatures_checked} signatures checked"
                      if result.signatures_checked else "")
            console.print(f"[green]ok[/] audit chain of project {show(result.project)}: "
                          f"{result.entries} entries{signed}; head "
                          f"{result.head_seq}:{result.head_hash}")
        else:
            first = result.first_bad
            assert first is not None
            console.print(f"[red]broken[/] audit chain of project {show(result.project)}: "
                          f"first bad entry {first.seq} ({first.kind}): {show(first.message)}")
            for p in result.problems[1:20]:
                console.print(f"  also entry {p.seq} ({p.kind}): {show(p.message)}")
        if not result.ok:
            raise typer.Exit(1)
