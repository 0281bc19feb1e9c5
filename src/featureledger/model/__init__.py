"""The common data model: definitions, types, ids, references, hashing, compatibility.

Names are loaded on first use: the light modules of this package (``bounds``, ``ids``,
``timeutil``) are imported by the command line before any definition is, and importing
them must not load the definitions (and pydantic) with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featureledger.model.lazy import lazy_names as _lazy_names

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


__getattr__, __dir__ = _lazy_names(globals(), _LAZY, "featureledger.model")

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
