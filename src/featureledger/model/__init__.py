"""The common data model: definitions, types, ids, references, hashing, compatibility."""

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
