"""The audit trail as users see it: list entries, verify the chain.

The chain itself (append, hashing, the walk) lives with the registry in
``registry/audit.py``, because every registry write appends inside its own transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featureledger.errors import ConfigError
from featureledger.registry import audit as chain
from featureledger.registry.audit import AuditEntry, AuditVerification

if TYPE_CHECKING:
    from featureledger.context import StoreContext


def parse_anchor(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` (as ``audit verify`` prints the head) to a (seq, hash) pair."""
    seq, sep, digest = text.partition(":")
    digest = digest.strip().lower()
    if not sep or not seq.strip().isdigit() or len(digest) != 64 or any(
            c not in "0123456789abcdef" for c in digest):
        raise ConfigError(f"audit anchor {text[:80]!r} is not SEQ:HASH; pass the head that "
                          "an earlier `featureledger audit verify` printed, e.g. 42:9f3c...")
    return int(seq), digest


class AuditService:
    """Read and verify the project's audit trail."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    def audit_trail(self, *, kind: str | None = None, object_id: str | None = None,
                    action: str | None = None, actor: str | None = None,
                    decision: str | None = None, since: int | None = None,
                    limit: int = 1000) -> list[AuditEntry]:
        """The newest ``limit`` audit entries matching every filter given, newest first.

        ``decision="deny"`` lists refused requests; ``since`` is a time in µs.
        """
        return chain.entries(self.ctx.registry.db, kind=kind, object_id=object_id,
                             action=action, actor=actor, decision=decision, since=since,
                             limit=limit)

    def verify_audit(self, *, key: str | None = None,
                     anchor: str | None = None) -> AuditVerification:
        """Walk the audit chain and report every edited, deleted, inserted or reordered
        entry (the first one first).

        ``key`` also checks the entries' signatures (default: ``FEATURELEDGER_AUDIT_KEY``
        when set); ``anchor`` (``SEQ:HASH`` printed by an earlier verify and kept elsewhere)
        must still be in the chain.
        """
        secret = key.encode("utf-8") if key else chain.signing_key()
        return chain.verify(self.ctx.registry.db, key=secret,
                            anchor=parse_anchor(anchor) if anchor else None)
