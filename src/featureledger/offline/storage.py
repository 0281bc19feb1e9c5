"""The offline store's files: Parquet, one folder per commit.

Layout under the store root::

    views/<view>/v<version>/<commit_id>/part-00000.parquet   committed data
    views/<view>/v<version>/<commit_id>/rejected.parquet     rows a drop_invalid commit refused
    datasets/<dataset_id>/entities.parquet                     entity rows of a dataset
    _tmp/<commit_id>.<pid>/                                   a write in progress

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
with the commit. A commit also records its file manifest (:meth:`WrittenFiles.manifest`):
every file's size, and each side file's sha256, so ``reconcile`` can tell a truncated or
replaced file from a good one without reading it.

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
    sizes: dict[str, int] = field(default_factory=dict)  # relative path -> bytes, every file
    side_digests: dict[str, str] = field(default_factory=dict)  # side file path -> sha256

    def manifest(self) -> dict[str, dict[str, Any]]:
        """What the commit records about its files: ``{path: {"size": n}}`` for the data
        files, plus ``"sha256"`` for side files (the data files' bytes are covered, in
        order, by the commit's content digest)."""
        out: dict[str, dict[str, Any]] = {}
        for path, size in self.sizes.items():
            out[path] = {"size": size}
            if path in self.side_digests:
                out[path]["sha256"] = self.side_digests[path]
        return out


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
    """sha256 over the files' bytes in order, and their total size."""
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
        tmp = self.root / "_tmp" / f"{commit_id}.{os.getpid()}"
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
            # side files are small (rejected rows): digest each; data files are covered by
            # the content digest below, so only their sizes are taken
            side = {name: file_digest([tmp / name]) for name in (extra_tables or {})}
            data_sizes = {name: (tmp / name).stat().st_size for name in names}
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
                             "fsync": fsync_s, "digest": digest_s, "rename": rename_s},
                            sizes={**{f"{final_rel}/{n}": b for n, b in data_sizes.items()},
                                   **{f"{final_rel}/{n}": b for n, (_, b) in side.items()}},
                            side_digests={f"{final_rel}/{n}": d for n, (d, _) in side.items()})

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
