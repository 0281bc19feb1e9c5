"""The fast route under an access policy: hashed tokens (a token seen for the first time
is verified on a thread, later ones from memory), per-principal decisions (403 audited),
the cache on and off; every answer the same as the normal route's."""

from __future__ import annotations

import itertools

import orjson
import pytest

from governance.access_demo import CLASSES, PRINCIPALS, TOKENS, expected, make_repo
from server.harness import post_request
from server.test_fastpath import Served, exchange


# poll_interval_s 0: the change check is due on every read, so every read is on the
# pool; 60: reads of plans already checked for the principal are answered on the event
# loop (from the cache, or read there: server/inline.py)
@pytest.mark.parametrize(("cache", "poll_interval_s"),
                         [(False, 0), (True, 0), (False, 60), (True, 60)])
def test_policy_decisions_are_the_same(tmp_path, cache, poll_interval_s):
    store = make_repo(tmp_path / "repo", cache=cache, poll_interval_s=poll_interval_s)
    fast, normal = Served(store, fast=True), Served(store, fast=False)
    try:
        for _round, who, cls in itertools.product(range(2), PRINCIPALS, CLASSES):
            view, feature = CLASSES[cls]
            raw = post_request("/features/online", orjson.dumps(
                {"features": [f"{view}:{feature}"], "entities": {"rider_id": [1]}}),
                token=TOKENS.get(who, "token-never-issued-99"))
            taken = fast.fast_taken
            got, want = exchange(fast, raw), exchange(normal, raw)
            assert got == want, (who, cls)
            assert fast.fast_taken == taken + 1
            if who == "mallory":
                assert got[0] == 401
            else:
                assert (got[0] == 200) == expected(who, "read_online", cls), (who, cls, got)
                assert got[0] in (200, 403)
        inline = fast.app.state.serving.inline
        assert (inline.answered > 0) == (poll_interval_s > 0)
    finally:
        fast.stop()
        normal.stop()
        store.close()
