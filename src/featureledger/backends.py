"""Backend tables: which class implements each seam for each configured ``type``.

Each seam has a table ``type -> "module:Class"``; the class is imported only when a store
opens one, so a driver (redis, psycopg) is imported by its backend's module alone. More
backends register through the entry-point group ``featureledger.<seam>`` (for example
``featureledger.online_store``), as ``name = "package.module:Class"``; a name in the
built-in table cannot be replaced that way.

Every backend class builds itself from the project configuration with
``Class.from_config(config)`` (a classmethod taking the :class:`ProjectConfig`), so the
seam's choice of class and its settings stay in one place.

>>> sorted(BACKENDS["online_store"])
['redis', 'sqlite']
>>> backend_class("offline_engine", "duckdb").__name__
'DuckDBEngine'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from featureledger.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from featureledger.config import ProjectConfig

# seam -> type -> ("module:Class", extra that installs its driver, or None)
BACKENDS: dict[str, dict[str, tuple[str, str | None]]] = {
    "offline_store": {
        "parquet": ("featureledger.offline.storage:ParquetOfflineStore", None),
        "s3": ("featureledger.offline.s3:S3OfflineStore", "s3"),
    },
    "offline_engine": {
        "duckdb": ("featureledger.offline.duckdb:DuckDBEngine", None),
        "spark": ("featureledger.offline.spark:SparkEngine", "spark"),
    },
    "online_store": {
        "sqlite": ("featureledger.online.sqlite:SqliteOnlineStore", None),
        "redis": ("featureledger.online.redis:RedisOnlineStore", "redis"),
    },
}


def _entry_points(seam: str) -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=f"featureledger.{seam}")}


def available(seam: str) -> dict[str, tuple[str, str | None]]:
    """The types a seam can be configured with: built-in, then registered by entry points."""
    table = dict(BACKENDS[seam])
    for name, target in _entry_points(seam).items():
        table.setdefault(name, (target, None))
    return table


def backend_class(seam: str, kind: str) -> Any:
    """The class implementing ``seam`` for configured type ``kind``.

    An unknown type is a ConfigError naming the types that exist; a known one whose
    driver is not installed is a MissingDependencyError naming the extra to install.
    """
    if seam not in BACKENDS:
        raise ConfigError(f"unknown seam {seam!r}; seams are {', '.join(sorted(BACKENDS))}")
    # the built-in table first: scanning installed packages' entry points costs ~25 ms
    table = BACKENDS[seam] if kind in BACKENDS[seam] else available(seam)
    if kind not in table:
        raise ConfigError(f"{seam} type {kind!r} does not exist; available types: "
                          f"{', '.join(sorted(table))}")
    target, extra = table[kind]
    module, _, cls = target.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except MissingDependencyError:
        raise
    except ImportError as exc:
        if extra is None:
            raise ConfigError(f"{seam} type {kind!r} cannot be imported from {target} "
                              f"({exc}); check that the package providing it is "
                              "installed") from None
        raise MissingDependencyError(f"{seam} type {kind!r}", exc.name or str(exc),
                                     extra) from None


def open_backend(seam: str, config: ProjectConfig) -> Any:
    """The configured implementation of ``seam``, built from ``config``."""
    section = getattr(config, seam)
    return backend_class(seam, section.type).from_config(config)
