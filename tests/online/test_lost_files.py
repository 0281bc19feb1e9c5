"""A commit file lost under a served view: materialization names it, quarantining the
commit repairs the online table (on every online backend), restoring brings it back."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from featureledger.errors import CommitFileError

FEATS = ["driver_stats:trips"]


def ingest(store, h, ids: list[int], trips: list[int], hours: float):
    frame = pd.DataFrame({"driver_id": ids, "event_timestamp": [h.ts(hours)] * len(ids),
                          "trips": trips})
    return store.ingest("driver_stats", frame).commit


def served(store) -> dict[str, list]:
    r = store.get_online_features(FEATS, [{"driver_id": k} for k in (1, 2, 3)])
    return {"trips": r.to_dict()["trips"], "commit": r.to_dict(metadata=True)["trips__commit"]}


def test_quarantine_of_a_lost_commit_rebuilds_the_table(store, make_store, h):
    keep = ingest(store, h, [1, 2], [10, 20], hours=1)
    lost = ingest(store, h, [2, 3], [21, 31], hours=2)  # newer: serves keys 2 and 3
    store.materialize(end=h.ts(5))
    assert served(store) == {"trips": [10, 21, 31],
                             "commit": [keep.commit_id, lost.commit_id, lost.commit_id]}
    folder = store.ctx.offline_store.path(lost.files[0]).parent
    backup = folder.with_name("backup")
    shutil.copytree(folder, backup)
    shutil.rmtree(folder)

    with pytest.raises(CommitFileError) as info:
        store.materialize(end=h.ts(5))
    assert (info.value.commit_id, info.value.path) == (lost.commit_id, lost.files[0])
    assert f"featureledger quarantine {lost.commit_id}" in str(info.value)

    store.quarantine(lost.commit_id, "file lost")
    # another process applies the quarantine: the lost file cannot say which keys it
    # wrote, so the table is rebuilt from the commit still served
    other = make_store()
    other.materialize(end=h.ts(5))
    assert served(other) == {"trips": [10, 20, None],
                             "commit": [keep.commit_id, keep.commit_id, None]}

    shutil.copytree(backup, folder)
    other.restore(lost.commit_id, "file restored from backup")
    third = make_store()
    third.materialize(end=h.ts(5))
    assert served(third) == {"trips": [10, 21, 31],
                             "commit": [keep.commit_id, lost.commit_id, lost.commit_id]}
    assert third.reconcile(deep=True).ok
