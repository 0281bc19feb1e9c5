"""Retrieval commands: historical, window, reproduce, datasets list / show."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from featureledger.model.timeutil import from_us

if TYPE_CHECKING:
    from rich.table import Table


def _write(table: Any, out: Path) -> None:
    """Write an Arrow table as Parquet, or CSV when ``out`` ends in .csv."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, out)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, out, compression="zstd")


def _summary(manifest: dict[str, Any]) -> list[str]:
    """The dataset's identity, one fact a line (ids and hashes whole: a line has room)."""
    as_of = manifest.get("as_of")
    lines = [
        f"[bold]dataset {manifest['dataset_id']}[/]",
        f"  rows          {manifest['row_count']}",
        f"  content hash  {manifest['content_hash']}",
        f"  entity digest {manifest['entity']['digest']}",
        f"  feature set   {show(manifest.get('feature_set') or '-')}",
        "  as of         " + ("-" if as_of is None else from_us(as_of).isoformat()),
        f"  read at       {from_us(manifest['read_at']).isoformat()}",
    ]
    if manifest.get("as_of_commit"):
        lines.insert(6, f"  as of commit  {manifest['as_of_commit']}")
    return lines


def _views(manifest: dict[str, Any]) -> list[Table]:
    from featureledger.model.display import format_duration

    t = table("view", "features", "ttl", "commits", "unmatched", title="features read",
              ids=("view", "ttl", "commits"))
    for v in manifest["views"]:
        ttl = "none" if v["ttl_us"] is None else format_duration(
            dt.timedelta(microseconds=v["ttl_us"]))
        t.add_row(f"{v['view']}@{v['version']}", show(", ".join(v["features"])), ttl,
                  "\n".join(short_id(c) for c in v["commit_ids"]) or "-",
                  str(v["unmatched_rows"]))
    nulls = table("column", "nulls", title="nulls per feature", ids=("column",))
    for name, n in manifest["null_counts"].items():
        nulls.add_row(name, str(n))
    return [t, nulls]


def _print_dataset(manifest: dict[str, Any]) -> None:
    for line in _summary(manifest):
        console.print(line, soft_wrap=True)
    for t in _views(manifest):
        console.print(t)


def _per_view(features: list[str]) -> list[str]:
    """``view@N (features)`` per view version read, from ``view@N:feature`` references.

    >>> _per_view(["v@1:a", "v@1:b", "w@2:c"])
    ['v@1 (2)', 'w@2 (1)']
    """
    views: dict[str, list[str]] = {}
    for ref in features:
        view, _, feature = ref.rpartition(":")
        views.setdefault(view, []).append(feature)
    return [f"{v} ({len(fs)})" for v, fs in views.items()]


def _split(features: str | None) -> list[str] | None:
    if features is None:
        return None
    return [f.strip() for f in features.split(",") if f.strip()]


def register(app: typer.Typer) -> None:
    datasets = typer.Typer(help="Training datasets: list, show.", no_args_is_help=True)
    app.add_typer(datasets, name="datasets")

    @app.command()
    def historical(
        entity_file: Path = typer.Argument(..., help="Entity rows: a Parquet or CSV file."),
        features: str | None = typer.Option(None, "--features", "-f",
                                            help="Comma-separated refs: view:feature or "
                                                 "view@3:feature."),
        feature_set: str | None = typer.Option(None, "--feature-set",
                                               help="A feature set (NAME or NAME@VERSION)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output file (.parquet or .csv)."),
        as_of: str | None = typer.Option(None, "--as-of",
                                         help="Read commits up to this time (ISO 8601, naive "
                                              "= UTC) or commit id."),
        timestamp_column: str | None = typer.Option(None, "--timestamp-column",
                                                    help="Entity time column."),
        full_names: bool = typer.Option(False, "--full-names",
                                        help="Name columns view__feature."),
        run_id: str | None = typer.Option(None, "--run-id", help="Record it on this run."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Build a point-in-time-correct training set for ENTITY_FILE and write it to --out."""
        with open_store(repo) as store:
            ds = store.get_historical_features(
                entity_file, _split(features), feature_set=feature_set, as_of=as_of,
                full_feature_names=full_names, run_id=run_id,
                timestamp_column=timestamp_column)
            _write(ds.to_arrow(), out)
        if as_json:
            print_json({**ds.manifest, "out": str(out)})
        else:
            _print_dataset(ds.manifest)
            console.print(f"wrote {ds.row_count} rows to {out}")

    @app.command()
    def window(
        view: str = typer.Argument(..., help="Feature view (NAME or NAME@VERSION)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output file (.parquet or .csv)."),
        start: str | None = typer.Option(None, "--start", help="First event time (inclusive)."),
        end: str | None = typer.Option(None, "--end", help="Last event time (exclusive)."),
        as_of: str | None = typer.Option(None, "--as-of", help="Time or commit id."),
        repo: Path = RepoOption,
    ) -> None:
        """Write every row of VIEW with start <= event time < end (for replaying a slice)."""
        with open_store(repo) as store:
            table = store.get_features_in_window(view, start, end, as_of=as_of)
        _write(table, out)
        console.print(f"wrote {table.num_rows} rows to {out}")

    @app.command()
    def reproduce(
        dataset_id: str = typer.Argument(..., help="Dataset id (ds_...)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output file (.parquet or .csv)."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Rebuild a training set from the commits it recorded; checks its content hash."""
        with open_store(repo) as store:
            ds = store.reproduce(dataset_id)
            _write(ds.to_arrow(), out)
        if as_json:
            print_json({"dataset_id": ds.id, "content_hash": ds.content_hash,
                        "row_count": ds.row_count, "out": str(out), "verified": True})
        else:
            console.print(f"rebuilt {ds.id}: {ds.row_count} rows, content hash "
                          f"{ds.content_hash} (matches the record); wrote {out}")

    @datasets.command("show")
    def datasets_show(
        dataset_id: str = typer.Argument(..., help="Dataset id (ds_...)."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """A dataset's manifest: features, commits read, hashes, null counts."""
        with open_store(repo) as store:
            rec = store.registry.datasets.get(dataset_id)
        if as_json:
            print_json({**rec.manifest, "run_id": rec.run_id, "created_by": rec.created_by})
        else:
            _print_dataset(rec.manifest)

    @datasets.command("list")
    def datasets_list(
        run_id: str | None = typer.Option(None, "--run-id", help="Only this run's datasets."),
        commit: str | None = typer.Option(None, "--commit", help="Only those that read it."),
        limit: int = typer.Option(50, "--limit", help="At most this many, newest first."),
        repo: Path = RepoOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Training datasets, newest first."""
        with open_store(repo) as store:
            recs = store.registry.datasets.list(run_id=run_id, commit_id=commit, limit=limit)
        if as_json:
            print_json([{k: v for k, v in r.to_dict().items() if k != "manifest"}
                        for r in recs])
            return
        runs = any(r.run_id for r in recs)
        t = table("dataset", "created (UTC)", "rows", "views (features)", "commits",
                  *(["run"] if runs else []), title="datasets",
                  ids=("dataset", "created (UTC)", "rows", "commits", "run"))
        for r in recs:
            t.add_row(short_id(r.dataset_id), when(r.created_at, seconds=False),
                      str(r.row_count), show("\n".join(_per_view(r.features))),
                      str(len(r.commit_ids)), *([short_id(r.run_id)] if runs else []))
        console.print(t)
