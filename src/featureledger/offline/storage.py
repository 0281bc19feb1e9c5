"""The offline store's files: Parquet, one folder per commit, on a local file system.

:class:`ParquetOfflineStore` is the embedded implementation of the offline store seam
(:class:`~featureledger.offline.interface.OfflineStore`); the object-store one is
:mod:`featureledger.offline.s3`, with the same layout. The helpers here (digests, crash
points, the commit-file error) are shared by both.

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
with the commit. A commit also records its file manifest (:meth:`WrittenFiles.manifest`):
every file's size, and each side file's sha256, so ``reconcile`` can tell a truncated or
replaced file from a good one without reading it.

Readers go through :meth:`ParquetOfflineStore.reading`: it refuses a commit whose registry
row no longer matches its seal (:class:`~featureledger.errors.CommitTamperedError`), checks
that the commits' files are there (a ``stat`` each) before a query, and turns a read that
fails on one of them into a :class:`~featureledger.errors.CommitFileError` naming the
commit and the file. With ``verify_digests`` (``offline_store: {verify_digests: true}``) it
also digests each commit's data files against the commit's content digest before the
query; a file already verified in this process is digested again only when its inode,
size, modification or change time differ.

A write that runs out of space or quota (ENOSPC, EDQUOT) removes what it wrote and raises
:class:`~featureledger.errors.DiskFullError`; nothing is committed.

Crash tests stop a writer at a named instant with ``FEATURELEDGER_CRASH_AT`` (see
:func:`crash_point`); nothing else reads that variable.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featureledger.config import check_project_name
from featureledger.errors import (
    CommitFileError,
    ConfigError,
    DiskFullError,
    FeatureLedgerError,
    NameTooLongError,
    StorageError,
)
from featureledger.registry.tracking_records import PathDigest

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.config import ProjectConfig
    from featureledger.registry.commits import CommitRecord

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


_PARQUET_MAGIC = b"PAR1"


def parquet_complete(path: Path) -> str | None:
    """None when ``path`` looks like a whole Parquet file, else what is wrong with it.

    Reads 8 bytes at each end only: a Parquet file starts with ``PAR1`` and ends with the
    footer length and ``PAR1``, so a truncated or emptied file fails this without a scan.
    """
    try:
        size = path.stat().st_size
        if size < 12:
            return f"is {size} bytes, too small to be a Parquet file"
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(-8, os.SEEK_END)
            tail = f.read(8)
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be opened ({exc.strerror or exc})"
    footer = int.from_bytes(tail[:4], "little")
    if head != _PARQUET_MAGIC or tail[4:] != _PARQUET_MAGIC or footer + 12 > size:
        return "is not a complete Parquet file (cut short or overwritten)"
    return None


_TREE_PREFIX = b"featureledger-tree-v1\n"


def path_digest(path: str | Path) -> PathDigest:
    """sha256 of a file's bytes (what ``sha256sum`` prints), or of a folder.

    A folder's digest covers its regular files in the order of their relative POSIX paths:
    for each, the path, a NUL, the size in decimal, a NUL and the sha256 of its bytes. So a
    renamed, added, removed or changed file changes it, and the digest does not depend on
    the order the file system lists entries in. Empty folders do not count; links to
    folders are not followed (they could loop), links to files are read through.
    """
    p = Path(path)
    if p.is_file():
        digest, size = file_digest([p])
        return PathDigest("file", digest, size, 1)
    if not p.is_dir():
        raise StorageError(f"{p} is neither a file nor a folder; cannot digest it")
    entries: list[tuple[str, Path]] = []
    for dirpath, _dirs, names in os.walk(p):
        for name in names:
            full = Path(dirpath) / name
            if full.is_file():
                entries.append((full.relative_to(p).as_posix(), full))
    entries.sort()
    h = hashlib.sha256(_TREE_PREFIX)
    total = 0
    for rel, full in entries:
        digest, size = file_digest([full])
        h.update(rel.encode() + b"\0" + str(size).encode() + b"\0" + bytes.fromhex(digest))
        total += size
    return PathDigest("folder", h.hexdigest(), total, len(entries))


def local_path(uri: str) -> Path | None:
    """The local path of a ``file://`` URI (None for any other scheme)."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(url2pathname(parsed.path))


_DISK_FULL = {errno.ENOSPC: "no space left", errno.EDQUOT: "the disk quota is exceeded"}


def os_error(exc: OSError, path: Path | str, doing: str) -> FeatureLedgerError | None:
    """The typed error for an OSError met while ``doing`` (e.g. "writing commit cmt_..."),
    or None when it is not one the user can act on by name (the caller re-raises it).

    ``path`` is where it happened; the messages say that nothing was committed, which the
    callers guarantee by removing what they wrote first.
    """
    code = exc.errno
    if code in _DISK_FULL:
        return DiskFullError(
            f"the disk holding {path} is full ({_DISK_FULL[code]}) while {doing}; what was "
            "written was removed and nothing was committed. Free space on that disk (gc "
            "removes orphaned files: featureledger gc) and retry", path=str(path))
    if code == errno.ENAMETOOLONG:
        return NameTooLongError(
            f"a file name under {str(path)[:120]}... is too long for the file system while "
            f"{doing}; nothing was committed. Give the feature view a shorter name")
    if code == errno.EROFS:
        return StorageError(f"{path} is on a read-only file system ({doing}); nothing was "
                            "committed. Remount it writable or move the offline store")
    if code in (errno.EACCES, errno.EPERM):
        return StorageError(f"permission denied on {exc.filename or path} while {doing}; "
                            "nothing was committed. Make the offline store writable for this "
                            "user")
    return None


def _commit_label(commit: CommitRecord) -> str:
    kind = "segment" if commit.commit_id.startswith("seg_") else "commit"
    return f"{kind} {commit.commit_id} ({commit.view_name}@{commit.view_version})"


def _what_to_do(root: Path | str, commit: CommitRecord) -> str:
    if commit.commit_id.startswith("seg_"):
        return (f"Restore the file from a backup into the offline store at {root}, or retire "
                "the segment so that its commits are read from their own files (while gc has "
                f"not removed them): featureledger compact {commit.view_name} --retire "
                f"{commit.commit_id}")
    return (f"Restore the file from a backup into the offline store at {root}, or quarantine "
            "the commit so that retrieval and serving skip it: featureledger quarantine "
            f"{commit.commit_id} --reason 'file lost'")


def read_units(commits: Iterable[CommitRecord]) -> list[Any]:
    """What a read of ``commits`` opens: each commit's own files, or once each, the
    compacted segment holding a commit's rows (both have ``files``, ``file_manifest`` and
    ``content_digest``). Segments whose registry row was edited are refused."""
    from featureledger.registry.segments import require_sealed_segment

    out: list[Any] = []
    seen: set[str] = set()
    for c in commits:
        seg = getattr(c, "segment", None)
        if seg is None:
            out.append(c)
        elif seg.segment_id not in seen:
            seen.add(seg.segment_id)
            require_sealed_segment(seg)
            out.append(seg)
    return out


def commit_file_error(root: Path | str, commit: CommitRecord, rel: str, problem: str
                      ) -> CommitFileError:
    """The error for ``commit``'s file ``rel`` (``problem`` completes "its file X ...")."""
    return CommitFileError(
        f"{_commit_label(commit)} cannot be read: its file {rel} {problem}. "
        + _what_to_do(root, commit), commit_id=commit.commit_id, path=rel)


def _stat_problem(root: Path, commit: CommitRecord, rel: str) -> str | None:
    """What a ``stat`` says is wrong with one of ``commit``'s files, or None."""
    try:
        size = (root / rel).stat().st_size
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be opened ({exc.strerror or exc})"
    expected = (commit.file_manifest or {}).get(rel, {}).get("size")
    if expected is not None and size != expected:
        return (f"is {size} bytes but was {expected} when committed, so it was cut short or "
                "changed")
    return None


def require_commit_files(root: Path, commits: Iterable[CommitRecord]) -> None:
    """Raise CommitFileError for the first file of ``commits`` that is missing or has
    another size than recorded (one ``stat`` per file, no reads)."""
    for c in commits:
        for rel in c.files:
            problem = _stat_problem(root, c, rel)
            if problem is not None:
                raise commit_file_error(root, c, rel, problem)


def _probe(root: Path, commits: Sequence[CommitRecord], exc: BaseException
           ) -> tuple[CommitRecord, str, str] | None:
    """After a failed read: the commit file to blame, and what is wrong with it.

    Cheapest first: a ``stat`` (gone, or resized), the Parquet magic and footer, a file
    the driver's message names, and when the error could come from changed bytes, the
    files' bytes against each commit's content digest.
    """
    import pyarrow.parquet as pq

    for c in commits:
        for rel in c.files:
            problem = _stat_problem(root, c, rel) or parquet_complete(root / rel)
            if problem is None:
                try:
                    pq.read_metadata(root / rel)
                except Exception as err:  # any failure to parse the footer is unreadable
                    problem = f"has an unreadable Parquet footer ({err})"
            if problem is not None:
                return c, rel, problem
    from featureledger.offline.duckdb.engine import may_be_damaged_data, named_file

    named = named_file(exc, {str(root / rel): (c, rel) for c in commits for rel in c.files})
    if named is not None:
        commit, rel, detail = named
        return commit, rel, f"cannot be read ({detail})"
    if may_be_damaged_data(exc):
        for c in commits:
            if c.files and file_digest([root / f for f in c.files])[0] != c.content_digest:
                more = f"(or another of its {len(c.files)} files) " if len(c.files) > 1 else ""
                return c, c.files[0], (f"{more}no longer matches the commit's content digest, "
                                       "so it was changed after the commit")
    return None


# commit id -> (root, content digest, the stat of each data file) when its files last
# matched the digest; bounded, since a long-lived server reads many commits
_VERIFIED: dict[str, tuple[Any, ...]] = {}
_VERIFIED_MAX = 100_000


def _stat_key(paths: list[Path]) -> tuple[Any, ...]:
    # the change time moves with any write or metadata change and cannot be set back by
    # an ordinary user (unlike the modification time), so a rewritten file is digested again
    out = []
    for p in paths:
        st = p.stat()
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


def verify_commit_digests(root: Path, commits: Iterable[CommitRecord]) -> None:
    """Raise CommitFileError for the first commit whose data files no longer match its
    content digest. A commit verified earlier in this process is digested again only when
    one of its files' inode, size or times changed."""
    for c in commits:
        if not c.files:
            continue
        paths = [root / f for f in c.files]
        try:
            key = (str(root), c.content_digest, _stat_key(paths))
        except OSError:
            key = None  # require_commit_files names the missing file
        if key is not None and _VERIFIED.get(c.commit_id) == key:
            continue
        if file_digest(paths)[0] != c.content_digest:
            more = f"(or another of its {len(c.files)} files) " if len(c.files) > 1 else ""
            raise commit_file_error(root, c, c.files[0], (
                f"{more}no longer matches the commit's content digest, so it was changed "
                "after the commit (offline_store.verify_digests is on, so it is not read)"))
        if key is not None:
            if len(_VERIFIED) >= _VERIFIED_MAX:
                _VERIFIED.clear()
            _VERIFIED[c.commit_id] = key


@contextmanager
def commit_reads(root: Path, commits: Iterable[CommitRecord], *,
                 verify_digests: bool = False) -> Iterator[None]:
    """Guard a query over ``commits``' files: check them first, and name the commit and the
    file when the query fails on one of them.

    Before: the seal of each commit's registry row (a row edited outside featureledger is
    never read: CommitTamperedError), a ``stat`` of every file (missing, or not the recorded
    size), and with ``verify_digests`` the files' bytes against the content digest. After a
    failure: see :func:`_probe`; when it finds no bad file, the original error is raised
    unchanged, since it is not about the files.
    """
    from featureledger.registry.commits import require_sealed

    root = Path(root)
    listed = list(commits)
    require_sealed(listed)
    commits = read_units(listed)
    require_commit_files(root, commits)
    if verify_digests:
        verify_commit_digests(root, commits)
    try:
        yield
    except CommitFileError:
        raise
    except Exception as exc:
        found = _probe(root, commits, exc)
        if found is None:
            raise
        commit, rel, problem = found
        raise commit_file_error(root, commit, rel, problem) from exc


LEGACY_VIEWS = "views"  # commit folders at the root, from before projects had folders
_TMP = "_tmp"


class ParquetOfflineStore:
    """Parquet files on a local (or mounted) file system, under ``<root>/<project>/``."""

    @classmethod
    def from_config(cls, config: ProjectConfig) -> ParquetOfflineStore:
        """The store of ``offline_store`` in featureledger.yaml."""
        cfg = config.offline_store
        if cfg.type != "parquet":
            raise ConfigError(f"offline_store type {cfg.type!r} is not the parquet store; "
                              "open it through featureledger.backends.open_backend")
        return cls(config.resolve(cfg.path), project=config.project,
                   verify_digests=cfg.verify_digests)

    def __init__(self, root: str | Path, *, project: str = "default",
                 verify_digests: bool = False) -> None:
        self.root = Path(root).absolute()
        self.project = check_project_name(project)
        # digest each commit's files before reading them (see the module docstring)
        self.verify_digests = verify_digests
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def location(self) -> str:
        """The store's root folder."""
        return str(self.root)

    @property
    def filesystem(self) -> None:
        """None: engines open the local paths themselves."""
        return None

    # -- paths --------------------------------------------------------------------------
    def commit_dir(self, view: str, version: int, commit_id: str) -> str:
        """The folder of a commit's files, relative to the root."""
        return f"{self.project}/views/{view}/v{version}/{commit_id}"

    def path(self, relative: str) -> Path:
        """The absolute local path of a store-relative file."""
        return self.root / relative

    def uri(self, relative: str) -> str:
        """The absolute local path of a store-relative file, as text."""
        return str(self.root / relative)

    def data_uris(self, commit: CommitRecord) -> list[str]:
        """Absolute paths of ``commit``'s data files, in digest order (what engines read)."""
        return [str(self.root / f) for f in commit.files]

    local_paths = data_uris

    def dataset_path(self, dataset_id: str) -> str:
        """The stored entity rows of a dataset, relative to the root."""
        return f"{self.project}/datasets/{dataset_id}/entities.parquet"

    def dataset_dir(self, dataset_id: str) -> Path:
        """The folder of a dataset's stored files."""
        return self.root / self.project / "datasets" / dataset_id

    # -- datasets -----------------------------------------------------------------------
    def stage_dataset(self, dataset_id: str, entities: pa.Table) -> Path:
        """Write a dataset's entity rows durably into a temp folder beside its final one;
        :meth:`publish_dataset` renames it into place."""
        import pyarrow.parquet as pq

        final = self.dataset_dir(dataset_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{dataset_id}.{os.getpid()}.tmp"
        tmp.mkdir()
        try:
            path = tmp / "entities.parquet"
            # lz4 without dictionaries: several times faster to write than the defaults
            pq.write_table(entities, path, compression="lz4", use_dictionary=False)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            return tmp
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            typed = os_error(exc, tmp, f"storing the entity rows of dataset {dataset_id}") if (
                isinstance(exc, OSError)) else None
            if typed is not None:
                raise typed from exc
            raise

    def publish_dataset(self, staged: Path) -> None:
        """Rename a staged dataset folder into place."""
        os.rename(staged, self.dataset_dir(Path(staged).name.split(".")[1]))

    def discard_dataset(self, dataset_id: str, staged: Path | None = None) -> None:
        """Remove a dataset's staged folder, or its published one."""
        shutil.rmtree(staged if staged is not None else self.dataset_dir(dataset_id),
                      ignore_errors=True)

    def read_dataset_entities(self, relative: str) -> pa.Table:
        """A dataset's stored entity rows; FileNotFoundError when the file is gone."""
        path = self.root / relative
        if not path.is_file():
            raise FileNotFoundError(str(path))
        return self.read_table(relative)

    def read_table(self, relative: str, columns: Sequence[str] | None = None) -> pa.Table:
        """One stored Parquet file."""
        import pyarrow.parquet as pq

        return pq.read_table(self.root / relative, columns=columns)

    # -- reading ------------------------------------------------------------------------
    def require_files(self, commits: Iterable[CommitRecord]) -> None:
        """Raise CommitFileError naming the commit and the file when a file of ``commits``
        is missing or not the size recorded at commit time (a ``stat`` per file)."""
        require_commit_files(self.root, commits)

    def reading(self, commits: Iterable[CommitRecord]) -> Any:
        """A context manager around a query of ``commits``' files (see :func:`commit_reads`):
        ``with offline.reading(commits): table = reader.read_all()``."""
        return commit_reads(self.root, commits, verify_digests=self.verify_digests)

    # -- writing ------------------------------------------------------------------------
    def write_commit(self, view: str, version: int, commit_id: str,
                     tables: Iterable[pa.Table] | pa.Table, *, compression: str = "snappy",
                     compression_level: int | None = None,
                     extra_tables: dict[str, pa.Table] | None = None,
                     before_rename: Any = None,
                     row_group_size: int = ROW_GROUP_SIZE,
                     use_dictionary: bool | Sequence[str] = True) -> WrittenFiles:
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
        doing = f"writing commit {commit_id} of {view}@{version}"
        try:
            tmp.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            typed = os_error(exc, self.root, doing)
            if typed is not None:
                raise typed from exc
            raise
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
                               row_group_size=row_group_size, write_statistics=True,
                               use_dictionary=use_dictionary)
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
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            typed = os_error(exc, self.root, doing) if isinstance(exc, OSError) else None
            if typed is not None:
                raise typed from exc
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

    def clear_commit(self, view: str, version: int, commit_id: str) -> None:
        """Delete the folder an interrupted write of this commit left after its rename."""
        folder = self.root / self.commit_dir(view, version, commit_id)
        if folder.exists():
            shutil.rmtree(folder)

    # -- checking and gc -----------------------------------------------------------------
    def missing_files(self, files: list[str]) -> list[str]:
        """Those of ``files`` that are not regular files under the root."""
        return [f for f in files if not (self.root / f).is_file()]

    def verify_digest(self, files: list[str], digest: str) -> bool:
        """Whether ``files``' bytes, in order, still hash to ``digest``."""
        return self.file_digest(files) == digest

    def file_digest(self, files: list[str]) -> str:
        """sha256 over ``files``' bytes, in order."""
        return file_digest([self.root / f for f in files])[0]

    def file_problem(self, relative: str, expected_size: int | None
                     ) -> tuple[str, str] | None:
        """``(kind, what is wrong)`` from a ``stat`` and, without a recorded size, the
        Parquet header and footer; None when the file looks whole."""
        path = self.root / relative
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return "missing", "is missing"
        except OSError as exc:
            return "unreadable", f"cannot be opened ({exc.strerror or exc})"
        if expected_size is None:
            wrong = parquet_complete(path)
            return None if wrong is None else ("unreadable", wrong)
        if size != expected_size:
            return "size_mismatch", (f"is {size} bytes but was {expected_size} when committed "
                                     "(cut short, or overwritten)")
        return None

    def probe(self) -> None:
        """Raise StorageError when the root folder is gone (health checks)."""
        if not self.root.is_dir():
            raise StorageError(f"the offline store's folder {self.root} is missing; restore "
                               "it or fix offline_store.path in featureledger.yaml")

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
           dry_run: bool = False, referenced_datasets: set[str] | None = None) -> GcReport:
        """Remove this project's commit folders that no registry row references, and its
        abandoned temp folders.

        ``referenced_files`` are the files of every commit of this project. Folders of
        other projects are never looked at. The root's old layout (``views/``, ``_tmp/``)
        is looked at only when this project's commits live there, since then this project
        owns the rows that registry had before projects. Folders younger than
        ``grace_seconds`` are kept: an ingestion may be between its rename and its
        registry write. With ``referenced_datasets`` (store-relative folders of the
        dataset rows' entity files), dataset folders no row references go too, and staged
        ones a crash left: a retrieval is between its publish and its registry write for
        less than the grace period.
        """
        referenced_dirs = {str(Path(f).parent) for f in referenced_files}
        legacy = any(f.startswith(LEGACY_VIEWS + "/") for f in referenced_files)
        now = time.time()
        candidates = [d for d in self.commit_dirs(legacy=legacy) if d not in referenced_dirs]
        tmp_roots = [self.root / self.project / _TMP] + ([self.root / _TMP] if legacy else [])
        for tmp_root in tmp_roots:
            if tmp_root.exists():
                candidates += [str(p.relative_to(self.root)) for p in tmp_root.iterdir()]
        datasets = self.root / self.project / "datasets"
        if referenced_datasets is not None and datasets.is_dir():
            candidates += [rel for p in datasets.iterdir() if p.is_dir()
                           and (rel := str(p.relative_to(self.root))) not in referenced_datasets]
        removed, kept, freed = [], [], 0
        for rel in candidates:
            p = self.root / rel
            try:  # the newest of the folder and its files: a write inside keeps it young
                age = now - max([p.stat().st_mtime, *(f.stat().st_mtime for f in p.rglob("*"))]
                                if p.is_dir() else [p.stat().st_mtime])
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
        """Nothing to release."""
