"""Feature vectors as returned by ``get_online_features``.

Values are kept in columns (one list per feature); per view the response keeps the
records the values came from (their commit and event time) and one small integer code per
entity row, so a value's status, commit and event time cost nothing until they are asked
for. The view version is the same for every value of a feature (references are pinned
when they are planned).

Statuses:

* ``PRESENT`` — a value was found, within the view's TTL;
* ``NULL`` — a record was found and the stored value is null;
* ``NOT_FOUND`` — no record for the key in that view version;
* ``OUTSIDE_TTL`` — the record is older than the view's TTL; its value is not served
  (None, or the field's default when the caller asked for ``fill_defaults``);
* ``DEFAULT`` — a record was found and the value is the field's declared default: the
  row was written under an older version that did not have the field (the version read
  carries that version's data, see :mod:`featureledger.model.projection`).

>>> layout = Layout(join_keys=["driver_id"], names=["trips"], references=["stats@1:trips"],
...                 versions=[1], group=[0], dtypes=["int64"])
>>> r = OnlineResponse(layout, [[5, None]], [[FOUND, NOT_FOUND_CODE]],
...                    [[(1_700_000_000_000_000, "cmt_a"), None]], entity_columns=[[1, 2]])
>>> r.to_dict()
{'driver_id': [1, 2], 'trips': [5, None]}
>>> r.statuses["trips"]
[<FeatureStatus.PRESENT: 'PRESENT'>, <FeatureStatus.NOT_FOUND: 'NOT_FOUND'>]
>>> r.commits("trips")
['cmt_a', None]
"""

from __future__ import annotations

import enum
import functools
import math
from typing import Any, NamedTuple

from featureledger.model.types import FLOAT_DTYPES


class FeatureStatus(enum.StrEnum):
    """The status of one served value."""

    PRESENT = "PRESENT"
    NULL = "NULL"
    NOT_FOUND = "NOT_FOUND"
    OUTSIDE_TTL = "OUTSIDE_TTL"
    DEFAULT = "DEFAULT"

    def __str__(self) -> str:
        return self.value


PRESENT = FeatureStatus.PRESENT
NULL = FeatureStatus.NULL
NOT_FOUND = FeatureStatus.NOT_FOUND
OUTSIDE_TTL = FeatureStatus.OUTSIDE_TTL
DEFAULT = FeatureStatus.DEFAULT

# Per-row codes kept by a response (one per view and entity row); a found record's values
# are PRESENT or NULL each, decided by the value itself when the status is asked for.
FOUND = 0
NOT_FOUND_CODE = 2
OUTSIDE_TTL_CODE = 3
_BY_CODE = (PRESENT, NULL, NOT_FOUND, OUTSIDE_TTL)


class Layout(NamedTuple):
    """What every response of one read plan shares (built once per plan)."""

    join_keys: list[str]  # join keys of the entity rows, first-seen order
    names: list[str]  # feature names, request order
    references: list[str]  # pinned references, same order
    versions: list[int]  # view version of each feature
    group: list[int]  # feature position -> view (index into codes and records)
    dtypes: list[str] | None = None
    # per feature: the commits whose rows hold the field's default instead of a value
    # (written under an older version without the field); None when there are none
    defaulted: list[frozenset[str] | None] | None = None


class OnlineResponse:
    """Feature values for a list of entity rows, with per-value status and provenance.

    ``values[name]``, ``statuses[name]``, ``commits(name)`` and ``event_timestamps(name)``
    are lists aligned with the entity rows; ``versions[name]`` is the view version the
    feature was read from and ``references[name]`` its pinned reference.
    """

    __slots__ = ("_codes", "_dicts", "_entity_cols", "_entity_rows", "_layout", "_records",
                 "_values", "_values_by_name")

    def __init__(self, layout: Layout, values: list[list[Any]],
                 codes: list[list[int] | None], records: list[list[Any]], *,
                 entity_rows: list[dict[str, Any]] | None = None,
                 entity_columns: list[list[Any]] | None = None) -> None:
        # ``values[j]`` is feature j's column. Per view g, ``codes[g]`` is None when every
        # record was found within its TTL (the common case: nothing stored per row), else
        # one code per row; ``records[g][i]`` is the record behind row i, indexable as
        # (event_ts, commit_id, ...), or None. Name-keyed dicts, statuses and entity
        # columns given as rows are built on first access.
        self._layout = layout
        self._values = values
        self._codes = codes
        self._records = records
        self._entity_rows = entity_rows
        self._entity_cols = entity_columns
        self._values_by_name: dict[str, list[Any]] | None = None
        self._dicts: dict[str, dict[str, Any]] | None = None

    @property
    def join_keys(self) -> list[str]:
        return self._layout.join_keys

    def with_computed(self, columns: list[tuple[str, str, int, str, list[Any]]],
                      hide: frozenset[str] = frozenset()) -> OnlineResponse:
        """This response with computed features appended (request-time features):
        ``(name, reference, version, dtype, values)`` each. Their status is PRESENT or
        NULL by value; they come from no commit. ``hide`` names features read only to
        compute them, left out of the response."""
        if not columns and not hide:
            return self
        lay = self._layout
        g = len(self._codes)
        n = len(self)
        layout = Layout(lay.join_keys, [*lay.names, *(c[0] for c in columns)],
                        [*lay.references, *(c[1] for c in columns)],
                        [*lay.versions, *(c[2] for c in columns)],
                        [*lay.group, *([g] * len(columns))],
                        None if lay.dtypes is None else [*lay.dtypes, *(c[3] for c in columns)],
                        None if lay.defaulted is None
                        else [*lay.defaulted, *([None] * len(columns))])
        values = [*self._values, *(list(c[4]) for c in columns)]
        if hide:  # the groups (codes, records) stay: only the named features leave
            keep = [i for i, name in enumerate(layout.names) if name not in hide]
            def kept(items: list[Any] | None) -> Any:
                return None if items is None else [items[j] for j in keep]

            layout = Layout(layout.join_keys, kept(layout.names), kept(layout.references),
                            kept(layout.versions), kept(layout.group), kept(layout.dtypes),
                            kept(layout.defaulted))
            values = [values[j] for j in keep]
        return OnlineResponse(layout, values,
                              [*self._codes, None], [*self._records, [None] * n],
                              entity_rows=self._entity_rows, entity_columns=self._entity_cols)

    @property
    def names(self) -> list[str]:
        """Feature names, in request order."""
        return self._layout.names

    def _by_name(self, key: str, items: list[Any] | None) -> dict[str, Any]:
        if self._dicts is None:
            self._dicts = {}
        d = self._dicts.get(key)
        if d is None:
            d = self._dicts[key] = dict(zip(self.names, items or [], strict=False))
        return d

    @property
    def entity_columns(self) -> list[list[Any]]:
        """The join-key values of the entity rows, one list per join key."""
        cols = self._entity_cols
        if cols is None:
            rows = self._entity_rows or []
            cols = self._entity_cols = [[r.get(k) for r in rows]
                                        for k in self._layout.join_keys]
        return cols

    @property
    def values(self) -> dict[str, list[Any]]:
        """Feature name -> values, aligned with the entity rows."""
        d = self._values_by_name  # the accessor most callers use: kept to the minimum
        if d is None:
            d = self._values_by_name = dict(zip(self._layout.names, self._values,
                                                strict=True))
        return d

    @property
    def statuses(self) -> dict[str, list[FeatureStatus]]:
        """Feature name -> status of each value."""
        if self._dicts is None:
            self._dicts = {}
        d = self._dicts.get("statuses")
        if d is None:
            d = self._dicts["statuses"] = {
                name: self._status_column(j) for j, name in enumerate(self.names)}
        return d

    def _status_column(self, j: int) -> list[FeatureStatus]:
        layout = self._layout
        codes = self._codes[layout.group[j]]
        col = self._values[j]
        if codes is None:
            out = [NULL if v is None else PRESENT for v in col]
        else:
            out = [(NULL if v is None else PRESENT) if c == FOUND else _BY_CODE[c]
                   for c, v in zip(codes, col, strict=True)]
        filled = layout.defaulted[j] if layout.defaulted else None
        if filled:
            recs = self._records[layout.group[j]]
            out = [DEFAULT if s is PRESENT and r is not None and r[1] in filled else s
                   for s, r in zip(out, recs, strict=True)]
        return out

    @property
    def versions(self) -> dict[str, int]:
        """Feature name -> the view version it was read from."""
        return self._by_name("versions", self._layout.versions)

    @property
    def references(self) -> dict[str, str]:
        """Feature name -> pinned reference (``view@version:feature``)."""
        return self._by_name("references", self._layout.references)

    @property
    def dtypes(self) -> dict[str, str]:
        return self._by_name("dtypes", self._layout.dtypes)

    def __len__(self) -> int:
        if self._entity_cols is None:
            return len(self._entity_rows or [])
        return len(self._entity_cols[0]) if self._entity_cols else 0

    def __repr__(self) -> str:
        return f"<OnlineResponse {len(self)} row(s) x {len(self.names)} feature(s)>"

    def _group_records(self, name: str) -> list[Any]:
        layout = self._layout
        return self._records[layout.group[layout.names.index(name)]]

    def commits(self, name: str) -> list[str | None]:
        """The commit each value of ``name`` came from (None when not found)."""
        return [None if r is None else r[1] for r in self._group_records(name)]

    def event_timestamps(self, name: str) -> list[int | None]:
        """Event time (µs since the epoch, UTC) of the record behind each value."""
        return [None if r is None else r[0] for r in self._group_records(name)]

    def to_dict(self, *, metadata: bool = False) -> dict[str, list[Any]]:
        """Columns: join keys, then features; with ``metadata`` also
        ``<name>__status``, ``<name>__version`` and ``<name>__commit`` per value."""
        out: dict[str, list[Any]] = dict(zip(self._layout.join_keys, self.entity_columns,
                                             strict=False))
        if not metadata:
            out.update(zip(self._layout.names, self._values, strict=True))
            return out
        n = len(self)
        for j, name in enumerate(self.names):
            out[name] = self._values[j]
            out[f"{name}__status"] = [s.value for s in self._status_column(j)]
            out[f"{name}__version"] = [self._layout.versions[j]] * n
            out[f"{name}__commit"] = self.commits(name)
        return out

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON document the HTTP server returns (values JSON-ready)."""
        results = []
        layout = self._layout
        dtypes = layout.dtypes or [""] * len(self.names)
        per_group: dict[int, tuple[list[Any], list[Any]]] = {}
        for j, name in enumerate(self.names):
            values = self._values[j]
            if _converted(dtypes[j]):
                values = _jsonable(values, dtypes[j])
            elif dtypes[j] in FLOAT_DTYPES:
                values = json_floats(values)
            g = layout.group[j]
            prov = per_group.get(g)
            if prov is None:
                recs = self._records[g]
                prov = per_group[g] = ([None if r is None else r[1] for r in recs],
                                       [None if r is None else r[0] for r in recs])
            results.append({
                "name": name,
                "reference": layout.references[j],
                "version": layout.versions[j],
                "values": values,
                "statuses": self._status_column(j),  # a str enum: serialised as its value
                "commits": prov[0],
                "event_timestamps": prov[1],
            })
        return {
            "entities": dict(zip(self.join_keys, self.entity_columns, strict=False)),
            "features": results,
        }

    def to_arrow(self, *, metadata: bool = False) -> Any:
        """A pyarrow Table with the declared feature types."""
        import pyarrow as pa

        from featureledger.model.types import to_arrow

        cols: dict[str, Any] = {}
        for k, col in zip(self.join_keys, self.entity_columns, strict=False):
            cols[k] = pa.array(col)
        for j, name in enumerate(self.names):
            dtype = self.dtypes.get(name)
            cols[name] = pa.array(self._values[j],
                                  type=to_arrow(dtype) if dtype else None)
            if metadata:
                cols[f"{name}__status"] = pa.array([s.value for s in self._status_column(j)])
                cols[f"{name}__version"] = pa.array([self._layout.versions[j]] * len(self),
                                                    type=pa.int32())
                cols[f"{name}__commit"] = pa.array(self.commits(name), type=pa.string())
        return pa.table(cols)

    def to_pandas(self, *, metadata: bool = False) -> Any:
        """The vectors as a pandas DataFrame with Arrow-backed dtypes (declared types
        kept; with ``metadata`` also status, version and commit columns)."""
        from featureledger.frames import to_pandas

        return to_pandas(self.to_arrow(metadata=metadata))

    def to_polars(self, *, metadata: bool = False) -> Any:
        """The vectors as a Polars DataFrame (needs the ``polars`` extra)."""
        from featureledger.frames import to_polars

        return to_polars(self.to_arrow(metadata=metadata), "OnlineResponse.to_polars")

    def to_numpy(self, dtype: Any = None) -> Any:
        """A 2-D array: one row per entity row, one column per feature (nulls as NaN or None).

        ``dtype=float`` gives a float matrix, ready for a model; the default is the common
        numpy type of the columns.
        """
        import numpy as np

        if dtype is None:
            numeric = all(self.dtypes.get(n, "") in ("int32", "int64", "float32", "float64",
                                                     "bool") for n in self.names)
            dtype = np.float64 if numeric else object
        if np.dtype(dtype) == np.dtype(object):
            return np.array(self._values, dtype=object).T.reshape(len(self), len(self.names))
        mat = np.empty((len(self), len(self.names)), dtype=dtype)
        for j, col in enumerate(self._values):
            mat[:, j] = [np.nan if v is None else v for v in col]
        return mat


@functools.lru_cache(maxsize=256)
def _converted(dtype: str) -> bool:
    """Whether values of ``dtype`` need converting for JSON (bytes, times, lists of them)."""
    from featureledger.online.codec import dtype_codec

    return dtype_codec(dtype) is not None


# JSON has no NaN or infinity: the HTTP API writes them as text, as protobuf's JSON
# mapping does for float and double ("NaN", "Infinity", "-Infinity"), so a NaN is never
# confused with a null (which has its own status)
NAN_TEXT, INF_TEXT, NEG_INF_TEXT = "NaN", "Infinity", "-Infinity"


def float_text(v: float) -> str:
    return NAN_TEXT if v != v else (INF_TEXT if v > 0 else NEG_INF_TEXT)


def json_floats(values: list[Any]) -> list[Any]:
    """Float values JSON can hold: NaN and infinities as text (the list itself when every
    value is finite or null).

    >>> json_floats([1.5, None, float("nan"), float("-inf")])
    [1.5, None, 'NaN', '-Infinity']
    """
    isfinite = math.isfinite
    if all(v is None or isfinite(v) for v in values):
        return values
    return [v if v is None or isfinite(v) else float_text(v) for v in values]


def _jsonable(values: list[Any], dtype: str) -> list[Any]:
    import base64
    import datetime as dt

    def conv(v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, float) and not math.isfinite(v):
            return float_text(v)
        if isinstance(v, (bytes, bytearray)):
            return base64.b64encode(v).decode()
        if isinstance(v, (dt.datetime, dt.date)):
            return v.isoformat()
        return v

    return [conv(v) for v in values]
