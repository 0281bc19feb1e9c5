"""The offline store seam: the one interface every part uses to reach commit and dataset files.

An offline store owns every path. The rest of featureledger names files only by the
store-relative paths that commit and dataset rows record (``<project>/views/...``) and asks
the store for everything else: what an engine reads (:meth:`OfflineStore.data_uris`, plus
the file system the engine must read it through, :attr:`OfflineStore.filesystem`), writing
and removing a commit's files, the read guard, the checks ``reconcile`` runs, ``gc``, the
entity rows of datasets and a health probe.

Two implementations: :class:`~featureledger.offline.storage.ParquetOfflineStore` (a local
or mounted folder; a commit appears by renaming its temp folder) and
:class:`~featureledger.offline.s3.S3OfflineStore` (S3-compatible object storage; a commit's
objects are written under its own prefix and become visible with the registry row that
lists them). Both keep the same layout, digests and file manifest, so commit rows, datasets
and ``reconcile`` mean the same on either.

Engines learn the file system from the store, never from global state: the context hands
:attr:`OfflineStore.filesystem` to the engine once, when it opens the engine
(``engine.attach_filesystem(fs)``); an engine without that ability cannot read a store that
has one, and the context says so at open time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.offline.storage import GcReport, WrittenFiles
    from featureledger.registry.commits import CommitRecord


class OfflineStore(Protocol):
    """Where commit and dataset files live (the offline storage seam)."""

    project: str
    verify_digests: bool

    @property
    def location(self) -> str:
        """Where the store is, for messages: a folder, or ``s3://bucket/prefix``."""

    @property
    def filesystem(self) -> Any:
        """The fsspec file system engines must read :meth:`data_uris` through, or None
        when they are local paths any engine can open."""

    # -- paths ------------------------------------------------------------------------
    def commit_dir(self, view: str, version: int, commit_id: str) -> str:
        """The store-relative folder (prefix) of a commit's files."""

    def uri(self, relative: str) -> str:
        """What an engine or a message names a store-relative file by (an absolute local
        path, or ``s3://bucket/key``)."""

    def data_uris(self, commit: CommitRecord) -> list[str]:
        """``commit``'s data files as an engine reads them, in digest order."""

    def dataset_path(self, dataset_id: str) -> str:
        """The stored entity rows of a dataset, store-relative."""

    # -- writing ----------------------------------------------------------------------
    def write_commit(self, view: str, version: int, commit_id: str,
                     tables: Iterable[pa.Table] | pa.Table, *, compression: str = "snappy",
                     compression_level: int | None = None,
                     extra_tables: dict[str, pa.Table] | None = None,
                     before_rename: Any = None,
                     row_group_size: int = 1_000_000,
                     use_dictionary: bool | Sequence[str] = True) -> WrittenFiles:
        """Write a commit's data files (``part-NNNNN.parquet``) and side files; they are
        read only once a registry row lists them. (Compaction writes a segment's files
        through it too, with smaller row groups and dictionaries only for the columns
        ``use_dictionary`` names.)"""

    def remove_commit_files(self, files: list[str]) -> None:
        """Delete an unregistered commit's files (after a failed registry write)."""

    def clear_commit(self, view: str, version: int, commit_id: str) -> None:
        """Delete whatever an earlier, interrupted write of this commit left (the caller
        holds the commit id exclusively)."""

    def read_table(self, relative: str, columns: Sequence[str] | None = None) -> pa.Table:
        """One stored Parquet file (a side file such as ``rejected.parquet``, or a data
        file compaction rewrites), only ``columns`` when given."""

    # -- reading guards and checks ----------------------------------------------------
    def reading(self, commits: Iterable[CommitRecord]) -> Any:
        """A context manager around a query of ``commits``' files: refuses a missing or
        resized file before the query, and names the commit and the file when the query
        fails on one (:class:`~featureledger.errors.CommitFileError`)."""

    def require_files(self, commits: Iterable[CommitRecord]) -> None:
        """Raise CommitFileError for the first missing or resized file of ``commits``."""

    def missing_files(self, files: list[str]) -> list[str]:
        """Those of ``files`` that are not in the store."""

    def verify_digest(self, files: list[str], digest: str) -> bool:
        """Whether ``files``' bytes, in order, still hash to ``digest``."""

    def file_digest(self, files: list[str]) -> str:
        """sha256 over ``files``' bytes, in order (a commit's content digest)."""

    def file_problem(self, relative: str, expected_size: int | None
                     ) -> tuple[str, str] | None:
        """``(kind, what is wrong)`` for one file, kind ``missing``, ``unreadable`` or
        ``size_mismatch``; without a recorded size, the Parquet header and footer are
        checked. None when the file looks whole."""

    def gc(self, referenced_files: set[str], *, grace_seconds: float = 3600,
           dry_run: bool = False, referenced_datasets: set[str] | None = None) -> GcReport:
        """Remove this project's commit folders that no registry row references, once
        older than ``grace_seconds``; with ``referenced_datasets`` (the folders of every
        dataset row's stored entity rows), also the dataset folders no row references."""

    # -- datasets ---------------------------------------------------------------------
    def stage_dataset(self, dataset_id: str, entities: pa.Table) -> Any:
        """Write a dataset's entity rows durably where no reader looks yet; returns a
        token for :meth:`publish_dataset` / :meth:`discard_dataset`."""

    def publish_dataset(self, staged: Any) -> None:
        """Put staged entity rows at :meth:`dataset_path` (before the registry row)."""

    def discard_dataset(self, dataset_id: str, staged: Any = None) -> None:
        """Remove a dataset's staged or published entity rows (its registry write failed)."""

    def read_dataset_entities(self, relative: str) -> pa.Table:
        """A dataset's stored entity rows; FileNotFoundError when they are gone."""

    # -- life -------------------------------------------------------------------------
    def probe(self) -> None:
        """Raise when the store cannot be reached (health checks)."""

    def close(self) -> None:
        """Release the store's resources."""
