"""The offline store's files: Parquet, one folder per commit.

Layout under the store root, one folder per project, so projects can share a root::

    <project>/views/<view>/v<version>/<commit_id>/part-00000.parquet   committed data
    <project>/views/<view>/v<version>/<commit_id>/rejected.parquet     rows drop_invalid refused
    <project>/datasets/<dataset_id>/entities.parquet                     entity rows of a dataset
    <project>/_tmp/<commit_id>.<pid>/                                   a write in progress

Commit rows store their files relative to the store root, so commits written before
projects had folders (``views/...`` at the root) are read where they are. ``gc`` looks only
at its own project's folder, and at the root's old ``views/`` and ``_tmp/`` only for the
project whose registry holds commits there (the project that adopted the registry's rows
from before projects; see ``registry/migrations/versions/0003_projects.py``).

Every stored row carries the view's join keys, its event-timestamp column (timestamp[us,
UTC]), the created-timestamp column when the view declares one, the feature columns with
their declared Arrow types, ``_commit_id`` (string) and ``_commit_time`` (timestamp[us,
UTC]). Data files are Snappy-compressed (pyarrow's default codec: the fastest to write).

A commit's files are written under ``_tmp`` and renamed into place in one ``rename`` of the
folder; the commit becomes visible only when the registry row that lists its files is
committed. A folder that no registry row lists is an orphan: invisible to readers and
removed by ``gc``.

Only the data files are listed in a commit's ``files`` (and covered by its content digest);
side files such as ``rejected.parquet`` live in the same folder, so they appear and vanish
with the commit.

Crash tests stop a writer at a named instant with ``FEATURELEDGER_CRASH_AT`` (see
:func:`crash_point`); nothing else reads that variable.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featureledger.config import check_project_name
from featureledger.errors import ConfigError, StorageError

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.store import StoreContext

COMMIT_TIME_COLUMN = "_commit_time"
COMMIT_ID_COLUMN = "_commit_id"
ROW_GROUP_SIZE = 1_000_000


CRASH_ENV = "FEATURELEDGER_CRASH_AT"
CRASH_POINTS = ("after_files", "after_rename", "before_registry", "after_registry")


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL when ``FEATURELEDGER_CRASH_AT`` equals ``name``.

    The named points of a commit, in order: ``after_files`` (files durable under
    ``_tmp``), ``after_rename`` (folder in place, no registry row yet),
    ``before_registry`` (registry row written, transaction not committed) and
    ``after_registry`` (committed, not yet returned to the caller).
    """
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class WrittenFiles:
    files: list[str]  # relative to the store root, in order
    content_digest: str  # sha256 over the files' bytes, in order
    bytes: int
    extra_files: dict[str, str] = field(default_factory=dict)  # side file name -> relative path
    seconds: dict[str, float] = field(default_factory=dict)  # encode_write, fsync, digest, rename


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


LEGACY_VIEWS = "views"  # commit folders at the root, from before projects had folders
_TMP = "_tmp"


class ParquetOfflineStore:
    """Parquet files on a local (or mounted) file system, under ``<root>/<project>/``."""

    def __init__(self, root: str | Path, *, project: str = "default") -> None:
        self.root = Path(root).absolute()
        self.project = check_project_name(project)
        self.root.mkdir(parents=True, exist_ok=True)

    # -- paths --------------------------------------------------------------------------
    def commit_dir(self, view: str, version: int, commit_id: str) -> str:
        return f"{self.project}/views/{view}/v{version}/{commit_id}"

    def path(self, relative: str) -> Path:
        return self.root / relative

    def dataset_path(self, dataset_id: str) -> str:
        """The stored entity rows of a dataset, relative to the root."""
        return f"{self.project}/datasets/{dataset_id}/entities.parquet"

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.root / self.project / "datasets" / dataset_id

    # -- writing ------------------------------------------------------------------------
    def write_commit(self, view: str, version: int, commit_id: str,
                     tables: list[pa.Table] | pa.Table, *, compression: str = "snappy",
                     compression_level: int | None = None,
                     extra_tables: dict[str, pa.Table] | None = None,
                     before_rename: Any = None) -> WrittenFiles:
        """Write a commit's tables as Parquet, atomically appearing under its folder.

        ``tables`` become ``part-NNNNN.parquet`` (the commit's data files, digested in
        order); ``extra_tables`` maps a side file name (e.g. ``rejected.parquet``) to a
        table stored in the same folder but not listed as data. ``before_rename`` is called
        after the files are durable and before the rename (crash tests stop there).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        if isinstance(tables, pa.Table):
            tables = [tables]
        final_rel = self.commit_dir(view, version, commit_id)
        final = self.root / final_rel
        if final.exists():
            raise StorageError(f"commit folder {final} already exists; commit ids must be unique")
        tmp = self.root / self.project / _TMP / f"{commit_id}.{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=False)
        names: list[str] = []
        start = time.perf_counter()
        fsync_s = 0.0
        try:
            for i, table in enumerate(tables):
                name = f"part-{i:05d}.parquet"
                # the native writer releases the GIL throughout; hashing the file back from
                # the page cache is cheaper than hashing inside a Python write callback
                pq.write_table(table, tmp / name, compression=compression,
                               compression_level=compression_level,
                               row_group_size=ROW_GROUP_SIZE, write_statistics=True)
                t = time.perf_counter()
                with open(tmp / name, "rb") as f:
                    os.fsync(f.fileno())
                fsync_s += time.perf_counter() - t
                names.append(name)
            for name, table in (extra_tables or {}).items():
                pq.write_table(table, tmp / name, compression=compression)
                with open(tmp / name, "rb") as f:
                    os.fsync(f.fileno())
            t = time.perf_counter()
            _fsync_dir(tmp)
            fsync_s += time.perf_counter() - t
            t = time.perf_counter()
            digest_hex, size = file_digest([tmp / n for n in names])
            digest_s = time.perf_counter() - t
            if before_rename is not None:
                before_rename()
            crash_point("after_files")
            t = time.perf_counter()
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, final)
            _fsync_dir(final.parent)
            rename_s = time.perf_counter() - t
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        crash_point("after_rename")
        total = time.perf_counter() - start
        return WrittenFiles([f"{final_rel}/{n}" for n in names], digest_hex, size,
                            {n: f"{final_rel}/{n}" for n in (extra_tables or {})},
                            {"encode_write": total - fsync_s - digest_s - rename_s,
                             "fsync": fsync_s, "digest": digest_s, "rename": rename_s})

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

    def commit_dirs(self, *, legacy: bool = False) -> list[str]:
        """Every commit folder of this project on disk, registered or not (relative
        paths); with ``legacy``, also those of the root's layout from before projects."""
        bases = [self.root / self.project / "views"]
        if legacy:
            bases.append(self.root / LEGACY_VIEWS)
        return sorted(
            str(p.relative_to(self.root))
            for base in bases if base.exists()
            for p in base.glob("*/v*/*")
            if p.is_dir()
        )

    def gc(self, referenced_files: set[str], *, grace_seconds: float = 3600,
           dry_run: bool = False) -> GcReport:
        """Remove this project's commit folders that no registry row references, and its
        abandoned temp folders.

        ``referenced_files`` are the files of every commit of this project. Folders of
        other projects are never looked at. The root's old layout (``views/``, ``_tmp/``)
        is looked at only when this project's commits live there, since then this project
        owns the rows that registry had before projects. Folders younger than
        ``grace_seconds`` are kept: an ingestion may be between its rename and its
        registry write.
        """
        referenced_dirs = {str(Path(f).parent) for f in referenced_files}
        legacy = any(f.startswith(LEGACY_VIEWS + "/") for f in referenced_files)
        now = time.time()
        candidates = [d for d in self.commit_dirs(legacy=legacy) if d not in referenced_dirs]
        tmp_roots = [self.root / self.project / _TMP] + ([self.root / _TMP] if legacy else [])
        for tmp_root in tmp_roots:
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
        return ParquetOfflineStore(ctx.config.resolve(cfg.path), project=ctx.config.project)
    raise ConfigError(f"offline store type {cfg.type!r} is not supported")
