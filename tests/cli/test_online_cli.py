"""The online commands and the server, run as a user would: real processes, real files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from helpers import run_cli as fl


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e
@pytest.mark.slow
def test_materialize_get_and_serve(tmp_path: Path) -> None:
    fl("init", "demo", cwd=tmp_path)
    repo = tmp_path / "demo"
    fl("apply", cwd=repo)
    fl("ingest", "driver_stats", "data/driver_stats.parquet", cwd=repo)
    done = json.loads(fl("materialize", "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z",
                         "--json", cwd=repo).stdout)
    assert [v["view"] for v in done["views"]] == ["driver_stats@1"]
    assert done["views"][0]["written"] == done["views"][0]["keys"] > 0
    again = json.loads(fl("materialize-incremental", "2100-01-01T00:00:00Z", "--json",
                          cwd=repo).stdout)
    assert sum(v["written"] for v in again["views"]) == 0
    got = json.loads(fl("online", "get", "-f", "driver_stats:conv_rate",
                        "-e", "driver_id=1001", "-e", "driver_id=1", "--json", cwd=repo).stdout)
    conv = got["features"][0]
    assert conv["statuses"][1] == "NOT_FOUND"
    assert conv["statuses"][0] in ("PRESENT", "OUTSIDE_TTL")
    assert conv["commits"][0].startswith("cmt_")
    table = fl("online", "get", "-f", "driver_stats:conv_rate", "-e", "driver_id=1",
               cwd=repo).stdout
    assert "NOT_FOUND" in table

    refused = fl("serve", "--host", "0.0.0.0", cwd=repo, code=None)
    assert refused.returncode == 2 and "without authentication" in refused.stderr

    port = _free_port()
    env = {**os.environ, "FEATURELEDGER_USER": "tester"}
    server = subprocess.Popen([sys.executable, "-m", "featureledger", "serve", "--port",
                               str(port)], cwd=repo, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            assert server.poll() is None, server.stderr.read().decode()
            time.sleep(0.2)
        r = httpx.post(f"{url}/features/online", json={
            "features": ["driver_stats:conv_rate"], "entities": {"driver_id": [1001, 1]}})
        assert r.status_code == 200
        assert r.json()["features"][0]["values"] == conv["values"]
        assert r.json()["features"][0]["statuses"] == conv["statuses"]
        assert "featureledger_request_seconds" in httpx.get(f"{url}/metrics").text
    finally:
        server.terminate()
        server.wait(timeout=10)
