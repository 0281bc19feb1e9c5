"""The common data model: definitions, types, ids, references, hashing, compatibility.

Names are loaded on first use: the light modules of this package (``bounds``, ``ids``,
``timeutil``) are imported by the command line before any definition is, and importing
them must not load the definitions (and pydantic) with them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    **dict.fromkeys(
        ("Aggregation", "DataFrameSource", "Entity", "FeatureSet", "FeatureView", "Field",
         "FileSource", "RequestFeatureView", "RowCheck", "Transformation",
         "definition_from_dict"), "featureledger.model.definitions"),
    "id_kind": "featureledger.model.ids",
    "new_id": "featureledger.model.ids",
    **dict.fromkeys(("FeatureRef", "parse_reference", "parse_references"),
                    "featureledger.model.references"),
}

if TYPE_CHECKING:
    from featureledger.model.definitions import (
        Aggregation,
        DataFrameSource,
        Entity,
        FeatureSet,
        FeatureView,
        Field,
        FileSource,
        RequestFeatureView,
        RowCheck,
        Transformation,
        definition_from_dict,
    )
    from featureledger.model.ids import id_kind, new_id
    from featureledger.model.references import FeatureRef, parse_reference, parse_references


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'featureledger.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Aggregation",
    "DataFrameSource",
    "Entity",
    "FeatureRef",
    "FeatureSet",
    "FeatureView",
    "Field",
    "FileSource",
    "RequestFeatureView",
    "RowCheck",
    "Transformation",
    "definition_from_dict",
    "id_kind",
    "new_id",
    "parse_reference",
    "parse_references",
]
