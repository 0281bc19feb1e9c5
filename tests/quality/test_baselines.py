"""Baseline specs resolve to the commits they name."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pyarrow as pa
import pytest

from featureledger.errors import QualityError
from featureledger.model.timeutil import from_us
from featureledger.quality.baselines import resolve


def test_every_baseline_form(store, h):
    ids = [store.ingest("stats", h.batch(i, hours=i, n=100)).commit_id for i in range(1, 6)]
    commits = {c.commit_id: c for c in store.commits("stats")}

    def got(spec: str, **kw) -> list[str]:
        return [c.commit_id for c in resolve(store.ctx, "stats", spec, **kw).commits]

    assert got("latest") == ids[-1:]
    assert got("previous") == ids and got("previous:2") == ids[-2:]
    assert got("previous:2", before=commits[ids[3]]) == ids[1:3]
    assert got(f"commits:{ids[1]}..{ids[3]}") == ids[1:4]
    assert got(f"commits:..{ids[1]}") == ids[:2]
    assert got(f"commits:{ids[4]},{ids[0]}") == [ids[4], ids[0]]
    assert got(f"commit:{ids[2]}") == [ids[2]]
    start = from_us(commits[ids[1]].commit_time).isoformat()
    end = from_us(commits[ids[3]].commit_time).isoformat()
    assert got(f"window:{start}..{end}") == ids[1:3]
    assert got(f"window:{start}..") == ids[1:]
    # a training set's commits
    entities = pa.table({"driver_id": np.arange(10, dtype=np.int64),
                         "event_timestamp": pa.array([h.T0 + dt.timedelta(hours=2.5)] * 10,
                                                     pa.timestamp("us", tz="UTC"))})
    ds = store.get_historical_features(entities, ["stats:x"])
    assert got(f"dataset:{ds.id}") == sorted(ds.commit_ids, key=ids.index)
    # quarantined commits leave "previous" but can be named
    store.quarantine(ids[4], "test")
    assert got("previous:1") == ids[3:4] and got(f"commit:{ids[4]}") == ids[4:]


@pytest.mark.parametrize("spec, message", [
    ("yesterday", "not known"), ("previous:x", "whole number"), ("previous:0", "at least 1"),
    ("commits:cmt_nope..", "not a committed commit"), ("window:soon..", "not a time"),
    ("window:2024", "window:START..END"), ("commit:", "names no commit"),
])
def test_malformed_baselines_say_what_to_write(store, h, spec, message):
    store.ingest("stats", h.batch(1, hours=1, n=50))
    with pytest.raises(QualityError, match=message):
        resolve(store.ctx, "stats", spec)


def test_drift_needs_a_baseline_with_data(store, h):
    store.ingest("stats", h.batch(1, hours=1, n=50))
    with pytest.raises(QualityError, match="holds no committed commit"):
        store.drift("stats")  # "previous" of the only commit is empty


def test_latest_and_previous_read_a_bounded_number_of_commit_rows(make_store, h,
                                                                   registry_url):
    """``previous:N`` (checked at every commit of a view with a policy) and ``latest`` ask
    the registry for N rows, not for the view's whole history; the answer equals the
    brute-force one over every commit, quarantined commits left out."""
    import sqlalchemy as sa

    store = make_store(registry=registry_url)
    ids = [store.ingest("stats", h.batch(i, hours=i, n=20)).commit_id for i in range(1, 13)]
    for cid in ids[3:5] + ids[9:10]:
        store.quarantine(cid, "test")
    every = store.commits("stats", status=None)
    by_id = {c.commit_id: c for c in every}
    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:
        if re.search(r"\bFROM commits\b", statement):
            statements.append(statement)

    engine = store.registry.db.engine
    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        for n, cut in [(1, None), (3, None), (4, ids[6]), (20, ids[11]), (2, ids[0])]:
            before = by_id[cut] if cut else None
            got = [c.commit_id for c in resolve(store.ctx, "stats", f"previous:{n}",
                                                before=before).commits]
            oracle = [c.commit_id for c in every if c.status == "committed" and (
                before is None or (c.commit_time, c.commit_id)
                < (before.commit_time, before.commit_id))][-n:]
            assert got == oracle, (n, cut)
        latest = resolve(store.ctx, "stats", "latest").commits
        assert [c.commit_id for c in latest] == [ids[-1]]
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert statements and all("LIMIT" in s.upper() for s in statements), statements
