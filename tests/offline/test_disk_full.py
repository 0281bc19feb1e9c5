"""A full disk: ingestion fails with a clear "disk full" error, the store is left exactly
as it was (registry rows and files), and ingests work again once space is freed.

Each test mounts small tmpfs file systems of its own, which needs root (or
CAP_SYS_ADMIN); where mounting is not permitted the tests skip and say so.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.config import ParquetOfflineStoreConfig, ProjectConfig
from featureledger.errors import DiskFullError
from helpers import run_cli, snapshot

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
DEFS = [Entity(name="driver", join_keys={"driver_id": "int64"}),
        FeatureView(name="trips", entities=["driver"],
                    fields=[Field(name="fare", dtype="float64")])]


def batch(n: int, start: int) -> pd.DataFrame:
    rng = np.random.default_rng(start)  # random doubles: Parquet cannot shrink them much
    return pd.DataFrame({"driver_id": np.arange(start, start + n, dtype=np.int64),
                         "event_timestamp": [T0] * n, "fare": rng.random(n)})


@pytest.fixture
def mount_disk(tmp_path) -> Iterator[Callable[[str, str], Path]]:
    """``mount_disk(name, size)``: a fresh tmpfs of ``size`` (e.g. "2m") at tmp_path/name,
    unmounted after the test."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        if os.geteuid() != 0:
            pytest.skip("the disk-full tests mount a small tmpfs, which needs root; run "
                        "them as root (CI does) to check what a full disk does")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(where)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here ({proc.stderr.strip()}); "
                        "the disk-full tests need it")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Write a filler file until ``disk`` has at most ``leave`` bytes free."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > leave:
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            os.write(fd, b"\0" * max(4096, min(1 << 20, free - leave)))
    except OSError:
        pass  # full
    finally:
        os.close(fd)
    return filler


def state(store: FeatureStore) -> tuple:
    """Every registry row, and the sha256 of every file of the repository and of the
    offline store, except the SQLite registry's own files: a write that fails for lack of
    space may leave uncommitted frames in its WAL, which no reader ever sees."""
    files, tables = snapshot(store)
    offline = store.ctx.offline_store.root
    if not offline.is_relative_to(store.config.root):
        files.update({str(p): hashlib.sha256(p.read_bytes()).hexdigest()
                      for p in sorted(offline.rglob("*")) if p.is_file()})
    return {k: v for k, v in files.items() if "registry.db" not in k}, tables


def ingest_until_full(store: FeatureStore, rows: int, start: int = 1000
                      ) -> tuple[DiskFullError, tuple, int]:
    """Ingest batches until one fails; returns the error, the state taken just before
    the failing ingest, and how many batches landed."""
    for i in range(200):
        before = state(store)
        try:
            store.ingest("trips", batch(rows, start + i * rows))
        except DiskFullError as exc:
            return exc, before, i
    raise AssertionError("the disk never filled up")


def test_offline_disk_full_leaves_the_store_unchanged(mount_disk, registry_url,
                                                      tmp_path) -> None:
    disk = mount_disk("disk", "4m")
    root = disk / "repo"
    store = FeatureStore(root, config=ProjectConfig(registry=registry_url, root=root))
    try:
        store.apply(DEFS)
        store.ingest("trips", batch(100, 0))
        filler = fill(disk, leave=600_000)

        err, before, landed = ingest_until_full(store, rows=20_000)
        assert landed >= 1  # some batches fit, then the disk was full
        assert isinstance(err.path, str) and err.path.startswith(str(disk))
        msg = str(err)
        assert "is full (no space left)" in msg and "nothing was committed" in msg
        assert "trips@1" in msg
        assert state(store) == before  # no commit row, no file, no temp folder left
        assert not any((store.ctx.offline_store.root / "default" / "_tmp").iterdir())

        filler.unlink()
        again = store.ingest("trips", batch(20_000, 900_000))
        assert again.row_count == 20_000
        assert len(store.commits("trips")) == landed + 2
        assert store.reconcile(deep=True).ok
    finally:
        store.close()


def test_registry_disk_full_leaves_the_store_unchanged(mount_disk, tmp_path) -> None:
    """The repository (SQLite registry, online store) on a small disk, the offline files on
    another: the registry's write is what fails."""
    repo_disk, data_disk = mount_disk("repo", "2m"), mount_disk("data", "64m")
    root = repo_disk / "repo"
    root.mkdir()
    offline = data_disk / "offline"
    (root / "featureledger.yaml").write_text(f"offline_store:\n  path: {offline}\n")
    source = root / "more.parquet"
    batch(50, 500_000).to_parquet(source)
    config = ProjectConfig(root=root, offline_store=ParquetOfflineStoreConfig(
        path=str(offline)))
    store = FeatureStore(root, config=config)
    try:
        store.apply(DEFS)
        store.ingest("trips", batch(100, 0))
        filler = fill(repo_disk)

        err, before, landed = ingest_until_full(store, rows=50)
        msg = str(err)
        assert f"the disk holding the registry {root / '.featureledger' / 'registry.db'} " \
               "is full" in msg, msg
        assert "nothing was written" in msg
        # the commit's files, written before the registry refused it, are gone too
        assert state(store) == before
        committed = len(store.commits("trips"))
        assert committed == landed + 1

        # the command line, with the disk still full: reads work, the write says why
        listed = run_cli("commits", "trips", "--json", "--repo", str(root), cwd=tmp_path)
        assert listed.stdout.count('"commit_id"') == committed
        proc = run_cli("ingest", "trips", str(source), "--repo", str(root), cwd=tmp_path,
                       code=2)
        assert "error (disk_full)" in proc.stderr and "is full" in proc.stderr
        assert "internal error" not in proc.stderr
        assert "database server" not in proc.stderr
        assert state(store) == before

        filler.unlink()
        run_cli("ingest", "trips", str(source), "--repo", str(root), cwd=tmp_path)
        assert len(store.commits("trips")) == committed + 1
        assert store.reconcile(deep=True).ok
    finally:
        store.close()
