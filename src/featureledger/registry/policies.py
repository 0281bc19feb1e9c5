"""Access policy versions: every applied version of a project's policy, newest in force.

The registry stores a policy as canonical JSON with its sha256 (``policy_hash``); it does not
interpret it (``featureledger.governance.policy`` does). Applying writes the new version and
its audit entry in one transaction; the same policy again is a no-op. A version row is never
updated; the spec is checked against its hash on every read, so an edited row is refused
rather than enforced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from featureledger.errors import DefinitionTamperedError
from featureledger.model.hashing import canonical_json, sha256_hex
from featureledger.model.timeutil import now_us
from featureledger.registry import schema
from featureledger.registry.engine import RegistryDB


@dataclass(frozen=True)
class PolicyRecord:
    """One applied version of the access policy."""

    version: int
    policy_hash: str
    spec: dict[str, Any]
    created_at: int
    created_by: str
    reason: str | None


def policy_hash(spec: dict[str, Any]) -> str:
    """sha256 of a policy's canonical JSON."""
    return sha256_hex(canonical_json(spec))


class PolicyRepository:
    """Reads and writes access policy versions of one project."""

    def __init__(self, db: RegistryDB) -> None:
        self.db = db

    def _record(self, row: Any) -> PolicyRecord:
        spec = json.loads(row.spec)
        if policy_hash(spec) != row.policy_hash:
            raise DefinitionTamperedError(
                f"access policy version {row.version}: its stored spec no longer matches its "
                f"hash {row.policy_hash[:12]} (the row was edited); it is not enforced as it "
                "is. Apply the policy file again to write a new version",
                kind="access_policy", name="policy", version=row.version)
        return PolicyRecord(row.version, row.policy_hash, spec, row.created_at,
                            row.created_by, row.reason)

    def current(self, conn: Connection | None = None) -> PolicyRecord | None:
        """The policy in force (the newest version), or None when none was applied."""
        t = schema.access_policies
        q = sa.select(t).where(self.db.scope(t)).order_by(t.c.version.desc()).limit(1)
        if conn is not None:
            row = conn.execute(q).first()
        else:
            with self.db.read() as c:
                row = c.execute(q).first()
        return None if row is None else self._record(row)

    def history(self) -> list[PolicyRecord]:
        """Every applied version, oldest first."""
        t = schema.access_policies
        with self.db.read() as conn:
            rows = conn.execute(sa.select(t).where(self.db.scope(t)).order_by(t.c.version))
            return [self._record(r) for r in rows]

    def write(self, conn: Connection, spec: dict[str, Any], *, reason: str | None,
              changes: list[dict[str, Any]]) -> PolicyRecord:
        """Record ``spec`` as the next version inside ``conn``'s transaction, audited."""
        t = schema.access_policies
        self.db.lock(conn, "access_policy")
        last = conn.execute(sa.select(sa.func.max(t.c.version)).where(
            self.db.scope(t))).scalar()
        rec = PolicyRecord((last or 0) + 1, policy_hash(spec), spec, now_us(), self.db.actor,
                           reason)
        conn.execute(t.insert().values(
            project=self.db.project, version=rec.version, policy_hash=rec.policy_hash,
            spec=canonical_json(spec), created_at=rec.created_at, created_by=rec.created_by,
            reason=reason))
        self.db.audit(conn, "apply_policy", "access_policy", f"policy@{rec.version}",
                      {"policy_hash": rec.policy_hash, "changes": changes}, reason=reason)
        return rec
