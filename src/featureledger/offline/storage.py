"""The offline store's files: Parquet, one folder per commit.

Layout under the store root::

    views/<view>/v<version>/<commit_id>/part-00000.parquet   committed data
    datasets/<dataset_id>/entities.parquet                     entity rows of a dataset
    _tmp/<commit_id>.<pid>/                                   a write in progress

Every stored row carries the view's join keys, its event-timestamp column (timestamp[us,
UTC]), the feature columns with their declared Arrow types, ``_commit_id`` and
``_commit_time`` (timestamp[us, UTC]).

A commit's files are written under ``_tmp`` and renamed into place in one ``rename`` of the
folder; the commit becomes visible only when the registry row that lists its files is
committed. A folder that no registry row lists is an orphan: invisible to readers and
removed by ``gc``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featureledger.errors import ConfigError, StorageError

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.store import StoreContext

COMMIT_TIME_COLUMN = "_commit_time"
COMMIT_ID_COLUMN = "_commit_id"
ROW_GROUP_SIZE = 1_000_000


@dataclass(frozen=True)
class WrittenFiles:
    files: list[str]  # relative to the store root, in order
    content_digest: str  # sha256 over the files' bytes, in order
    bytes: int


@dataclass(frozen=True)
class GcReport:
    removed: list[str]
    kept_recent: list[str]
    bytes_freed: int


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_digest(paths: list[Path]) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    return h.hexdigest(), size


class ParquetOfflineStore:
    """Parquet files on a local (or mounted) file system."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)

    # -- paths --------------------------------------------------------------------------
    def commit_dir(self, view: str, version: int, commit_id: str) -> str:
        return f"views/{view}/v{version}/{commit_id}"

    def path(self, relative: str) -> Path:
        return self.root / relative

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.root / "datasets" / dataset_id

    # -- writing ------------------------------------------------------------------------
    def write_commit(self, view: str, version: int, commit_id: str,
                     tables: list[pa.Table] | pa.Table, *, compression: str = "zstd",
                     before_rename: Any = None) -> WrittenFiles:
        """Write a commit's tables as Parquet, atomically appearing under its folder.

        ``before_rename`` is called after the files are durable and before the rename
        (crash tests use it to stop at that instant).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        if isinstance(tables, pa.Table):
            tables = [tables]
        final_rel = self.commit_dir(view, version, commit_id)
        final = self.root / final_rel
        if final.exists():
            raise StorageError(f"commit folder {final} already exists; commit ids must be unique")
        tmp = self.root / "_tmp" / f"{commit_id}.{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=False)
        names = []
        try:
            for i, table in enumerate(tables):
                name = f"part-{i:05d}.parquet"
                path = tmp / name
                pq.write_table(table, path, compression=compression,
                               row_group_size=ROW_GROUP_SIZE, write_statistics=True)
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
                names.append(name)
            _fsync_dir(tmp)
            digest, size = file_digest([tmp / n for n in names])
            if before_rename is not None:
                before_rename()
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, final)
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return WrittenFiles([f"{final_rel}/{n}" for n in names], digest, size)

    def remove_commit_files(self, files: list[str]) -> None:
        """Delete an unregistered commit's folder (after a failed registry write)."""
        dirs = {str(Path(f).parent) for f in files}
        for d in dirs:
            shutil.rmtree(self.root / d, ignore_errors=True)

    # -- checking and gc -----------------------------------------------------------------
    def missing_files(self, files: list[str]) -> list[str]:
        return [f for f in files if not (self.root / f).is_file()]

    def verify_digest(self, files: list[str], digest: str) -> bool:
        return file_digest([self.root / f for f in files])[0] == digest

    def commit_dirs(self) -> list[str]:
        """Every commit folder on disk, registered or not (relative paths)."""
        base = self.root / "views"
        if not base.exists():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in base.glob("*/v*/*")
            if p.is_dir()
        )

    def gc(self, referenced_files: set[str], *, grace_seconds: float = 3600,
           dry_run: bool = False) -> GcReport:
        """Remove commit folders no registry row references, and abandoned temp folders.

        Folders younger than ``grace_seconds`` are kept: an ingestion may be between its
        rename and its registry write.
        """
        referenced_dirs = {str(Path(f).parent) for f in referenced_files}
        now = time.time()
        candidates = [d for d in self.commit_dirs() if d not in referenced_dirs]
        tmp_root = self.root / "_tmp"
        if tmp_root.exists():
            candidates += [str(p.relative_to(self.root)) for p in tmp_root.iterdir()]
        removed, kept, freed = [], [], 0
        for rel in candidates:
            p = self.root / rel
            try:
                age = now - p.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < grace_seconds:
                kept.append(rel)
                continue
            size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0
            if not dry_run:
                shutil.rmtree(p, ignore_errors=True)
            removed.append(rel)
            freed += size
        return GcReport(removed, kept, freed)

    def close(self) -> None:
        pass


def open_offline_store(ctx: StoreContext) -> ParquetOfflineStore:
    """The offline store configured in featureledger.yaml (Parquet files on disk)."""
    cfg = ctx.config.offline_store
    if cfg.type == "parquet" or cfg.type == "spark":  # spark reads the same files
        return ParquetOfflineStore(ctx.config.resolve(cfg.path))
    raise ConfigError(f"offline store type {cfg.type!r} is not supported")
