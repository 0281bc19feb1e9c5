"""Feature vectors as returned by ``get_online_features``.

Values are kept in columns (one list per feature) with, for every value, a status, and per
view the commit and event time of the record each value came from; the view version is
the same for every value of a feature (references are pinned when they are planned).

Statuses:

* ``PRESENT`` — a value was found, within the view's TTL;
* ``NULL`` — a record was found and the stored value is null;
* ``NOT_FOUND`` — no record for the key in that view version;
* ``OUTSIDE_TTL`` — the record is older than the view's TTL; its value is not served
  (None, or the field's default when the caller asked for ``fill_defaults``).

>>> r = OnlineResponse(["driver_id"], [[1, 2]], ["trips"], ["stats@1:trips"], [1],
...                    [[5, None]], [[PRESENT, NOT_FOUND]], [0], [["cmt_a", None]],
...                    [[1_700_000_000_000_000, None]])
>>> r.to_dict()
{'driver_id': [1, 2], 'trips': [5, None]}
>>> r.statuses["trips"]
[<FeatureStatus.PRESENT: 'PRESENT'>, <FeatureStatus.NOT_FOUND: 'NOT_FOUND'>]
"""

from __future__ import annotations

import enum
from typing import Any


class FeatureStatus(enum.StrEnum):
    """The status of one served value."""

    PRESENT = "PRESENT"
    NULL = "NULL"
    NOT_FOUND = "NOT_FOUND"
    OUTSIDE_TTL = "OUTSIDE_TTL"

    def __str__(self) -> str:
        return self.value


PRESENT = FeatureStatus.PRESENT
NULL = FeatureStatus.NULL
NOT_FOUND = FeatureStatus.NOT_FOUND
OUTSIDE_TTL = FeatureStatus.OUTSIDE_TTL


class OnlineResponse:
    """Feature values for a list of entity rows, with per-value status and provenance.

    ``values[name]``, ``statuses[name]``, ``commits(name)`` and ``event_timestamps(name)``
    are lists aligned with the entity rows; ``versions[name]`` is the view version the
    feature was read from and ``references[name]`` its pinned reference.
    """

    __slots__ = ("_commits", "_dicts", "_dtypes", "_event_ts", "_group", "_references",
                 "_statuses", "_values", "_versions", "entity_columns", "join_keys", "names")

    def __init__(self, join_keys: list[str], entity_columns: list[list[Any]],
                 names: list[str], references: list[str], versions: list[int],
                 values: list[list[Any]], statuses: list[list[FeatureStatus]],
                 group: list[int], commits: list[list[str | None]],
                 event_ts: list[list[int | None]], dtypes: list[str] | None = None) -> None:
        # kept as lists; the name-keyed dicts are built on first access (the hot path
        # builds responses that are often only serialised)
        self.join_keys = join_keys
        self.entity_columns = entity_columns
        self.names = names
        self._references = references
        self._versions = versions
        self._values = values
        self._statuses = statuses
        self._group = group
        self._commits = commits
        self._event_ts = event_ts
        self._dtypes = dtypes
        self._dicts: dict[str, dict[str, Any]] = {}

    def _by_name(self, key: str, items: list[Any] | None) -> dict[str, Any]:
        d = self._dicts.get(key)
        if d is None:
            d = self._dicts[key] = dict(zip(self.names, items or [], strict=False))
        return d

    @property
    def values(self) -> dict[str, list[Any]]:
        """Feature name -> values, aligned with the entity rows."""
        return self._by_name("values", self._values)

    @property
    def statuses(self) -> dict[str, list[FeatureStatus]]:
        """Feature name -> status of each value."""
        return self._by_name("statuses", self._statuses)

    @property
    def versions(self) -> dict[str, int]:
        """Feature name -> the view version it was read from."""
        return self._by_name("versions", self._versions)

    @property
    def references(self) -> dict[str, str]:
        """Feature name -> pinned reference (``view@version:feature``)."""
        return self._by_name("references", self._references)

    @property
    def dtypes(self) -> dict[str, str]:
        return self._by_name("dtypes", self._dtypes)

    def __len__(self) -> int:
        return len(self.entity_columns[0]) if self.entity_columns else 0

    def __repr__(self) -> str:
        return f"<OnlineResponse {len(self)} row(s) x {len(self.names)} feature(s)>"

    def commits(self, name: str) -> list[str | None]:
        """The commit each value of ``name`` came from (None when not found)."""
        return self._commits[self._group[self.names.index(name)]]

    def event_timestamps(self, name: str) -> list[int | None]:
        """Event time (µs since the epoch, UTC) of the record behind each value."""
        return self._event_ts[self._group[self.names.index(name)]]

    def to_dict(self, *, metadata: bool = False) -> dict[str, list[Any]]:
        """Columns: join keys, then features; with ``metadata`` also
        ``<name>__status``, ``<name>__version`` and ``<name>__commit`` per value."""
        out: dict[str, list[Any]] = dict(zip(self.join_keys, self.entity_columns, strict=False))
        n = len(self)
        for name in self.names:
            out[name] = self.values[name]
            if metadata:
                out[f"{name}__status"] = [s.value for s in self.statuses[name]]
                out[f"{name}__version"] = [self.versions[name]] * n
                out[f"{name}__commit"] = self.commits(name)
        return out

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON document the HTTP server returns (values JSON-ready)."""
        from featureledger.online.codec import dtype_codec

        results = []
        dtypes = self._dtypes or [""] * len(self.names)
        for j, name in enumerate(self.names):
            values = self._values[j]
            if dtype_codec(dtypes[j]) is not None:
                values = _jsonable(values, dtypes[j])
            g = self._group[j]
            results.append({
                "name": name,
                "reference": self._references[j],
                "version": self._versions[j],
                "values": values,
                "statuses": self._statuses[j],  # a str enum: serialised as its value
                "commits": self._commits[g],
                "event_timestamps": self._event_ts[g],
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
        for name in self.names:
            dtype = self.dtypes.get(name)
            cols[name] = pa.array(self.values[name],
                                  type=to_arrow(dtype) if dtype else None)
            if metadata:
                cols[f"{name}__status"] = pa.array([s.value for s in self.statuses[name]])
                cols[f"{name}__version"] = pa.array([self.versions[name]] * len(self),
                                                    type=pa.int32())
                cols[f"{name}__commit"] = pa.array(self.commits(name), type=pa.string())
        return pa.table(cols)

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
            return np.array([self.values[n] for n in self.names], dtype=object).T.reshape(
                len(self), len(self.names))
        mat = np.empty((len(self), len(self.names)), dtype=dtype)
        for j, n in enumerate(self.names):
            mat[:, j] = [np.nan if v is None else v for v in self.values[n]]
        return mat


def _jsonable(values: list[Any], dtype: str) -> list[Any]:
    import base64
    import datetime as dt

    def conv(v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, (bytes, bytearray)):
            return base64.b64encode(v).decode()
        if isinstance(v, (dt.datetime, dt.date)):
            return v.isoformat()
        return v

    return [conv(v) for v in values]
