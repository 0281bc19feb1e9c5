"""Tracking and lineage commands: runs, experiments, models, deploy, lineage, impact,
reconcile."""

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
)
from featureledger.cli.common import when as _when


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return show(v)


def _tracking(store: Any) -> Any:
    from featureledger.tracking.service import TrackingService

    return store.ctx.part(TrackingService)


def _lineage(store: Any) -> Any:
    from featureledger.lineage.service import LineageService

    return store.ctx.part(LineageService)


def register(app: typer.Typer) -> None:
    runs = typer.Typer(help="Runs: list, show, compare.", no_args_is_help=True)
    app.add_typer(runs, name="runs")

    @runs.command("list")
    def runs_list(
        experiment: str = typer.Option(None, "--experiment", "-e", help="Only this experiment."),
        feature_version: str = typer.Option(None, "--feature-version", "-f",
                                            help="Only runs that read VIEW@N."),
        metric: str = typer.Option(None, "--metric", "-m",
                                   help="Filter on a metric's latest value, e.g. 'auc>0.8'."),
        status: str = typer.Option(None, "--status", help="running, finished, failed, killed."),
        limit: int = typer.Option(50, "--limit", "-n"),
        repo: Path = RepoOption, as_json: bool = JsonOption,
    ) -> None:
        """List runs, newest first."""
        with open_store(repo) as store:
            found = store.list_runs(experiment=experiment, feature_version=feature_version,
                                    metric=metric, status=status, limit=limit)
        if as_json:
            print_json([r.to_dict() for r in found])
            return
        several = len({r.experiment for r in found}) > 1
        title = (f"{len(found)} run(s)" if several or not found else
                 f"{len(found)} run(s) of experiment {show(found[0].experiment)}")
        t = table("run", "name", *(["experiment"] if several else []), "status",
                  "started (UTC)", "metrics", title=title,
                  ids=("run", "name", "status", "started (UTC)"))
        for r in found:
            t.add_row(short_id(r.run_id), show(r.name),
                      *([show(r.experiment)] if several else []), r.status,
                      _when(r.start_time, seconds=False),
                      "\n".join(f"{k}={_fmt(v)}" for k, v in r.metrics.items()) or "-")
        console.print(t)

    @runs.command("show")
    def runs_show(run_id: str, repo: Path = RepoOption, as_json: bool = JsonOption) -> None:
        """A run: params, metrics, tags, code version, datasets, models."""
        with open_store(repo) as store:
            r = store.get_run(run_id)
        if as_json:
            print_json(r.to_dict())
            return
        console.print(f"[bold]{r.run_id}[/] ({r.name}) in experiment {r.experiment}: "
                      f"{r.status}")
        console.print(f"  user {r.user}, started {_when(r.start_time)}, "
                      f"ended {_when(r.end_time)}")
        if r.git_commit:
            console.print(f"  code {r.git_commit}" + (" (dirty)" if r.git_dirty else ""))
        if r.error:
            console.print(f"  [red]error[/]: {r.error}")
        for title, items in (("params", r.params), ("metrics", r.metrics), ("tags", r.tags),
                             ("external ids", r.external_ids)):
            if items:
                console.print(f"  {title}: " + ", ".join(f"{k}={_fmt(v)}"
                                                         for k, v in items.items()))
        for title, items in (("datasets", r.datasets), ("models", r.models),
                             ("commits written", r.commits)):
            if items:
                console.print(f"  {title}:")
                for item in items:
                    console.print(f"    {show(item)}")

    @runs.command("compare")
    def runs_compare(run_a: str, run_b: str, repo: Path = RepoOption,
                     as_json: bool = JsonOption) -> None:
        """Params, metrics, feature versions and data (commits) of two runs side by side."""
        with open_store(repo) as store:
            c = store.compare_runs(run_a, run_b)
        if as_json:
            print_json(c.to_dict())
            return
        t = table("", "name", "A", "B", " ",
                  title=f"A = {run_a}\nB = {run_b}")

        def mark(a: Any, b: Any) -> str:
            return "[yellow]differs[/]" if a != b else ""

        for k, (a, b) in c.params.items():
            t.add_row("param", k, _fmt(a), _fmt(b), mark(a, b))
        for k, (a, b) in c.metrics.items():
            t.add_row("metric", k, _fmt(a), _fmt(b), mark(a, b))
        for k, (a, b) in c.feature_versions.items():
            t.add_row("reads", k, "yes" if a else "no", "yes" if b else "no", mark(a, b))
        for view in sorted(set(c.commits_only_a) | set(c.commits_only_b)):
            t.add_row("commits", view,
                      "\n".join(map(short_id, c.commits_only_a.get(view, []))) or "-",
                      "\n".join(map(short_id, c.commits_only_b.get(view, []))) or "-",
                      "[yellow]differs[/]")
        console.print(t)
        console.print("Same data (identical commits read)." if c.same_data else
                      f"{c.commits_common} commit(s) in common; the rows above differ.")

    @app.command("experiments")
    def experiments(repo: Path = RepoOption, as_json: bool = JsonOption) -> None:
        """List experiments."""
        with open_store(repo) as store:
            found = _tracking(store).list_experiments()
        if as_json:
            print_json([e.to_dict() for e in found])
            return
        t = table("experiment", "name", "description", "created (UTC)",
                  title=f"{len(found)} experiment(s)", ids=("experiment", "created (UTC)"))
        for e in found:
            t.add_row(short_id(e.experiment_id), show(e.name), show(e.description or "-"),
                      _when(e.created_at, seconds=False))
        console.print(t)

    @app.command("models")
    def models(name: str = typer.Argument(None, help="Only this model's versions."),
               repo: Path = RepoOption, as_json: bool = JsonOption) -> None:
        """List model versions with the feature versions they consume."""
        with open_store(repo) as store:
            found = _tracking(store).list_models(name)
        if as_json:
            print_json([m.to_dict() for m in found])
            return
        t = table("model", "id", "run", "reads", "datasets",
                  title=f"{len(found)} model version(s)",
                  ids=("model", "id", "run", "reads"))
        for m in found:
            reads = ([f"set {m.feature_set}"] if m.feature_set else []) + m.feature_versions
            t.add_row(show(m.ref), short_id(m.model_id), short_id(m.run_id),
                      show("\n".join(reads) or "-"),
                      "\n".join(f"{s}: {len(d)}" for s, d in m.datasets.items()) or "-")
        console.print(t)

    @app.command("deploy")
    def deploy(
        model: str = typer.Argument(None, help="Model version (name@N, name, mdl_ id)."),
        environment: str = typer.Option("production", "--env", "-e"),
        exception: list[str] = typer.Option(
            None, "--exception", help="VIEW@N=REASON: allow reading a deprecated version."),
        undeploy: str = typer.Option(None, "--undeploy", help="End this deployment (dep_ id)."),
        reason: str = typer.Option(None, "--reason", help="Why (for --undeploy)."),
        list_: bool = typer.Option(False, "--list", help="Show deployment history."),
        repo: Path = RepoOption, as_json: bool = JsonOption,
    ) -> None:
        """Deploy a model version, end a deployment, or show the history."""
        from featureledger.errors import TrackingError

        with open_store(repo) as store:
            if undeploy:
                dep = store.undeploy(undeploy, reason=reason)
                out: Any = dep.to_dict()
            elif list_ or not model:
                deps = _tracking(store).deployments(
                    environment=environment if environment != "production" or not list_
                    else None, model=model)
                out = [d.to_dict() for d in deps]
            else:
                exceptions = {}
                for item in exception or []:
                    fv, sep, why = item.partition("=")
                    if not sep:
                        raise TrackingError(f"--exception {item!r} must be VIEW@N=REASON")
                    exceptions[fv.strip()] = why.strip()
                dep = store.deploy(model, environment, exceptions=exceptions)
                out = dep.to_dict()
        if as_json:
            print_json(out)
            return
        if isinstance(out, list):
            ended = any(d["ended_at"] is not None for d in out)
            t = table("deployment", "model", "environment", "status", "deployed (UTC)",
                      *(["ended (UTC)"] if ended else []), title=f"{len(out)} deployment(s)",
                      ids=("deployment", "model", "environment", "status", "deployed (UTC)",
                           "ended (UTC)"))
            for d in out:
                t.add_row(short_id(d["deployment_id"]), show(d["model_ref"]),
                          show(d["environment"]), d["status"],
                          _when(d["deployed_at"], seconds=False),
                          *([_when(d["ended_at"], seconds=False)] if ended else []))
            console.print(t)
        else:
            console.print(f"{out['deployment_id']}: {out['model_ref']} in "
                          f"{out['environment']} is {out['status']}")

    @app.command("lineage")
    def lineage_cmd(
        node: str = typer.Argument(..., help="An id, VIEW@N, MODEL@N or a node like "
                                   "view:driver_stats@3."),
        fmt: str = typer.Option("text", "--format", "-f", help="text, mermaid, dot, html, json."),
        direction: str = typer.Option("both", "--direction", "-d",
                                      help="upstream, downstream or both."),
        depth: int = typer.Option(None, "--depth", help="At most this many hops."),
        to: str = typer.Option(None, "--to", help="Show the paths between NODE and this node."),
        output: Path = typer.Option(None, "--output", "-o", help="Write to this file."),
        repo: Path = RepoOption,
    ) -> None:
        """The lineage graph of a node, as text, Mermaid, DOT, JSON or an HTML page."""
        from featureledger.lineage.render import render

        with open_store(repo) as store:
            svc = _lineage(store)
            graph = (svc.path(node, to) if to else
                     svc.lineage(node, direction=direction, depth=depth))
        text = render(graph, fmt)
        if output is None and fmt == "html":
            output = Path(f"lineage-{graph.roots[0].replace(':', '_').replace('/', '_')}.html")
        if output is not None:
            output.write_text(text, encoding="utf-8")
            console.print(f"wrote {output.absolute()}")
        else:
            # the text tree is wrapped between words to the terminal (ids stay whole); the
            # machine formats are printed as they are
            console.print(text, markup=False, highlight=False, soft_wrap=fmt != "text")

    @app.command("impact")
    def impact(
        node: str = typer.Argument(..., help="VIEW@N, a commit id, a dataset id..."),
        commit_status: str = typer.Option(
            None, "--commit-status", help="Only the view version's commits in this status "
            "(e.g. quarantined)."),
        repo: Path = RepoOption, as_json: bool = JsonOption,
    ) -> None:
        """Which deployments, models, runs and datasets read NODE."""
        with open_store(repo) as store:
            rep = store.impact(node, commit_status=commit_status)
        if as_json:
            print_json(rep.to_dict())
            return
        console.print(f"[bold]{rep.node}[/] ({len(rep.seeds)} seed node(s)) is read by "
                      f"{len(rep.active_deployments)} active deployment(s), "
                      f"{len(rep.models)} model(s), {len(rep.runs)} run(s), "
                      f"{len(rep.datasets)} dataset(s)")
        for d in rep.deployments:
            console.print(f"  {d['deployment_id']}  {d['model']} in {d['environment']} "
                          f"({d['status']})")

    @app.command("reconcile")
    def reconcile(
        deep: bool = typer.Option(False, "--deep", help="Also digest every file and compare "
                                  "it with the digest recorded when it was written (reads "
                                  "all the data)."),
        repo: Path = RepoOption, as_json: bool = JsonOption,
    ) -> None:
        """Check the registry's references and every commit file, dataset entity file and
        local model artifact on disk; exit 1 when there are problems."""
        with open_store(repo) as store:
            rep = store.reconcile(deep=deep)
        if as_json:
            print_json(rep.to_dict())
        else:
            checked = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in rep.checked.items())
            checked += " (digests compared)" if rep.deep else " (sizes; --deep compares digests)"
            if rep.ok:
                console.print(f"[green]ok[/]: checked {checked}; no problems")
            else:
                console.print(f"[red]{len(rep.problems)} problem(s)[/] (checked {checked}):")
                for p in rep.problems:
                    ids = ", ".join(f"{k}={v}" for k, v in p.ids.items())
                    console.print(f"  [{p.code}] {p.message}  ({ids})", markup=False,
                                  soft_wrap=True)
            if rep.notices:
                codes = sorted({n.code for n in rep.notices})
                console.print(f"{len(rep.notices)} notice(s) ({', '.join(codes)}): "
                              f"{rep.notices[0].message}" + (" (and likewise for the others; "
                                                            "--json lists them)"
                                                            if len(rep.notices) > 1 else ""),
                              markup=False, soft_wrap=True)
        if not rep.ok:
            raise typer.Exit(1)
