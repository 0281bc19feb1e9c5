"""What the online part knows about view versions, cached per registry generation.

Definitions by name and version, the data chain of each version (the versions whose
commits it serves, see :mod:`featureledger.model.projection`), the newer versions that
carry a version's data, and the versions that serve a commit's rows. Cleared whenever the
registry changes (the change watcher says when).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from featureledger.model.projection import VersionProjection
from featureledger.online.stores import TableRef

if TYPE_CHECKING:
    from featureledger.registry import Registry
    from featureledger.registry.commits import CommitRecord


class ViewCatalog:
    """Cached view-version facts for serving, materialization, push and status sync."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.clear()

    def clear(self) -> None:
        self._views: dict[Any, Any] = {}
        self._chains: dict[TableRef, list[VersionProjection]] = {}
        self._carriers: dict[TableRef, list[tuple[TableRef, Any, VersionProjection]]] = {}

    def view(self, name: str, version: int | None) -> Any:
        key = (name, version)
        view = self._views.get(key)
        if view is None:
            rec = self.registry.definitions.get("feature_view", name, version)
            view = self._views[key] = rec.definition
            self._views[(name, rec.version)] = view
        return view

    def chain(self, table: TableRef) -> list[VersionProjection]:
        """The versions whose commits ``table`` serves (itself first), with projections."""
        chain = self._chains.get(table)
        if chain is None:
            chain = self._chains[table] = self.registry.definitions.data_chain(
                table.view, table.version)
        return chain

    def carried_by(self, table: TableRef) -> list[tuple[TableRef, Any, VersionProjection]]:
        """The newer versions whose data includes ``table``'s rows, each with its
        definition and how it projects them (pushes write there too)."""
        got = self._carriers.get(table)
        if got is None:
            got = []
            for rec in self.registry.definitions.versions("feature_view", table.view):
                if rec.version <= table.version:
                    continue
                reader = TableRef(rec.name, rec.version)
                p = next((p for p in self.chain(reader) if p.version == table.version), None)
                if p is not None:
                    got.append((reader, rec.definition, p))
            self._carriers[table] = got
        return got

    def readers(self, commit: CommitRecord) -> list[TableRef]:
        """Every view version whose served data includes ``commit``'s rows."""
        out = []
        for rec in self.registry.definitions.versions("feature_view", commit.view_name):
            if rec.version < commit.view_version:
                continue
            table = TableRef(rec.name, rec.version)
            if any(p.version == commit.view_version for p in self.chain(table)):
                out.append(table)
        return out
