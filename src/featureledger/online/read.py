"""The online read path: a planned request in, an ``OnlineResponse`` out.

A read costs, per view version in the plan: encoding the entity keys (shared by views
with the same join keys), one store query for the keys (``read_rows``: a prepared
primary-key ``SELECT`` or one ``IN`` list on SQLite, one ``MGET`` for every view on
Redis), one JSON parse for all the payloads, a TTL check on the smallest event time, and
the transposition of the records into feature columns. Statuses, commits and event times
are not built per value here: the response keeps the records and one small code per row
(or none at all when every record was found within its TTL) and derives them when asked.

With the in-process cache on, a cached key costs a dict lookup; the cache's validity was
checked once for the request (``ChangeWatcher.check``) before the read started.
"""

from __future__ import annotations

from time import time_ns as _time_ns
from typing import TYPE_CHECKING, Any

from orjson import loads as _loads

from featureledger.errors import RetrievalError
from featureledger.model.timeutil import now_us
from featureledger.online.response import (
    FOUND,
    NOT_FOUND_CODE,
    OUTSIDE_TTL_CODE,
    OnlineResponse,
)

if TYPE_CHECKING:
    from featureledger.online.cache import OnlineCache
    from featureledger.online.plan import ReadPlan, ViewGroup
    from featureledger.online.stores import RowReader

_ABSENT = object()  # "not in the cache" (a cached None means "no record for this key")
_NONE = object()  # placeholder for the values of a cached "no record"
_ONE_VIEW_FOUND: list[list[int] | None] = [None]  # codes of a one-view read, all found


def entity_input(plan: ReadPlan, entity_rows: Any) -> tuple[list[list[str]], Any, Any]:
    """Encoded keys per key slot of ``plan``, and the entity rows or columns as given."""
    codecs = plan.key_codecs or []
    if isinstance(entity_rows, list):
        if entity_rows and not isinstance(entity_rows[0], dict):
            raise RetrievalError(
                "entity_rows must be a list of dicts such as [{'driver_id': 1001}] or a "
                f"dict of columns; got a list of {type(entity_rows[0]).__name__}"
            )
        return [c.encode_rows(entity_rows) for c in codecs], entity_rows, None
    if isinstance(entity_rows, dict):
        cols = {k: (v if isinstance(v, list) else list(v) if isinstance(v, tuple) else [v])
                for k, v in entity_rows.items()}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise RetrievalError(
                f"entity columns have different lengths {sorted(lengths)}; give every join "
                "key the same number of values"
            )
        keysets = []
        for codec in codecs:
            missing = [n for n in codec.names if n not in cols]
            if missing:
                raise RetrievalError(
                    f"the entity columns {sorted(cols)} lack join key(s) "
                    f"{', '.join(missing)}; pass a column for each of "
                    f"{', '.join(codec.names)}"
                )
            keysets.append(codec.encode_columns([cols[n] for n in codec.names]))
        return keysets, None, [cols.get(k) for k in plan.join_keys]
    from featureledger.frames import FrameError, read_frame

    try:
        frame = read_frame(entity_rows, scalars=False)
    except FrameError as exc:
        raise RetrievalError(f"the entity rows cannot be read: {exc}") from None
    if frame is not None:
        return entity_input(plan, frame.table.to_pylist())
    raise RetrievalError(
        "entity_rows must be a list of dicts such as [{'driver_id': 1001}], a dict of "
        f"columns, or a DataFrame; got {type(entity_rows).__name__}"
    )


def read_online(store: RowReader | None, cache: OnlineCache | None, plan: ReadPlan,
                entity_rows: Any, fill_defaults: bool = False) -> OnlineResponse | None:
    """Read ``plan``'s features for ``entity_rows`` (see the module docstring).

    Without a ``store`` the read is answered from ``cache`` alone, or not at all: None
    when any key is not cached (a read that never blocks, for an event loop).
    """
    groups = plan.groups
    if entity_rows.__class__ is dict and len(groups) == 1:
        # one row given as columns (what the HTTP server receives): read as a row
        entity_rows = _one_row(entity_rows, plan.join_keys) or entity_rows
    if len(groups) == 1 and entity_rows.__class__ is list and entity_rows \
            and entity_rows[0].__class__ is dict:
        # one view and a list of dicts, the common shape: the same steps as below with
        # the generality taken out; anything unusual (a key not found, a record outside
        # its TTL) continues on the general path with what was already read
        g = groups[0]
        if cache is not None and len(entity_rows) == 1:
            # one key, cached: a dict lookup and a TTL comparison
            table = cache.table(g.table)
            rec: Any = _ABSENT if table is None else table.get(
                g.keys.encode_row(entity_rows[0]), _ABSENT)
            if rec is not _ABSENT and rec is not None and (
                    g.ttl_us is None or rec[0] >= _time_ns() // 1000 - g.ttl_us):
                cache.hits += 1
                row = rec[2]
                return OnlineResponse(plan.layout, [[row[fi]] for fi in g.positions],  # type: ignore[arg-type]
                                      _ONE_VIEW_FOUND, [[rec]], entity_rows=entity_rows)
        elif store is not None and len(entity_rows) == 1:
            # one key: one primary-key lookup, one payload to parse
            rec = store.read_row(g.table, g.keys.encode_row(entity_rows[0]))
            ttl = g.ttl_us
            if rec is not None and (ttl is None or rec[0] >= _time_ns() // 1000 - ttl):
                payload = rec[2]
                row = (_loads(payload) if payload[:1] != b"!" and not g.codec.decoders
                       else g.codec.decode(payload))
                return OnlineResponse(plan.layout, [[row[fi]] for fi in g.positions],  # type: ignore[arg-type]
                                      _ONE_VIEW_FOUND, [[rec]], entity_rows=entity_rows)
            return _assemble(plan, [[rec]], [_decode(g, [rec])], fill_defaults, entity_rows,
                             None)
        keys = g.keys.encode_rows(entity_rows)
        recs: Any = None
        vals: list[Any] = []
        if cache is not None:
            table = cache.table(g.table)
            if table is not None:
                get = table.get
                recs = [get(k, _ABSENT) for k in keys]
                if _ABSENT in recs:
                    if store is None:
                        return None
                    recs = None
                else:
                    cache.hits += len(keys)
                    vals = [_NONE if r is None else r[2] for r in recs]
            elif store is None:
                return None
        else:
            recs = store.read_rows([(g.table, keys)])[0]  # type: ignore[union-attr]
            vals = _decode(g, recs)
        if recs is not None:
            ttl = g.ttl_us
            if None not in recs and (ttl is None or (
                    recs[0][0] if len(recs) == 1 else min([r[0] for r in recs]))
                    >= _time_ns() // 1000 - ttl):
                positions = g.positions
                if len(vals) == 1:
                    row = vals[0]
                    values = [[row[fi]] for fi in positions]
                else:
                    cols = list(zip(*vals, strict=True))
                    values = [list(cols[fi]) for fi in positions]
                return OnlineResponse(plan.layout, values, _ONE_VIEW_FOUND, [recs],  # type: ignore[arg-type]
                                      entity_rows=entity_rows)
            return _assemble(plan, [recs], [[g.none_row if v is _NONE else v for v in vals]],
                             fill_defaults, entity_rows, None)
    keysets, rows, columns = entity_input(plan, entity_rows)
    if cache is None:
        if store is None:
            return None
        fetched = store.read_rows([(g.table, keysets[g.key_slot]) for g in groups])
        decoded = [_decode(g, recs) for g, recs in zip(groups, fetched, strict=True)]
    else:
        got = _cached(store, cache, groups, keysets)
        if got is None:
            return None
        fetched, decoded = got
    return _assemble(plan, fetched, decoded, fill_defaults, rows, columns)


def _one_row(columns: dict[str, Any], join_keys: list[str]) -> list[dict[str, Any]] | None:
    """``[{key: value}]`` for columns of one value each that hold every join key."""
    row = {}
    for k, v in columns.items():
        if v.__class__ is not list or len(v) != 1:
            return None
        row[k] = v[0]
    for k in join_keys:
        if k not in row:
            return None
    return [row]


def _assemble(plan: ReadPlan, fetched: list[list[Any]], decoded: list[list[Any]],
              fill_defaults: bool, rows: Any, columns: Any) -> OnlineResponse:
    """Statuses (as codes), TTL and columns from the records read for each group."""
    groups = plan.groups
    values: list[Any] = [None] * len(plan.names)
    codes: list[list[int] | None] = []
    now = None
    for g, recs, vals in zip(groups, fetched, decoded, strict=True):
        code = None if None not in recs else [NOT_FOUND_CODE if r is None else FOUND
                                              for r in recs]
        ttl = g.ttl_us
        if ttl is not None and vals:
            if now is None:
                now = now_us()
            cutoff = now - ttl
            times = [r[0] for r in recs if r is not None]
            if times and min(times) < cutoff:
                # some records are too old: their values are not served
                if code is None:
                    code = [FOUND] * len(recs)
                none_row = g.none_row
                for i, r in enumerate(recs):
                    if r is not None and r[0] < cutoff:
                        code[i] = OUTSIDE_TTL_CODE
                        vals[i] = none_row
        codes.append(code)
        if len(vals) == 1:
            row = vals[0]
            for out, fi in g.columns:
                values[out] = [row[fi]]
        elif vals:
            cols = list(zip(*vals, strict=True))
            for out, fi in g.columns:
                values[out] = list(cols[fi])
        else:
            for out, _fi in g.columns:
                values[out] = []
        if fill_defaults and code is not None and g.defaults:
            for out, default in g.defaults:
                values[out] = [default if c != FOUND else v
                               for v, c in zip(values[out], code, strict=True)]
    return OnlineResponse(plan.layout, values, codes, fetched,  # type: ignore[arg-type]
                          entity_rows=rows, entity_columns=columns)


def _decode(g: ViewGroup, recs: list[Any]) -> list[Any]:
    """The values of each record (the group's none row where there is no record)."""
    if None not in recs:
        return g.codec.decode_many([r[2] for r in recs])
    at = [i for i, r in enumerate(recs) if r is not None]
    out: list[Any] = [g.none_row] * len(recs)
    for i, v in zip(at, g.codec.decode_many([recs[i][2] for i in at]), strict=True):
        out[i] = v
    return out


def _cached(store: RowReader | None, cache: OnlineCache, groups: list[ViewGroup],
            keysets: list[list[str]]) -> tuple[list[list[Any]], list[list[Any]]] | None:
    """Records ``(event_ts, commit_id, values)`` per group and key, from the cache where
    present; the rest with one store read, then cached (unless the table changed).
    Without a store: None unless every key is cached."""
    fetched: list[list[Any]] = []
    todo: list[tuple[int, list[int], Any]] = []
    looked = missed = 0
    for gi, g in enumerate(groups):
        keys = keysets[g.key_slot]
        cached = cache.table(g.table)
        if cached is None:
            found: list[Any] = [_ABSENT] * len(keys)
        else:
            get = cached.get
            found = [get(k, _ABSENT) for k in keys]
        fetched.append(found)
        looked += len(keys)
        if _ABSENT in found:
            miss = [i for i, f in enumerate(found) if f is _ABSENT]
            todo.append((gi, miss, cache.epoch(g.table)))
            missed += len(miss)
    if todo and store is None:
        return None
    cache.hits += looked - missed
    cache.misses += missed
    if todo:
        reqs = [(groups[gi].table, [keysets[groups[gi].key_slot][i] for i in miss])
                for gi, miss, _e in todo]
        for (gi, miss, epoch), (table, keys), recs in zip(todo, reqs,
                                                          store.read_rows(reqs),  # type: ignore[union-attr]
                                                          strict=True):
            g = groups[gi]
            vals = _decode(g, recs)
            got = [None if r is None else (r[0], r[1], v)
                   for r, v in zip(recs, vals, strict=True)]
            found = fetched[gi]
            for i, rec in zip(miss, got, strict=True):
                found[i] = rec
            cache.put_many(table, epoch, zip(keys, got, strict=True))
    decoded = []
    for g, found in zip(groups, fetched, strict=True):
        none_row = g.none_row
        decoded.append([none_row if r is None else r[2] for r in found])
    return fetched, decoded
