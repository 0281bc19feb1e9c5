"""Retention applied while a reader reads: the reader answers from the commits kept.

A retrieval lists its commits, then reads their files. Retention run by another process
in between expires some of those commits and deletes their files (and, for compacted
commits, rewrites the segment the kept commits are read from and deletes the old one).
The reader must then neither fail on the deleted files (the data it asked for is there)
nor serve expired rows: it answers as if it had started after the retention, checked
against a brute-force oracle. A file lost without any change in the registry is still
reported as lost.
"""

from __future__ import annotations

import pytest

from featureledger.errors import CommitFileError
from featureledger.offline.retrieval import RetrievalService
from governance.test_retention import VIEW, entities, ingest, make_store

DRIVERS = [1, 2, 3, 4, 5, 9]


def _expected(ids: list[str], keep: int) -> dict[int, float | None]:
    """The oracle, from how the rows were made: the newest of the ``keep`` kept commits
    holding each driver wins."""
    # commit i holds driver i+1 (speed 10i+0.5) and driver 9 (speed i), all before t(1000)
    out: dict[int, float | None] = dict.fromkeys(DRIVERS)
    for i in range(len(ids) - keep, len(ids)):
        out[i + 1] = 10 * i + 0.5
        out[9] = float(i)
    return out


@pytest.mark.parametrize("compacted", [False, True])
def test_retention_between_listing_and_reading(tmp_path, registry_url, monkeypatch,
                                               compacted):
    store = make_store(tmp_path / "repo", registry_url)
    other = make_store(tmp_path / "repo", registry_url)  # another process's store
    try:
        ids = ingest(store, 5)
        if compacted:
            store.compact(VIEW)
        other.set_retention(VIEW, keep_last=3, reason="three")
        listed = RetrievalService._visible_commits
        fired: list[int] = []

        def then_retention(self, *args, **kwargs):
            out = listed(self, *args, **kwargs)
            if not fired:  # the other process expires commits right after this listing
                fired.append(len(other.apply_retention().expired))
            return out

        monkeypatch.setattr(RetrievalService, "_visible_commits", then_retention)
        ds = store.get_historical_features(entities(DRIVERS), [f"{VIEW}:speed"])
        assert fired == [2]
        got = dict(zip(ds.to_arrow().column("driver_id").to_pylist(),
                       ds.to_arrow().column("speed").to_pylist(), strict=True))
        assert got == _expected(ids, 3)
        assert set(ds.commit_ids) <= set(ids[2:])
        assert store.reproduce(ds.id).content_hash == ds.content_hash
    finally:
        other.close()
        store.close()


def test_a_window_read_meets_a_rewritten_segment(tmp_path, registry_url, monkeypatch):
    store = make_store(tmp_path / "repo", registry_url)
    other = make_store(tmp_path / "repo", registry_url)
    try:
        ids = ingest(store, 5)
        store.compact(VIEW)
        other.set_retention(VIEW, keep_last=3, reason="three")
        commits = store.registry.commits
        listed = commits.list
        fired: list[int] = []

        def then_retention(*args, **kwargs):
            out = listed(*args, **kwargs)
            if not fired:
                fired.append(len(other.apply_retention().expired))
            return out

        monkeypatch.setattr(commits, "list", then_retention)
        rows = store.get_features_in_window(VIEW, None, None)
        assert fired == [2]
        assert set(rows.column("_commit_id").to_pylist()) == set(ids[2:])
        assert sorted(zip(rows.column("driver_id").to_pylist(),
                          rows.column("speed").to_pylist(), strict=True)) == sorted(
            [(i + 1, 10 * i + 0.5) for i in range(2, 5)] + [(9, float(i)) for i in range(2, 5)])
    finally:
        other.close()
        store.close()


def test_a_file_lost_without_a_registry_change_is_still_reported(tmp_path):
    store = make_store(tmp_path / "repo")
    try:
        ids = ingest(store, 2)
        for f in store.get_commit(ids[0]).files:
            store.ctx.offline_store.path(f).unlink()
        with pytest.raises(CommitFileError, match=ids[0]):
            store.get_historical_features(entities(DRIVERS), [f"{VIEW}:speed"])
        with pytest.raises(CommitFileError, match=ids[0]):
            store.get_features_in_window(VIEW, None, None)
    finally:
        store.close()


def test_a_reproduction_raced_by_retention_says_the_commits_expired(tmp_path, registry_url,
                                                                    monkeypatch):
    from featureledger.errors import CommitExpiredError
    from featureledger.registry.commits import CommitRepository

    store = make_store(tmp_path / "repo", registry_url)
    other = make_store(tmp_path / "repo", registry_url)
    try:
        ids = ingest(store, 5)
        ds = store.get_historical_features(entities(DRIVERS), [f"{VIEW}:speed"])
        other.set_retention(VIEW, keep_last=3, reason="three")
        fetched = CommitRepository.get_many
        fired: list[int] = []

        def then_retention(self, *args, **kwargs):
            out = fetched(self, *args, **kwargs)
            if not fired and self is store.registry.commits:  # the other process
                fired.append(0)  # (its own reads pass through here too)
                fired[0] = len(other.apply_retention().expired)
            return out

        monkeypatch.setattr(CommitRepository, "get_many", then_retention)
        with pytest.raises(CommitExpiredError) as err:
            store.reproduce(ds.id)
        assert fired == [2] and set(err.value.expired) == set(ids[:2])
    finally:
        other.close()
        store.close()
