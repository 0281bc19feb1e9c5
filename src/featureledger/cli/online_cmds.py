"""Online commands: materialize, materialize-incremental, online get, serve."""

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

_STATUS_STYLE = {"NULL": "dim", "NOT_FOUND": "red", "OUTSIDE_TTL": "yellow", "DEFAULT": "cyan"}


def _views(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def _print_result(result: Any, as_json: bool) -> None:
    doc = result.to_dict()
    if as_json:
        print_json(doc)
        return
    t = table("view", "commits", "keys", "written", "seconds",
              title=f"materialized up to {doc['end']}", ids=("view",))
    for v in doc["views"]:
        t.add_row(v["view"], str(len(v["commits"])), str(v["keys"]), str(v["written"]),
                  f"{v['seconds']:.2f}")
    console.print(t)
    console.print(f"{sum(v['written'] for v in doc['views'])} record(s) written in "
                  f"{doc['seconds']:.2f}s" if doc["views"] else "Nothing new to load.")


def _entity_rows(entities: list[str]) -> list[dict[str, str]]:
    rows = []
    for text in entities:
        row: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise typer.BadParameter(
                    f"--entity {text!r} is not KEY=VALUE[,KEY=VALUE]; e.g. --entity driver_id=1001"
                )
            row[key.strip()] = value.strip()
        rows.append(row)
    return rows


def register(app: typer.Typer) -> None:
    @app.command()
    def materialize(
        start: str = typer.Argument(..., help="Start of the event-time window (ISO time)."),
        end: str = typer.Argument(..., help="End of the window, inclusive (ISO time)."),
        views: str = typer.Option(None, "--views", help="Only these views (NAME or NAME@V, "
                                  "comma-separated)."),
        repo: Path = RepoOption, as_json: bool = JsonOption,
    ) -> None:
        """Load the latest value per key in [START, END] into the online store."""
        with open_store(repo) as store:
            result = store.materialize(start, end, views=_views(views), progress=not as_json)
            _print_result(result, as_json)

    @app.command("materialize-incremental")
    def materialize_incremental(
        end: str = typer.Argument(None, help="Load up to this time (default: now)."),
        views: str = typer.Option(None, "--views", help="Only these views (comma-separated)."),
        repo: Path = RepoOption, as_json: bool = JsonOption,
    ) -> None:
        """Load everything not yet loaded up to END: new commits and newer rows."""
        with open_store(repo) as store:
            result = store.materialize_incremental(end, views=_views(views),
                                                   progress=not as_json)
            _print_result(result, as_json)

    online = typer.Typer(help="Read online feature vectors.", no_args_is_help=True)
    app.add_typer(online, name="online")

    @online.command("get")
    def online_get(
        features: str = typer.Option(None, "--features", "-f",
                                     help="References, comma-separated (view:feature)."),
        feature_set: str = typer.Option(None, "--feature-set", help="NAME or NAME@VERSION."),
        entity: list[str] = typer.Option(..., "--entity", "-e",
                                         help="One entity row: KEY=VALUE[,KEY=VALUE]; repeat."),
        full_names: bool = typer.Option(False, "--full-names", help="Name columns view__feature."),
        repo: Path = RepoOption, as_json: bool = JsonOption,
    ) -> None:
        """Print the feature vector of each entity row, with statuses and commits."""
        refs = [f.strip() for f in features.split(",") if f.strip()] if features else None
        with open_store(repo) as store:
            resp = store.get_online_features(refs, _entity_rows(entity),
                                             feature_set=feature_set,
                                             full_feature_names=full_names)
            if as_json:
                print_json(resp.to_json_dict())
                return
            # one row per entity and feature: any number of features fits 80 columns
            t = table("entity", "feature", "value", "status", "commit", title="online features",
                      ids=("feature", "status", "commit"))
            for i in range(len(resp)):
                key_lines = "\n".join(f"{k}={show(col[i])}" for k, col in
                                      zip(resp.join_keys, resp.entity_columns, strict=True))
                for j, name in enumerate(resp.names):
                    status = resp.statuses[name][i].value
                    value = resp.values[name][i]
                    style = _STATUS_STYLE.get(status, "")
                    t.add_row(key_lines if j == 0 else "", f"{name}@{resp.versions[name]}",
                              "-" if value is None else show(value),
                              f"[{style}]{status}[/]" if style else status,
                              short_id(resp.commits(name)[i]))
            console.print(t)

    @app.command()
    def serve(
        host: str = typer.Option(None, "--host", help="Address to bind (default: server.host)."),
        port: int = typer.Option(None, "--port", help="Port (default: server.port)."),
        repo: Path = RepoOption,
    ) -> None:
        """Run the HTTP feature server (refuses a non-loopback address without tokens).

        At start-up, pushes a previous server acknowledged but did not land are landed
        from the push log. Reads are answered within server.request_timeout_s whatever
        the backends do (503 when one is down); bodies, keys and rows per request are
        limited (server: in featureledger.yaml). SIGTERM or SIGINT drains: no new
        connections, requests in flight finish, buffered pushes land offline, then exit 0.
        """
        from featureledger.server.app import serve as run
        from featureledger.server.auth import check_bind, token_map

        with open_store(repo) as store:
            cfg = store.config.server
            bind = host or cfg.host
            check_bind(bind, token_map(store))
            # opening the online part replays the push log before the first request
            recovery = store.online.recovery
            if recovery:
                console.print(f"push log: {recovery.summary()}")

            def ready(bound_host: str, bound_port: int) -> None:  # once the port is bound
                console.print(f"serving {store.repo_path.absolute()} on http://{bound_host}:"
                              f"{bound_port} (OpenAPI at /docs)")
                console.print(
                    f"reads answered within {cfg.request_timeout_s:g}s; bodies up to "
                    f"{cfg.max_body_bytes / 2**20:g} MiB, {cfg.max_entity_rows} keys per read, "
                    f"{cfg.max_push_rows} rows per push; {cfg.workers} workers per pool, "
                    f"{cfg.queue_size} waiting at most", highlight=False)

            run(store, bind, port, on_ready=ready)
            console.print("stopped: requests finished, every push landed offline")
