"""featureledger: a feature store with experiment tracking and model lineage built in.

>>> import featureledger
>>> sorted(featureledger.__all__) == featureledger.__all__
True
"""

from featureledger.errors import FeatureLedgerError
from featureledger.model.definitions import (
    DataFrameSource,
    Entity,
    FeatureSet,
    FeatureView,
    Field,
    FileSource,
    RowCheck,
    Transformation,
)
from featureledger.model.ids import new_id
from featureledger.model.references import FeatureRef, parse_reference
from featureledger.store import FeatureStore

__version__ = "0.1.0"

__all__ = [
    "DataFrameSource",
    "Entity",
    "FeatureLedgerError",
    "FeatureRef",
    "FeatureSet",
    "FeatureStore",
    "FeatureView",
    "Field",
    "FileSource",
    "RowCheck",
    "Transformation",
    "new_id",
    "parse_reference",
]
