"""TrainingDataset: the result of a historical retrieval, with its manifest and content hash.

The content hash is a sha256 over the table's logical content: column names, Arrow types,
and for every column its validity, then its values (nulls read as zero / empty, so the bytes
under a null slot never matter), fed as separate streams so that the result does not depend
on how the table is cut into chunks or batches.

>>> import pyarrow as pa
>>> t = pa.table({"a": [1, None, 3], "b": ["x", "yz", None]})
>>> chunked = pa.Table.from_batches(t.to_batches(max_chunksize=1))
>>> content_hash(t) == content_hash(chunked)
True
>>> content_hash(t) == content_hash(t.slice(1))
False
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import Executor

    import pandas as pd
    import pyarrow as pa

# Bumped if the hashing scheme ever changes; recorded in every manifest.
HASH_VERSION = 1


def _buffer(values: Any) -> memoryview:
    """The bytes of a numpy array, made C-contiguous if needed, without copying them into
    a ``bytes`` (sha256 takes the buffer as it is)."""
    import numpy as np

    view: memoryview = np.ascontiguousarray(values).data
    return view


class _ColumnHasher:
    """Hashes one column chunk by chunk; independent of where the chunks are cut."""

    def __init__(self, name: str, dtype: pa.DataType) -> None:
        import pyarrow as pa

        self.name = name
        # dictionary encoding is a storage detail (Parquet may change its index width)
        self.dtype = dtype.value_type if pa.types.is_dictionary(dtype) else dtype
        self.validity = hashlib.sha256()
        self.values = hashlib.sha256()
        self.lengths = hashlib.sha256()
        self.child: _ColumnHasher | None = None

    def update(self, arr: pa.Array) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        if len(arr) == 0:
            return
        t = arr.type
        if pa.types.is_dictionary(t):
            arr = arr.dictionary_decode()
            t = arr.type
        if arr.null_count:
            self.validity.update(pc.is_valid(arr).to_numpy(zero_copy_only=False).tobytes())
        else:
            self.validity.update(b"\x01" * len(arr))
        if pa.types.is_boolean(t):
            vals = pc.fill_null(arr, False).to_numpy(zero_copy_only=False)
            self.values.update(vals.astype(np.uint8).tobytes())
        elif pa.types.is_floating(t):
            vals = (pc.fill_null(arr, 0) if arr.null_count else arr).to_numpy(
                zero_copy_only=False)
            if np.isnan(vals).any():  # one NaN bit pattern, whatever produced it
                vals = np.where(np.isnan(vals), np.array(np.nan, dtype=vals.dtype), vals)
            self.values.update(_buffer(vals))
        elif pa.types.is_integer(t):
            filled = pc.fill_null(arr, 0) if arr.null_count else arr
            self.values.update(_buffer(filled.to_numpy(zero_copy_only=False)))
        elif (pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t)
              or pa.types.is_duration(t)):
            width = pa.int64() if t.bit_width == 64 else pa.int32()
            ints = arr.view(width)
            filled = pc.fill_null(ints, 0) if ints.null_count else ints
            self.values.update(_buffer(filled.to_numpy(zero_copy_only=False)))
        elif (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
              or pa.types.is_large_binary(t) or pa.types.is_string_view(t)
              or pa.types.is_binary_view(t)):
            self._update_binary(arr)
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            lengths = pc.fill_null(pc.list_value_length(arr), 0).cast(pa.int64())
            self.lengths.update(lengths.to_numpy(zero_copy_only=False).tobytes())
            if self.child is None:
                self.child = _ColumnHasher(self.name + ".item", t.value_type)
            self.child.update(arr.flatten())
        else:  # rare types: their Python values, canonically printed
            from featureledger.model.hashing import canonical_json

            self.values.update(canonical_json(arr.to_pylist()).encode())

    def _update_binary(self, arr: pa.Array) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        is_text = not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)
                       or pa.types.is_binary_view(arr.type))
        arr = arr.cast(pa.large_string() if is_text else pa.large_binary())
        arr = pc.fill_null(arr, "" if is_text else b"")
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
        self.lengths.update(np.diff(offsets).tobytes())
        data = arr.buffers()[2]
        if data is not None:
            self.values.update(memoryview(data)[int(offsets[0]):int(offsets[-1])])

    def digest(self) -> bytes:
        h = hashlib.sha256()
        h.update(f"{self.name}\x00{self.dtype}\x00".encode())
        for part in (self.validity, self.values, self.lengths):
            h.update(part.digest())
        if self.child is not None:
            h.update(self.child.digest())
        return h.digest()


class ContentHasher:
    """Incremental content hash of a table given batch by batch (see the module doc)."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.columns = [_ColumnHasher(f.name, f.type) for f in schema]
        self.rows = 0

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        import pyarrow as pa

        self.rows += batch.num_rows
        for i, hasher in enumerate(self.columns):
            col = batch.column(i)
            for chunk in (col.chunks if isinstance(col, pa.ChunkedArray) else [col]):
                hasher.update(chunk)

    def column_digests(self) -> list[bytes]:
        return [c.digest() for c in self.columns]

    def hexdigest(self) -> str:
        return combine_digests(self.rows, self.column_digests())


def combine_digests(rows: int, digests: list[bytes]) -> str:
    """The content hash of a table from its row count and its columns' digests, in order."""
    h = hashlib.sha256(f"featureledger-content-v{HASH_VERSION}\x00{rows}\x00".encode())
    for d in digests:
        h.update(d)
    return h.hexdigest()


def column_digests(table: pa.Table, pool: Executor | None = None) -> list[bytes]:
    """Each column's digest; tables sharing columns can hash them once (combine_digests).
    With ``pool``, half the columns are hashed there meanwhile (sha256 and Arrow release
    the GIL, so two threads hash about twice as fast)."""
    if pool is None or table.num_columns < 2:
        hasher = ContentHasher(table.schema)
        hasher.update(table)
        return hasher.column_digests()
    half = table.num_columns // 2
    names = table.column_names
    other = pool.submit(column_digests, table.select(names[:half]))
    mine = column_digests(table.select(names[half:]))
    return other.result() + mine


def content_hash(table: pa.Table | Iterable[pa.RecordBatch], schema: pa.Schema | None = None
                 ) -> str:
    """The chunking-independent content hash of an Arrow table (or batches with ``schema``)."""
    import pyarrow as pa

    if isinstance(table, pa.Table):
        hasher = ContentHasher(table.schema)
        hasher.update(table)
        return hasher.hexdigest()
    if schema is None:
        raise TypeError("content_hash of record batches needs their schema")
    hasher = ContentHasher(schema)
    for batch in table:
        hasher.update(batch)
    return hasher.hexdigest()


@dataclass
class TrainingDataset:
    """A point-in-time-correct training set: its rows (Arrow) and its manifest.

    ``manifest`` records the exact feature versions and commit ids read, the entity-rows
    digest, the output content hash, the Arrow schema, the row count, per-feature null
    counts and ``as_of``. A dataset loaded by id (``store.get_dataset``) rebuilds its rows
    from the recorded commits the first time they are asked for.
    """

    id: str
    manifest: dict[str, Any]
    _table: pa.Table | None = field(default=None, repr=False)
    _loader: Callable[[], pa.Table] | None = field(default=None, repr=False)

    @property
    def content_hash(self) -> str:
        return str(self.manifest["content_hash"])

    @property
    def commit_ids(self) -> list[str]:
        return list(self.manifest["commit_ids"])

    @property
    def row_count(self) -> int:
        return int(self.manifest["row_count"])

    @property
    def null_counts(self) -> dict[str, int]:
        return dict(self.manifest["null_counts"])

    def to_arrow(self) -> pa.Table:
        if self._table is None:
            if self._loader is None:
                from featureledger.errors import StateError

                raise StateError(f"dataset {self.id} holds no rows; rebuild it with reproduce()")
            self._table = self._loader()
        return self._table

    def to_pandas(self) -> pd.DataFrame:
        """The rows as a pandas DataFrame with Arrow-backed dtypes (``pd.ArrowDtype``).

        Every column keeps its declared type: an int64 feature with missing values is
        ``int64[pyarrow]`` (not float64 with NaN), bools stay bools, strings strings, lists
        typed lists, timestamps UTC microseconds; a stored NaN stays NaN, apart from a null
        (``isna`` is True only for the null). NumPy-backed columns are one call away:
        ``ds.to_arrow().to_pandas()``.
        """
        from featureledger.frames import to_pandas

        return to_pandas(self.to_arrow())

    def to_polars(self) -> Any:
        """The rows as a Polars DataFrame (needs the ``polars`` extra)."""
        from featureledger.frames import to_polars

        return to_polars(self.to_arrow(), "TrainingDataset.to_polars")

    def to_parquet(self, path: str | Path, *, compression: str = "zstd") -> Path:
        """Write the rows to one Parquet file (the manifest goes into its key-value metadata)."""
        import pyarrow.parquet as pq

        from featureledger.model.hashing import canonical_json

        table = self.to_arrow()
        meta = dict(table.schema.metadata or {})
        meta[b"featureledger.dataset_id"] = self.id.encode()
        meta[b"featureledger.content_hash"] = self.content_hash.encode()
        meta[b"featureledger.manifest"] = canonical_json(self.manifest).encode()
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.replace_schema_metadata(meta), p, compression=compression)
        return p

    def __len__(self) -> int:
        return self.row_count
