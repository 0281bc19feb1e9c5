"""A real ``featureledger serve`` killed or stopped while pushes arrive over HTTP.

Each push ``i`` carries two rows: its own key ``i`` and a shared key ``1000 + i % 7``, both
at event time ``T0 + i s``, with ``trips`` ``10 i`` and ``10 i + 1``. Four clients push at
once; a push counts as acknowledged when its ``200`` arrived. The checks read the values
back independently of the push code: offline with point-in-time retrieval at each row's own
key and time, the stored Parquet rows for doubles, online over HTTP against the offline
latest value per key, and every cited commit in the registry.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featureledger import Entity, FeatureStore, FeatureView, Field

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
SHARED = 7

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _repo(tmp_path: Path, serving: str) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "featureledger.yaml").write_text(f"project: served\nserving: {serving}\n")
    driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    with FeatureStore(root) as store:
        store.apply([driver, FeatureView(name="trips", entities=[driver],
                                         fields=[Field(name="trips", dtype="int64")])])
    return root


class Server:
    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "FEATURELEDGER_USER": "tester"}
        env.pop("FEATURELEDGER_CRASH_AT", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "featureledger", "serve", "--port", str(self.port)],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out, err = self.proc.communicate(timeout=10)
                raise AssertionError(f"server did not start:\n{out}\n{err}")
            time.sleep(0.1)

    def stop(self, sig: int) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=90)
        return self.proc.returncode, out, err


class Pushers:
    """Four clients pushing distinct pushes until told to stop or the server is gone."""

    def __init__(self, url: str, workers: int = 4) -> None:
        self.url = url
        self.acked: dict[int, str] = {}  # push number -> commit id it was answered with
        self.sent: set[int] = set()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(w, workers))
                         for w in range(workers)]
        for t in self._threads:
            t.start()

    def _run(self, w: int, workers: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = w
            while not self._stop.is_set():
                rows = [{"driver_id": k, "event_timestamp": (T0 + dt.timedelta(seconds=i))
                         .isoformat(), "trips": 10 * i + j}
                        for j, k in enumerate((i, 1000 + i % SHARED))]
                self.sent.add(i)
                try:
                    r = client.post("/push/trips", json={"rows": rows})
                except httpx.TransportError:
                    return  # the server is gone (killed or stopped)
                if r.status_code != 200:
                    self.errors.append(f"push {i}: {r.status_code} {r.text}")
                    return
                self.acked[i] = r.json()["commit_id"]
                i += workers

    def wait_for(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < n:
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"only {len(self.acked)} pushes answered"
            time.sleep(0.02)

    def join(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        assert not self.errors, self.errors


def _stored_rows(store: FeatureStore) -> pa.Table:
    files = [store.ctx.offline_store.path(f) for c in store.commits("trips") for f in c.files]
    return pa.concat_tables([pq.read_table(f) for f in files])


def _segments(root: Path) -> list[Path]:
    return sorted((root / ".featureledger" / "push-log").glob("*/*/v*/*.wal"))


def check_everything_acknowledged(root: Path, url: str, acked: dict[int, str],
                                  sent: set[int]) -> None:
    with FeatureStore(root) as store:
        commits = {c.commit_id: c for c in store.commits("trips")}
        assert all(c.status == "committed" for c in commits.values()), commits
        # every answer named a commit that now holds its rows
        assert set(acked.values()) <= set(commits)
        rows = _stored_rows(store)
        assert rows.num_rows == sum(c.row_count for c in commits.values())
        stored = list(zip(rows.column("driver_id").to_pylist(),
                          rows.column("event_timestamp").to_pylist(), strict=True))
        assert len(stored) == len(set(stored)), "a pushed row was stored twice"
        at = {T0 + dt.timedelta(seconds=i): i for i in sent}
        assert {at[ts] for _, ts in stored} <= sent, "a row nobody pushed"
        # offline: every acknowledged row at its own key and event time, as pushed
        nums = sorted(acked)
        entity = {"driver_id": nums + [1000 + i % SHARED for i in nums],
                  "event_timestamp": [T0 + dt.timedelta(seconds=i) for i in nums] * 2}
        got = store.get_historical_features(entity, ["trips:trips"]).to_arrow()
        assert got.column("trips").to_pylist() == [10 * i for i in nums] + [
            10 * i + 1 for i in nums]
        # online, over HTTP: the newest stored value of every key, from a known commit
        keys = sorted({k for k, _ in stored})
        latest = store.get_historical_features(
            {"driver_id": keys, "event_timestamp": [T0 + dt.timedelta(days=1)] * len(keys)},
            ["trips:trips"]).to_arrow().column("trips").to_pylist()
        online = httpx.post(f"{url}/features/online", json={
            "features": ["trips:trips"], "entities": {"driver_id": keys}}, timeout=30).json()
        feature = online["features"][0]
        assert feature["values"] == latest
        assert set(feature["commits"]) <= {c for c, r in commits.items()
                                           if r.status == "committed"}


def test_sigkill_after_acknowledged_pushes(tmp_path):
    root = _repo(tmp_path, "{push_flush_rows: 60, push_flush_interval_s: 0.5}")
    server = Server(root)
    pushers = Pushers(server.url)
    try:
        pushers.wait_for(40)
        # between the answer and the landing the cited commit is in the registry already
        cid = httpx.post(f"{server.url}/features/online", json={
            "features": ["trips:trips"], "entities": {"driver_id": [max(pushers.acked)]}},
            timeout=30).json()["features"][0]["commits"][0]
        with FeatureStore(root) as store:
            assert store.get_commit(cid).status in ("pending", "committed")
        pushers.wait_for(150)
        # kill while a pushed commit is still pending (on a loaded machine the pushers can
        # stall long enough for every commit to land first: wait for one then)
        # the kill follows the sighting at once: leaving the store first gave the flush
        # (every 0.5 s) time to land the commit on a loaded machine
        deadline = time.monotonic() + 60
        with FeatureStore(root) as store:
            while not store.commits("trips", status="pending"):
                assert time.monotonic() < deadline, "no push stayed pending for a minute"
                time.sleep(0.005)
            server.proc.send_signal(signal.SIGKILL)
        code, _, err = server.stop(signal.SIGKILL)  # while pushes are in flight
        assert code == -signal.SIGKILL, err
    finally:
        pushers.join()
        if server.proc.poll() is None:
            server.proc.kill()
    acked, sent = dict(pushers.acked), set(pushers.sent)
    with FeatureStore(root) as store:  # the registry as the kill left it
        assert store.commits("trips", status="pending"), "nothing was left to replay"
    assert _segments(root)
    again = Server(root)  # replays the push log at start-up
    try:
        check_everything_acknowledged(root, again.url, acked, sent)
        assert _segments(root) == []
        with FeatureStore(root) as store:
            assert store.commits("trips", status="pending") == []
    finally:
        code, out, err = again.stop(signal.SIGTERM)
    assert code == 0, err
    assert "push log: landed" in out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_drains(tmp_path, sig):
    # nothing lands on its own while the server runs: only the drain can land it
    root = _repo(tmp_path, "{push_flush_rows: 100000, push_flush_interval_s: 3600}")
    server = Server(root)
    pushers = Pushers(server.url)
    try:
        pushers.wait_for(60)
        code, out, err = server.stop(sig)  # while pushes are in flight
    finally:
        pushers.join()
        if server.proc.poll() is None:
            server.proc.kill()
    assert code == 0, err
    assert "every push landed" in out
    # landed by the drain itself: no pending commit, no log left for a replay
    with FeatureStore(root) as store:
        assert store.commits("trips", status="pending") == []
        assert len(store.commits("trips")) == 1
    assert _segments(root) == []
    again = Server(root)
    try:
        check_everything_acknowledged(root, again.url, dict(pushers.acked), set(pushers.sent))
    finally:
        again.stop(signal.SIGTERM)
