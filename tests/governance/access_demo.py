"""A demo repository with an access policy: three classes of resources, six principals.

Resource classes (one feature each): ``plain`` (trips:km), ``pii`` (riders:name, a field
tagged pii) and ``eu`` (eu_trips:km, a view resident in region eu). The expected decisions
(:func:`expected`) are written out here by hand from the policy's text, independently of the
engine that evaluates it.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from featureledger.governance.tokens import hash_token
from featureledger.store import FeatureStore

CLASSES = {"plain": ("trips", "km"), "pii": ("riders", "name"), "eu": ("eu_trips", "km")}
ACTIONS = ("read_offline", "read_online", "write", "quarantine", "apply", "deprecate")
PRINCIPALS = ("alice", "eve", "bob", "svc", "root", "mallory")
# bearer tokens of the server tests (only their hashes go into policy.yaml)
TOKENS = {who: f"token-of-{who}-0123456789" for who in PRINCIPALS if who != "mallory"}
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

DEFINITIONS = '''
import os

from featureledger import Entity, FeatureView, Field

rider = Entity(name="rider", join_keys={"rider_id": "int64"})
trips = FeatureView(name="trips", entities=["rider"], owner="ops",
                    description=os.environ.get("DESC_trips", ""),
                    fields=[Field(name="km", dtype="float64"),
                            Field(name="fare", dtype="float64")])
riders = FeatureView(name="riders", entities=["rider"], owner="crm",
                     description=os.environ.get("DESC_riders", ""),
                     fields=[Field(name="name", dtype="string", tags={"pii": "yes"}),
                             Field(name="score", dtype="float64")])
eu_trips = FeatureView(name="eu_trips", entities=["rider"], owner="ops",
                       tags={"region": "eu"}, description=os.environ.get("DESC_eu_trips", ""),
                       fields=[Field(name="km", dtype="float64")])
'''

POLICY = '''
principals:
  alice: {roles: [analyst]}
  eve: {roles: [analyst], regions: [eu]}
  bob: {roles: [engineer], regions: [eu]}
  svc: {roles: [serving], regions: ["*"]}
  root: {roles: [admin], regions: ["*"]}
roles:
  analyst:
    - actions: [read_offline, read_online]
    - actions: ["*"]
      resources: {tag: pii}
      effect: deny
  engineer:
    - actions: [read_offline, read_online, write, apply, deprecate, quarantine]
  serving:
    - actions: [read_online]
    - actions: [read_online]
      resources: {tag: pii}
      effect: deny
    - actions: [write]
      resources: {name: trips}
  admin:
    - actions: ["*"]
'''


def expected(principal: str, action: str, cls: str) -> bool:
    """The decision the demo policy means, cell by cell."""
    reads = {"read_offline", "read_online"}
    if principal == "root":
        return True
    if principal == "bob":  # engineer, may read eu
        return True
    if principal in ("alice", "eve"):  # analyst: reads, no pii; eve may read eu
        return action in reads and cls != "pii" and (cls != "eu" or principal == "eve")
    if principal == "svc":  # serving: online reads but pii, writes to trips
        return (action == "read_online" and cls != "pii") or (action == "write"
                                                              and cls == "plain")
    return False  # mallory is not in the policy


def rows(view: str, value: float = 1.0) -> pa.Table:
    feature = {"trips": {"km": [value] * 3, "fare": [2.0, 3.0, 4.0]},
               "riders": {"name": ["ann", "ben", "cy"], "score": [0.5, 0.6, 0.7]},
               "eu_trips": {"km": [value * 2] * 3}}[view]
    return pa.table({"rider_id": pa.array([1, 2, 3], pa.int64()),
                     "event_timestamp": pa.array([T0] * 3, pa.timestamp("us", tz="UTC")),
                     **feature})


def entities() -> pa.Table:
    return pa.table({"rider_id": pa.array([1, 2, 3], pa.int64()),
                     "event_timestamp": pa.array([T0 + dt.timedelta(days=1)] * 3,
                                                 pa.timestamp("us", tz="UTC"))})


def make_repo(root: Path, *, cache: bool = False, registry: str | None = None,
              poll_interval_s: float = 0) -> FeatureStore:
    """The demo repository with data ingested and materialized, its policy applied (by
    ``root``, before which access was open). Returns a store acting as ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "featureledger.yaml").write_text(
        f"project: demo\nserving: {{cache: {str(cache).lower()}, "
        f"poll_interval_s: {poll_interval_s}}}\n"
        # the server's bound is not what these tests are about: a loaded machine must not
        # turn a slow first read (planning, compiling the policy) into a 503
        "server: {request_timeout_s: 30}\n"
        + (f"registry: '{registry}'\n" if registry else ""))
    (root / "defs.py").write_text(DEFINITIONS)
    data = root / "data"
    data.mkdir(exist_ok=True)
    for view in ("trips", "riders", "eu_trips"):
        pq.write_table(rows(view), data / f"{view}.parquet")
    pq.write_table(entities(), data / "entities.parquet")
    (root / "policy.yaml").write_text(policy_with_tokens(POLICY))
    store = FeatureStore(root, principal="root")
    store.apply(store.load_definitions())  # definitions only: access is still open
    for view in ("trips", "riders", "eu_trips"):
        store.ingest(view, rows(view))
    store.materialize(T0 - dt.timedelta(days=1), T0 + dt.timedelta(days=2))
    plan = store.apply()  # the repository's definitions and its policy.yaml
    assert [i.action for i in plan.items if i.kind == "access_policy"] == ["new"]
    return store


def policy_with_tokens(text: str) -> str:
    """``text`` with each principal's token hash added (cheap hashes, for tests)."""
    lines = []
    for line in textwrap.dedent(text).splitlines():
        who = line.strip().split(":")[0]
        if who in TOKENS and line.startswith("  ") and not line.startswith("    "):
            hashed = hash_token(TOKENS[who], iterations=1000)
            line = line.rstrip("}") + f", tokens: ['{hashed}']}}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def deny_entries(store: FeatureStore) -> list[dict]:
    """Every audit entry that records a denial, oldest first."""
    out = []
    for e in reversed(store.registry.db.audit_trail(limit=1_000_000)):
        decision = e.get("decision") or e["details"].get("decision")
        if decision == "deny":
            out.append(e)
    return out
