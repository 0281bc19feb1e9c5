"""Request-time (on-demand) features: computed when asked for, from stored features and
values in the request.

Re-exported by :mod:`featureledger.model.definitions`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field as PydField
from pydantic import field_validator, model_validator

from featureledger.model.base import Field, _Definition, check_name
from featureledger.model.types import parse_dtype


# -- request-time (on-demand) features ------------------------------------------------------
class RequestFeatureView(_Definition):
    """Features computed at request time from stored features and request values.

    ``inputs`` are feature references (``view:feature``) whose values, as of the entity
    row (historical retrieval) or as served (online), are handed to the transformation
    with the request values named in ``request_schema`` (online: ``request_data``;
    offline: columns of the entity frame). The transformation is text, never a pickled
    object: Python source defining ``transform(df)`` (a pandas DataFrame with a column
    per input feature and request value, returning a DataFrame with a column per output
    field), or ``sql``: one DuckDB expression per output field, run in the sandbox. The
    same code computes online and offline values, so they are identical.

    >>> rv = RequestFeatureView(name="quote", inputs=["trips:fare_sum_7d"],
    ...                         request_schema={"distance_km": "float64"},
    ...                         fields=[Field(name="fare_per_km", dtype="float64")],
    ...                         sql={"fare_per_km": "fare_sum_7d / nullif(distance_km, 0)"})
    >>> rv.input_names
    ['fare_sum_7d']
    """

    kind: ClassVar[str] = "request_view"
    noun: ClassVar[str | None] = "request view"

    name: str
    inputs: list[str] = PydField(default_factory=list)
    request_schema: dict[str, str] = PydField(default_factory=dict)
    fields: list[Field]
    python: str | None = None
    sql: dict[str, str] | None = None
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = PydField(default_factory=dict)

    @field_validator("request_schema")
    @classmethod
    def _request(cls, v: dict[str, str]) -> dict[str, str]:
        return {check_name("request value", k): parse_dtype(t) for k, t in v.items()}

    @model_validator(mode="after")
    def _consistency(self) -> RequestFeatureView:
        from featureledger.model.references import parse_reference

        if (self.python is None) == (self.sql is None):
            raise ValueError("give the transformation as python='def transform(df): ...' "
                             "or as sql={'field': 'expression'}, exactly one of them")
        names = [parse_reference(r).feature for r in self.inputs]
        columns = [*names, *self.request_schema]
        dupes = sorted({n for n in columns if columns.count(n) > 1})
        if dupes:
            raise ValueError(f"input name(s) {', '.join(dupes)} appear twice among the "
                             "inputs and request values; each must be one column")
        if not columns:
            raise ValueError("a request view needs inputs or request values to compute from")
        outs = [f.name for f in self.fields]
        if not outs or len(set(outs)) != len(outs):
            raise ValueError("a request view needs fields with distinct names")
        if set(outs) & set(columns):
            raise ValueError(f"field(s) {', '.join(sorted(set(outs) & set(columns)))} are "
                             "also inputs or request values; rename them")
        if self.sql is not None and sorted(self.sql) != sorted(outs):
            raise ValueError(f"sql gives expressions for {sorted(self.sql)}, but the fields "
                             f"are {sorted(outs)}; give one expression per field")
        if self.python is not None:
            try:
                compile(self.python, f"<request view {self.name}>", "exec")
            except SyntaxError as exc:
                raise ValueError(f"the python transformation does not compile: {exc}") from None
        return self

    @property
    def input_names(self) -> list[str]:
        """The column each input feature is handed to the transformation as."""
        from featureledger.model.references import parse_reference

        return [parse_reference(r).feature for r in self.inputs]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        from featureledger.errors import UnknownFeatureError

        raise UnknownFeatureError(
            f"request view {self.name!r} has no field {name!r}; its fields are: "
            f"{', '.join(f.name for f in self.fields)}")

