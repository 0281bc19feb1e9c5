"""A served feature store with data in it, a test client for it, and the same on a real port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from featureledger.store import FeatureStore
from server.harness import TOKEN, LiveServer, open_served_store


@pytest.fixture
def served_store(tmp_path, write_commit) -> Iterator[FeatureStore]:
    store = open_served_store(tmp_path, write_commit)
    yield store
    store.close()


@pytest.fixture
def client(served_store) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from featureledger.server.app import create_app

    with TestClient(create_app(served_store)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield c


@pytest.fixture
def live_server(tmp_path, write_commit) -> Iterator[Callable[..., LiveServer]]:
    """``live_server(server={...}, online_store={...})``: a served store on a real port."""
    started: list[LiveServer] = []

    def start(*, server: dict[str, Any] | None = None,
              online_store: dict[str, Any] | None = None) -> LiveServer:
        root = tmp_path / f"repo{len(started)}"
        root.mkdir()
        live = LiveServer(open_served_store(root, write_commit, server=server,
                                            online_store=online_store))
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()
        live.store.close()
