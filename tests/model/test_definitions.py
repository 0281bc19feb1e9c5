from __future__ import annotations

import datetime as dt

import pytest

from featureledger.errors import DefinitionError, InvalidReferenceError
from featureledger.model.definitions import (
    Entity,
    FeatureSet,
    FeatureView,
    Field,
    FileSource,
    definition_from_dict,
)
from featureledger.model.ids import id_kind, id_time_ms, new_id
from featureledger.model.references import parse_reference, parse_references
from featureledger.model.types import SCALAR_DTYPES, parse_dtype, to_arrow


def test_every_scalar_and_list_dtype_maps_to_arrow() -> None:
    import pyarrow as pa

    for d in SCALAR_DTYPES:
        assert parse_dtype(d) == d
        assert isinstance(to_arrow(d), pa.DataType)
        assert to_arrow(f"list<{d}>") == pa.list_(to_arrow(d))
    assert parse_dtype("List< Float >") == "list<float64>"
    with pytest.raises(DefinitionError, match="unknown dtype 'decimal'"):
        parse_dtype("decimal")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dtype": "int64", "min": 5, "max": 1}, "min 5 is greater than max 1"),
        ({"dtype": "bool", "min": 0}, "min/max need an ordered dtype"),
        ({"dtype": "int64", "regex": "a+"}, "regex applies only to string"),
        ({"dtype": "string", "regex": "("}, "does not compile"),
        ({"dtype": "string", "allowed_values": []}, "allowed_values is empty"),
        ({"dtype": "string", "allowed_values": ["a"], "default": "b"}, "not among allowed"),
        ({"dtype": "int64", "min": "zero"}, "must be a number"),
        ({"dtype": "int64", "allow_nan": True}, "allow_nan applies only to float fields"),
        ({"dtype": "list<string>", "allow_nan": True}, "allow_nan applies only to float"),
    ],
)
def test_field_constraints_are_checked(kwargs, message) -> None:
    with pytest.raises(DefinitionError, match=message):
        Field(name="f", **kwargs)


def test_view_errors_name_the_problem() -> None:
    with pytest.raises(DefinitionError, match="duplicate field names: x"):
        FeatureView(name="v", entities=["e"], fields=[Field(name="x", dtype="int64")] * 2)
    with pytest.raises(DefinitionError, match="TTL 'a week' is not understood"):
        FeatureView(name="v", entities=["e"], fields=[Field(name="x", dtype="int64")], ttl="a week")
    with pytest.raises(DefinitionError, match="not valid: use letters"):
        FeatureView(name="1v", entities=["e"], fields=[Field(name="x", dtype="int64")])
    with pytest.raises(DefinitionError, match="reserved"):
        Field(name="_commit_id", dtype="string")
    with pytest.raises(DefinitionError, match="clash with a join key"):
        FeatureView(name="v", entities=[Entity(name="e", join_keys={"x": "int64"})],
                    fields=[Field(name="x", dtype="int64")])
    with pytest.raises(DefinitionError, match="cannot have dtype float64"):
        Entity(name="e", join_keys={"k": "float64"})


def test_ttl_forms() -> None:
    f = [Field(name="x", dtype="int64")]
    for text, expected in [("7d", dt.timedelta(days=7)), ("90m", dt.timedelta(minutes=90)),
                           (3600, dt.timedelta(hours=1)), ("P2D", dt.timedelta(days=2))]:
        assert FeatureView(name="v", entities=["e"], fields=f, ttl=text).ttl == expected


def test_round_trip_and_hash_stability() -> None:
    v = FeatureView(
        name="v", entities=[Entity(name="e", join_keys={"k": "string"})],
        fields=[Field(name="x", dtype="list<float32>", tags=["pii"]),
                Field(name="y", dtype="string", allowed_values=["b", "a"])],
        source=FileSource(path="data/*.csv"), ttl="1h", checks={"c": "x IS NOT NULL"},
    )
    again = definition_from_dict(v.to_dict())
    assert again == v
    assert again.definition_hash == v.definition_hash
    assert v.source.format == "csv"
    assert v.field("x").tags == {"pii": "true"}
    # allowed values are a set: order does not change the hash
    w = v.model_copy(update={"fields": [v.fields[0], Field(name="y", dtype="string",
                                                           allowed_values=["a", "b"])]})
    assert w.definition_hash == v.definition_hash
    # docs do not change the definition hash, but do change the docs hash
    d = v.model_copy(update={"description": "new words"})
    assert d.definition_hash == v.definition_hash and d.docs_hash != v.docs_hash


def test_allow_nan_is_spec_and_leaves_older_hashes_alone() -> None:
    def make(**kw) -> FeatureView:
        return FeatureView(name="v", entities=["e"], join_keys={"k": "int64"},
                           fields=[Field(name="x", dtype="float64", min=0, **kw)])

    # the hash this definition had before allow_nan existed: applying it again is no change
    assert make().definition_hash == (
        "baf1d0e611d18b584e869d73f5f369a0728fb570ca60b5dcbee402f45d246363")
    assert make(allow_nan=False).definition_hash == make().definition_hash
    on = make(allow_nan=True)
    assert on.definition_hash != make().definition_hash
    assert on.spec()["fields"][0]["allow_nan"] is True
    again = definition_from_dict(on.to_dict())
    assert again.fields[0].allow_nan and again.definition_hash == on.definition_hash
    assert Field(name="v", dtype="list<float32>", allow_nan=True).allow_nan


def test_references() -> None:
    r = parse_reference("driver_stats@12:conv_rate")
    assert (r.view, r.version, r.feature) == ("driver_stats", 12, "conv_rate")
    for bad in ["driver_stats", "driver_stats@0:x", "a:b:c", "@1:x", "v@x:f", ""]:
        with pytest.raises(InvalidReferenceError, match="expected 'view:feature'"):
            parse_reference(bad)
    with pytest.raises(InvalidReferenceError, match="beyond any possible version"):
        parse_reference("v@99999999999999999999:x")
    with pytest.raises(InvalidReferenceError, match="requested twice"):
        parse_references(["v@2:a", "v@2:a"])
    # two versions of one feature are two references
    assert [str(r) for r in parse_references(["v:a", "v@2:a"])] == ["v:a", "v@2:a"]
    with pytest.raises(InvalidReferenceError, match="wrap it in a list"):
        parse_references("v:a")  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="appears twice"):
        FeatureSet(name="s", features=["v:a", "v@1:a"])


def test_ids_are_prefixed_time_ordered_uuid7() -> None:
    ids = [new_id("run") for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(id_kind(i) == "run" for i in ids)
    import time
    import uuid

    u = uuid.UUID(ids[0][4:])
    assert u.version == 7 and u.variant == uuid.RFC_4122
    assert abs(id_time_ms(ids[0]) - time.time() * 1000) < 60_000
    with pytest.raises(InvalidReferenceError):
        new_id("xyz")
    with pytest.raises(InvalidReferenceError):
        id_kind("run_not-a-uuid")
