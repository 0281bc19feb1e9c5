"""The offline store on S3-compatible object storage (``offline_store: {type: s3}``).

Same layout as the local store (:mod:`featureledger.offline.storage`), under the URL's
prefix: ``<prefix>/<project>/views/<view>/v<N>/<commit_id>/part-NNNNN.parquet`` and
``<prefix>/<project>/datasets/<id>/entities.parquet``; commit rows record the same
store-relative paths, content digests and file manifests, so retrieval, ``reproduce`` and
``reconcile`` (plain and ``--deep``) mean the same on either store.

**All or nothing without a rename.** Object stores have no atomic folder rename, and need
none: a commit's objects are written straight under its own prefix, and readers only ever
read files that a registry row lists, so the objects become visible exactly when the
registry transaction that records them commits. A failed registry write removes them at
once; a crash leaves an orphan prefix that no reader sees and that ``gc`` removes once its
newest object's ``LastModified`` is older than the grace period. The crash points of
:func:`~featureledger.offline.storage.crash_point` keep their names: ``after_files`` and
``after_rename`` are the same instant here (the objects are in place).

**Why s3fs (fsspec) for the file system layer.** DuckDB's Python client can
``register_filesystem()`` an fsspec file system and then ``read_parquet('s3://...')``
through it, with no ``httpfs`` extension (which is downloaded at run time and so cannot be
relied on everywhere); pyarrow reads and writes the same objects (through buffers here),
so one configured client signs every request, and credentials resolve through botocore's
standard chain (environment, profile, instance role). pyarrow's own ``S3FileSystem`` cannot
be handed to DuckDB, and obstore has no fsspec-compatible file system that DuckDB's
``register_filesystem`` accepts as robustly (its fsspec adapter is young), so either would
need a second client beside DuckDB's.

**Measured** (moto on loopback, 4 objects of 7.8 MB, 2M rows, a GROUP BY over all of them):
DuckDB's ``read_parquet`` through the registered file system takes 1.0 s with s3fs's
default 5 MB read blocks and 0.75 s with 16 MB blocks (used here: fewer round trips, 16 MB
of buffer per open object); the same query over pyarrow datasets on the same file system,
registered with DuckDB as Arrow relations, takes 0.45 s. The engine still reads through
``read_parquet``: it is one SQL path for local and S3 files, keeps DuckDB's row-group
pruning and its error messages naming the failing object (which the read guard turns into a
:class:`~featureledger.errors.CommitFileError`), and needs no per-query relation
bookkeeping; the Arrow route is the known faster option if S3 scans come to dominate.

Driver errors are translated here, where the store meets the driver: no credentials or a
refused signature is an :class:`~featureledger.errors.AccessDeniedError`, a missing bucket
a :class:`~featureledger.errors.StorageError`, an endpoint that does not answer a
:class:`~featureledger.errors.BackendUnavailableError`; a commit's object that is gone or
resized is a :class:`~featureledger.errors.CommitFileError` naming the commit and the file.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import s3fs  # the "s3" extra; a missing one is a MissingDependencyError (backends.py)

from featureledger.config import check_project_name
from featureledger.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    CommitFileError,
    FeatureLedgerError,
    StorageError,
)
from featureledger.offline.storage import (
    ROW_GROUP_SIZE,
    GcReport,
    WrittenFiles,
    commit_file_error,
    crash_point,
    read_units,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.config import ProjectConfig
    from featureledger.registry.commits import CommitRecord

_MAGIC = b"PAR1"
READ_BLOCK_BYTES = 16 << 20  # s3fs's read-ahead block (its default is 5 MB; see above)
# commit id -> (content digest, (etag, size, mtime) per file) when its objects last matched
_VERIFIED: dict[str, tuple[Any, ...]] = {}
_VERIFIED_MAX = 100_000


def driver_error(exc: BaseException, doing: str, where: str) -> FeatureLedgerError | None:
    """The typed error for a driver failure met while ``doing`` against ``where`` (the
    store's URL), or None when it is not one the user can act on by name."""
    import botocore.exceptions as bx

    if isinstance(exc, FeatureLedgerError):
        return None
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return AccessDeniedError(
            f"no AWS credentials were found while {doing} ({where}); set AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or give offline_store.profile "
            "(credentials are never read from featureledger.yaml)")
    if isinstance(exc, PermissionError):
        return AccessDeniedError(
            f"the object store refused access while {doing} ({where}): {text}. Check the "
            "credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE) and the bucket's policy")
    unreachable: tuple[type[BaseException], ...] = (
        bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
        ConnectionError, TimeoutError)
    try:
        import aiohttp

        unreachable += (aiohttp.ClientConnectionError,)
    except ImportError:  # s3fs depends on aiohttp; kept optional for type checkers
        pass
    if isinstance(exc, unreachable):
        return BackendUnavailableError(
            f"the object store at {where} did not answer while {doing} ({text}); check "
            "offline_store.endpoint_url and that the server is running, then retry")
    if isinstance(exc, FileNotFoundError) and "bucket" in text.lower():
        return StorageError(
            f"the bucket of {where} does not exist ({doing}); create it, or fix "
            "offline_store.url in featureledger.yaml")
    return None


class S3OfflineStore:
    """Parquet objects on S3-compatible storage, under ``s3://bucket/prefix/<project>/``."""

    @classmethod
    def from_config(cls, config: ProjectConfig) -> S3OfflineStore:
        """The store of ``offline_store: {type: s3, url: ...}`` in featureledger.yaml."""
        cfg: Any = config.offline_store
        return cls(cfg.url, project=config.project, endpoint_url=cfg.endpoint_url,
                   region=cfg.region, profile=cfg.profile,
                   verify_digests=cfg.verify_digests)

    def __init__(self, url: str, *, project: str = "default", endpoint_url: str | None = None,
                 region: str | None = None, profile: str | None = None,
                 verify_digests: bool = False, retries: int = 3) -> None:
        scheme, _, rest = url.partition("://")
        self.bucket, _, prefix = rest.partition("/")
        if scheme not in ("s3", "s3a") or not self.bucket:
            from featureledger.errors import ConfigError

            raise ConfigError(f"{url!r} is not an S3 URL; write it as s3://bucket/prefix")
        self.prefix = prefix.strip("/")
        self.base = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        self.url = f"s3://{self.base}"
        self.project = check_project_name(project)
        self.verify_digests = verify_digests
        client: dict[str, Any] = {"region_name": region} if region else {}
        # no listing cache: gc and the read guard must see objects other processes wrote
        self._fs = s3fs.S3FileSystem(
            endpoint_url=endpoint_url, profile=profile, client_kwargs=client,
            use_listings_cache=False, skip_instance_cache=True,
            default_block_size=READ_BLOCK_BYTES,
            config_kwargs={"connect_timeout": 5, "read_timeout": 60,
                           "retries": {"max_attempts": retries}})
        self._fs.retries = retries  # s3fs's own retries of transient errors

    @property
    def location(self) -> str:
        """The store's URL, ``s3://bucket/prefix``."""
        return self.url

    @property
    def filesystem(self) -> Any:
        """The fsspec file system engines read :meth:`data_uris` through."""
        return self._fs

    # -- paths --------------------------------------------------------------------------
    def commit_dir(self, view: str, version: int, commit_id: str) -> str:
        """The prefix of a commit's objects, store-relative."""
        return f"{self.project}/views/{view}/v{version}/{commit_id}"

    def _key(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def uri(self, relative: str) -> str:
        """``s3://bucket/key`` of a store-relative file."""
        return f"s3://{self._key(relative)}"

    def data_uris(self, commit: CommitRecord) -> list[str]:
        """``s3://`` URIs of ``commit``'s data files, in digest order (what engines read)."""
        return [self.uri(f) for f in commit.files]

    def dataset_path(self, dataset_id: str) -> str:
        """The stored entity rows of a dataset, store-relative."""
        return f"{self.project}/datasets/{dataset_id}/entities.parquet"

    @contextmanager
    def _driver(self, doing: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            typed = driver_error(exc, doing, self.url)
            if typed is not None:
                raise typed from exc
            raise

    # -- writing ------------------------------------------------------------------------
    def write_commit(self, view: str, version: int, commit_id: str,
                     tables: Iterable[pa.Table] | pa.Table, *, compression: str = "snappy",
                     compression_level: int | None = None,
                     extra_tables: dict[str, pa.Table] | None = None,
                     before_rename: Any = None,
                     row_group_size: int = ROW_GROUP_SIZE,
                     use_dictionary: bool | Sequence[str] = True) -> WrittenFiles:
        """Write a commit's objects straight under its own prefix (see the module doc).

        ``before_rename`` is called once every object is written (there is no rename:
        the name is kept for the local store's callers). A failure removes what was
        written; nothing is listed by a registry row yet, so nothing was visible.
        """
        import pyarrow as pa

        if isinstance(tables, pa.Table):
            tables = [tables]
        rel_dir = self.commit_dir(view, version, commit_id)
        doing = f"writing commit {commit_id} of {view}@{version}"
        with self._driver(doing):
            if self._fs.find(self._key(rel_dir) + "/", maxdepth=1):
                raise StorageError(f"commit prefix {self.uri(rel_dir)} already holds objects; "
                                   "commit ids must be unique")
        start = time.perf_counter()
        written: list[str] = []
        h = hashlib.sha256()
        sizes: dict[str, int] = {}
        side: dict[str, str] = {}
        put_s = 0.0
        try:
            with self._driver(doing):
                for i, table in enumerate(tables):
                    rel = f"{rel_dir}/part-{i:05d}.parquet"
                    data = _parquet_bytes(table, compression=compression,
                                          compression_level=compression_level,
                                          row_group_size=row_group_size,
                                          use_dictionary=use_dictionary)
                    h.update(data)
                    sizes[rel] = len(data)
                    t = time.perf_counter()
                    self._fs.pipe_file(self._key(rel), data)
                    put_s += time.perf_counter() - t
                    written.append(rel)
                for name, table in (extra_tables or {}).items():
                    rel = f"{rel_dir}/{name}"
                    data = _parquet_bytes(table, compression=compression)
                    sizes[rel] = len(data)
                    side[rel] = hashlib.sha256(data).hexdigest()
                    self._fs.pipe_file(self._key(rel), data)
                    written.append(rel)
            if before_rename is not None:
                before_rename()
            crash_point("after_files")
        except BaseException:
            self._remove_keys(written)
            raise
        crash_point("after_rename")
        data_files = [r for r in written if r not in side]
        total = time.perf_counter() - start
        return WrittenFiles(data_files, h.hexdigest(), sum(sizes[r] for r in data_files),
                            {r.rsplit("/", 1)[1]: r for r in side},
                            {"encode_write": total - put_s, "put": put_s},
                            sizes=sizes, side_digests=side)

    def _remove_keys(self, rels: Sequence[str]) -> None:
        if not rels:
            return
        # best effort: gc removes what stays after its grace period
        with suppress(Exception):
            self._fs.rm([self._key(r) for r in rels])

    def remove_commit_files(self, files: list[str]) -> None:
        """Delete an unregistered commit's objects, side files included. Best effort, as
        it runs while another error propagates (which must not be masked): what stays is
        an orphan that gc removes after its grace period."""
        for d in sorted({f.rsplit("/", 1)[0] for f in files}):
            with suppress(Exception):
                self._remove_prefix(d)

    def _remove_prefix(self, rel_dir: str) -> None:
        with self._driver(f"removing {self.uri(rel_dir)}"):
            keys = self._fs.find(self._key(rel_dir) + "/")
            if keys:
                self._fs.rm(keys)

    def clear_commit(self, view: str, version: int, commit_id: str) -> None:
        """Delete whatever an interrupted write of this commit left under its prefix."""
        self._remove_prefix(self.commit_dir(view, version, commit_id))

    def read_table(self, relative: str, columns: Sequence[str] | None = None) -> pa.Table:
        """One stored Parquet object."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._driver(f"reading {self.uri(relative)}"):
            data = self._fs.cat_file(self._key(relative))
        return pq.read_table(pa.BufferReader(data), columns=columns)

    # -- reading guards -----------------------------------------------------------------
    def _listing(self, rel_dir: str) -> dict[str, dict[str, Any]]:
        """store-relative path -> object info, for every object under ``rel_dir``."""
        with self._driver(f"listing {self.uri(rel_dir)}"):
            found = self._fs.find(self._key(rel_dir) + "/", detail=True)
        cut = len(self.base) + 1
        return {k[cut:]: info for k, info in found.items()}

    def _problems(self, commit: CommitRecord) -> Iterator[tuple[str, str]]:
        """(file, what is wrong) for each missing or resized data file of ``commit``: one
        LIST per commit folder, not a HEAD per file."""
        listed: dict[str, dict[str, Any]] = {}
        for d in sorted({f.rsplit("/", 1)[0] for f in commit.files}):
            listed.update(self._listing(d))
        manifest = commit.file_manifest or {}
        for rel in commit.files:
            info = listed.get(rel)
            if info is None:
                yield rel, "is missing"
                continue
            expected = manifest.get(rel, {}).get("size")
            if expected is not None and int(info["size"]) != expected:
                yield rel, (f"is {info['size']} bytes but was {expected} when committed, so "
                            "it was cut short or changed")

    def require_files(self, commits: Iterable[CommitRecord]) -> None:
        """Raise CommitFileError naming the commit and the object when one of ``commits``'
        data files is missing or not the size recorded at commit time."""
        for c in commits:
            for rel, problem in self._problems(c):
                raise commit_file_error(self.url, c, rel, problem)

    def reading(self, commits: Iterable[CommitRecord]) -> Any:
        """A context manager around a query of ``commits``' objects (see
        :func:`featureledger.offline.storage.commit_reads`, which it mirrors)."""
        return self._reading(list(commits))

    @contextmanager
    def _reading(self, commits: list[CommitRecord]) -> Iterator[None]:
        from featureledger.registry.commits import require_sealed

        require_sealed(commits)
        commits = read_units(commits)  # a compacted commit is read from its segment
        self.require_files(commits)
        if self.verify_digests:
            self._verify(commits)
        try:
            yield
        except CommitFileError:
            raise
        except Exception as exc:
            found = self._probe(commits, exc)
            if found is None:
                typed = driver_error(exc, "reading commit files", self.url)
                if typed is not None:
                    raise typed from exc
                raise
            commit, rel, problem = found
            raise commit_file_error(self.url, commit, rel, problem) from exc

    def _verify(self, commits: Sequence[CommitRecord]) -> None:
        for c in commits:
            if not c.files:
                continue
            listed: dict[str, dict[str, Any]] = {}
            for d in sorted({f.rsplit("/", 1)[0] for f in c.files}):
                listed.update(self._listing(d))
            key = (self.url, c.content_digest,
                   tuple((listed[f].get("ETag"), listed[f]["size"],
                          str(listed[f].get("LastModified"))) for f in c.files))
            if _VERIFIED.get(c.commit_id) == key:
                continue
            if self.file_digest(c.files) != c.content_digest:
                more = f"(or another of its {len(c.files)} files) " if len(c.files) > 1 else ""
                raise commit_file_error(self.url, c, c.files[0], (
                    f"{more}no longer matches the commit's content digest, so it was "
                    "changed after the commit (offline_store.verify_digests is on, so it "
                    "is not read)"))
            if len(_VERIFIED) >= _VERIFIED_MAX:
                _VERIFIED.clear()
            _VERIFIED[c.commit_id] = key

    def _probe(self, commits: Sequence[CommitRecord], exc: BaseException
               ) -> tuple[CommitRecord, str, str] | None:
        """After a failed read: the commit object to blame, and what is wrong with it."""
        from featureledger.offline.duckdb.engine import may_be_damaged_data, named_file

        try:
            for c in commits:
                for rel, problem in self._problems(c):
                    return c, rel, problem
                for rel in c.files:
                    wrong = self._parquet_problem(rel)
                    if wrong is not None:
                        return c, rel, wrong
        except FeatureLedgerError:
            return None  # the store itself is unreachable: the caller's error says so
        named = named_file(exc, {self.uri(rel): (c, rel) for c in commits for rel in c.files})
        if named is not None:
            commit, rel, detail = named
            return commit, rel, f"cannot be read ({detail})"
        if may_be_damaged_data(exc):
            for c in commits:
                if c.files and self.file_digest(c.files) != c.content_digest:
                    more = (f"(or another of its {len(c.files)} files) " if len(c.files) > 1
                            else "")
                    return c, c.files[0], (f"{more}no longer matches the commit's content "
                                           "digest, so it was changed after the commit")
        return None

    def _parquet_problem(self, relative: str, size: int | None = None) -> str | None:
        """None when the object starts and ends like a whole Parquet file (two ranged
        GETs of 4 and 8 bytes), else what is wrong with it."""
        key = self._key(relative)
        with self._driver(f"checking {self.uri(relative)}"):
            if size is None:
                size = int(self._fs.info(key)["size"])
            if size < 12:
                return f"is {size} bytes, too small to be a Parquet file"
            head = self._fs.cat_file(key, start=0, end=4)
            tail = self._fs.cat_file(key, start=size - 8, end=size)
        footer = int.from_bytes(tail[:4], "little")
        if head != _MAGIC or tail[4:] != _MAGIC or footer + 12 > size:
            return "is not a complete Parquet file (cut short or overwritten)"
        return None

    # -- checks (reconcile) -------------------------------------------------------------
    def missing_files(self, files: list[str]) -> list[str]:
        """Those of ``files`` that are not in the bucket."""
        present: set[str] = set()
        for d in sorted({f.rsplit("/", 1)[0] for f in files}):
            present.update(self._listing(d))
        return [f for f in files if f not in present]

    def verify_digest(self, files: list[str], digest: str) -> bool:
        """Whether ``files``' bytes, in order, still hash to ``digest``."""
        return self.file_digest(files) == digest

    def file_digest(self, files: list[str]) -> str:
        """sha256 over ``files``' bytes, in order (read in 1 MiB blocks)."""
        h = hashlib.sha256()
        with self._driver("digesting commit files"):
            for rel in files:
                with self._fs.open(self._key(rel), "rb", block_size=1 << 20) as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
        return h.hexdigest()

    def file_problem(self, relative: str, expected_size: int | None
                     ) -> tuple[str, str] | None:
        """``(kind, what is wrong)`` from a HEAD and, without a recorded size, the
        Parquet header and footer; None when the object looks whole."""
        try:
            with self._driver(f"checking {self.uri(relative)}"):
                size = int(self._fs.info(self._key(relative))["size"])
        except FileNotFoundError:
            return "missing", "is missing"
        if expected_size is None:
            wrong = self._parquet_problem(relative, size)
            return None if wrong is None else ("unreadable", wrong)
        if size != expected_size:
            return "size_mismatch", (f"is {size} bytes but was {expected_size} when committed "
                                     "(cut short, or overwritten)")
        return None

    # -- gc -----------------------------------------------------------------------------
    def gc(self, referenced_files: set[str], *, grace_seconds: float = 3600,
           dry_run: bool = False, referenced_datasets: set[str] | None = None) -> GcReport:
        """Remove this project's commit prefixes that no registry row references.

        A prefix is kept while its newest object is younger than ``grace_seconds`` (by
        the objects' ``LastModified``, the server's clock): an ingestion may be between
        its last object and its registry write. Other projects' prefixes are never
        looked at. With ``referenced_datasets`` (the prefixes of the dataset rows' entity
        objects), dataset prefixes no row references go too, after the same grace.
        """
        referenced_dirs = {f.rsplit("/", 1)[0] for f in referenced_files}
        groups: dict[str, list[tuple[str, int, float]]] = {}
        # (prefix listed, path parts of a folder): <project>/views/<view>/v<N>/<commit>/...
        # and <project>/datasets/<dataset>/...
        where = [(f"{self.project}/views", 5)]
        if referenced_datasets is not None:
            where.append((f"{self.project}/datasets", 3))
            referenced_dirs |= referenced_datasets
        for prefix, depth in where:
            for rel, info in self._listing(prefix).items():
                parts = rel.split("/")
                if len(parts) <= depth:
                    continue
                folder = "/".join(parts[:depth])
                modified = info.get("LastModified")
                stamp = modified.timestamp() if modified is not None else 0.0
                groups.setdefault(folder, []).append((rel, int(info["size"]), stamp))
        now = time.time()
        removed, kept, freed = [], [], 0
        for folder in sorted(groups):
            if folder in referenced_dirs:
                continue
            objects = groups[folder]
            if now - max(s for _, _, s in objects) < grace_seconds:
                kept.append(folder)
                continue
            if not dry_run:
                with self._driver(f"removing the orphan prefix {self.uri(folder)}"):
                    self._fs.rm([self._key(r) for r, _, _ in objects])
            removed.append(folder)
            freed += sum(n for _, n, _ in objects)
        return GcReport(removed, kept, freed)

    # -- datasets -----------------------------------------------------------------------
    def stage_dataset(self, dataset_id: str, entities: pa.Table) -> str:
        """Write a dataset's entity rows at their final key: no reader looks there until
        the registry row that records the dataset commits."""
        rel = self.dataset_path(dataset_id)
        data = _parquet_bytes(entities, compression="lz4", use_dictionary=False)
        with self._driver(f"storing the entity rows of dataset {dataset_id}"):
            self._fs.pipe_file(self._key(rel), data)
        return rel

    def publish_dataset(self, staged: str) -> None:
        """Nothing to do: the entity rows are already at their key (see stage_dataset)."""

    def discard_dataset(self, dataset_id: str, staged: Any = None) -> None:
        """Remove a dataset's entity rows (its registry write failed)."""
        self._remove_keys([self.dataset_path(dataset_id)])

    def read_dataset_entities(self, relative: str) -> pa.Table:
        """A dataset's stored entity rows; FileNotFoundError when the object is gone."""
        return self.read_table(relative)

    # -- life ---------------------------------------------------------------------------
    def probe(self) -> None:
        """One LIST of at most one key under the prefix: raises the typed error when the
        endpoint, the credentials or the bucket fail."""
        with self._driver("checking the offline store"):
            self._fs.call_s3("list_objects_v2", Bucket=self.bucket,
                             Prefix=f"{self.prefix}/" if self.prefix else "", MaxKeys=1)

    def close(self) -> None:
        """Nothing to release: s3fs closes its HTTP session when the process ends."""


def _parquet_bytes(table: pa.Table, *, compression: str = "snappy",
                   compression_level: int | None = None,
                   use_dictionary: bool | Sequence[str] = True, row_group_size: int = ROW_GROUP_SIZE) -> bytes:
    """``table`` as one Parquet file's bytes, written as the local store writes files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression, compression_level=compression_level,
                   row_group_size=row_group_size, write_statistics=True,
                   use_dictionary=use_dictionary)
    return bytes(sink.getvalue().to_pybytes())
