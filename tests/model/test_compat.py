"""Every change class against every compatibility mode, through classification and apply."""

from __future__ import annotations

import pytest

from featureledger.errors import IncompatibleChangeError
from featureledger.model.compat import CHANGE_CLASSES, classify_view_change
from featureledger.model.definitions import (
    Aggregation,
    Entity,
    FeatureView,
    Field,
    FileSource,
    RowCheck,
)
from featureledger.registry import Registry

MODES = ("backward", "forward", "full", "none")


def base_fields() -> list[Field]:
    return [
        Field(name="a", dtype="int32", min=0, max=100, unit="km"),
        Field(name="b", dtype="string", allowed_values=["x", "y"]),
        Field(name="c", dtype="float64", nullable=True, description="c"),
        Field(name="d", dtype="float64", nullable=False, default=1.0),
    ]


def view(name: str, compatibility: str, **changes) -> FeatureView:
    spec = dict(
        name=name,
        entities=["item"],
        fields=base_fields(),
        source=FileSource(path="data/items.parquet"),
        ttl="1d",
        compatibility=compatibility,
        description="items",
    )
    spec.update(changes)
    return FeatureView(**spec)


def replace_field(name: str, **updates) -> list[Field]:
    return [f.model_copy(update=updates) if f.name == name else f for f in base_fields()]


# change class -> (modifications making exactly that change)
CASES: dict[str, dict] = {
    "field_added_nullable": {"fields": [*base_fields(), Field(name="e", dtype="int64")]},
    "field_added_required": {
        "fields": [*base_fields(), Field(name="e", dtype="int64", nullable=False)]
    },
    "field_removed": {"fields": base_fields()[:-1]},
    "type_widened": {"fields": replace_field("a", dtype="int64")},
    "type_narrowed": {"fields": replace_field("c", dtype="float32")},
    "type_changed": {"fields": replace_field("c", dtype="string")},
    "range_tightened": {"fields": replace_field("a", max=50)},
    "range_loosened": {"fields": replace_field("a", min=-10)},
    "unit_changed": {"fields": replace_field("a", unit="mi")},
    "keys_changed": {"entities": ["item", "shop"]},
    "timestamp_changed": {"timestamp_field": "ts"},
    "source_changed": {"source": FileSource(path="data/items_v2.parquet")},
    "ttl_changed": {"ttl": "2d"},
    "checks_changed": {"checks": [RowCheck(name="a_pos", expr="a >= 0")]},
    "default_changed": {"fields": replace_field("d", default=2.0)},
    "aggregations_changed": {"aggregations": [Aggregation(column="a", function="sum",
                                                          window="1d")]},
    "description_only": {"description": "all items", "owner": "team-x", "tags": {"t": "1"}},
}


def test_every_view_change_class_has_a_case() -> None:
    view_classes = set(CHANGE_CLASSES) - {
        "features_changed", "transformation_changed", "compatibility_changed"
    }
    assert view_classes == set(CASES)


@pytest.mark.parametrize("change", sorted(CASES))
def test_classification_is_exact(change: str) -> None:
    old = view("v", "backward")
    new = view("v", "backward", **CASES[change])
    old, new = _with_keys(old), _with_keys(new)
    classes = [c.change for c in classify_view_change(old, new)]
    assert classes == [change]


def test_description_only_names_what_changed() -> None:
    old = _with_keys(view("v", "backward"))
    new = _with_keys(view("v", "backward", description="all items", tags={"t": "1"},
                          fields=replace_field("a", description="distance")))
    [change] = classify_view_change(old, new)
    assert change.change == "description_only"
    assert change.detail == "description, tags.t, a.description"


def test_constraint_directions() -> None:
    old = _with_keys(view("v", "none"))
    cases = {
        "range_tightened": [
            replace_field("a", min=10),
            replace_field("b", allowed_values=["x"]),
            replace_field("c", nullable=False),
            replace_field("b", regex="^x$"),
        ],
        "range_loosened": [
            replace_field("a", max=None),
            replace_field("b", allowed_values=["x", "y", "z"]),
            replace_field("d", nullable=True),
            replace_field("c", allow_nan=True),
        ],
    }
    for expected, variants in cases.items():
        for fields in variants:
            new = _with_keys(view("v", "none", fields=fields))
            assert [c.change for c in classify_view_change(old, new)] == [expected], fields


def test_allow_nan_directions_and_modes() -> None:
    strict = _with_keys(view("v", "backward"))
    lax = _with_keys(view("v", "backward", fields=replace_field("c", allow_nan=True)))
    [loosened] = classify_view_change(strict, lax)
    assert (loosened.change, loosened.field) == ("range_loosened", "c")
    assert loosened.detail == "allow_nan False -> True (NaN and ±inf accepted)"
    [tightened] = classify_view_change(lax, strict)
    assert (tightened.change, tightened.field) == ("range_tightened", "c")
    assert "allow_nan True -> False" in tightened.detail


def test_refusing_nan_again_is_refused_under_backward(tmp_path) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        item = Entity(name="item", join_keys={"item_id": "int64"})
        lax = view("v", "backward", fields=replace_field("c", allow_nan=True))
        reg.definitions.apply([item, lax])
        with pytest.raises(IncompatibleChangeError, match=r"field 'c': range_tightened \(allow_nan True -> False"):
            reg.definitions.apply([item, view("v", "backward")])
        plan = reg.definitions.apply([item, view("v", "backward")], allow_breaking="cleaned")
        assert [i.to_version for i in plan.items if i.name == "v"] == [2]
    finally:
        reg.close()


def _with_keys(v: FeatureView) -> FeatureView:
    keys = {"item_id": "int64"}
    if "shop" in v.entities:
        keys["shop_id"] = "int64"
    return v.model_copy(update={"join_keys": keys})


@pytest.fixture(scope="module")
def registries(tmp_path_factory):
    """One registry per mode, each holding version 1 of every case's view."""
    out = {}
    for mode in MODES:
        reg = Registry(f"sqlite:///{tmp_path_factory.mktemp(mode) / 'r.db'}")
        reg.definitions.apply(
            [Entity(name="item", join_keys={"item_id": "int64"}),
             Entity(name="shop", join_keys={"shop_id": "int64"})]
            + [view(f"v_{c}", mode) for c in CASES]
        )
        out[mode] = reg
    yield out
    for reg in out.values():
        reg.close()


def expected_allowed(change: str, mode: str) -> bool:
    c = CHANGE_CLASSES[change]
    return {"backward": c.backward, "forward": c.forward,
            "full": c.backward and c.forward, "none": True}[mode]


# The table itself, written out so a change to CHANGE_CLASSES has to change it too.
ALLOWED = {
    #  change                    backward forward full  none
    "field_added_nullable":     (True,    True,   True, True),
    "field_added_required":     (False,   True,   False, True),
    "field_removed":            (True,    False,  False, True),
    "type_widened":             (True,    False,  False, True),
    "type_narrowed":            (False,   True,   False, True),
    "type_changed":             (False,   False,  False, True),
    "range_tightened":          (False,   True,   False, True),
    "range_loosened":           (True,    False,  False, True),
    "unit_changed":             (False,   False,  False, True),
    "keys_changed":             (False,   False,  False, True),
    "timestamp_changed":        (False,   False,  False, True),
    "source_changed":           (True,    True,   True, True),
    "ttl_changed":              (True,    True,   True, True),
    "checks_changed":           (True,    True,   True, True),
    "default_changed":          (True,    True,   True, True),
    "description_only":         (True,    True,   True, True),
    "aggregations_changed":     (False,   False,  False, True),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("change", sorted(CASES))
def test_apply_honours_mode(registries, change: str, mode: str) -> None:
    reg = registries[mode]
    name = f"v_{change}"
    allowed = ALLOWED[change][MODES.index(mode)]
    assert allowed == expected_allowed(change, mode)
    before = reg.definitions.versions("feature_view", name)
    new = view(name, mode, **CASES[change])
    if allowed:
        plan = reg.definitions.apply([new])
        item = plan.items[0]
        if change == "description_only":
            assert item.action == "docs_update"
            after = reg.definitions.versions("feature_view", name)
            assert len(after) == len(before)
            assert after[-1].definition.description == "all items"
            assert after[-1].definition_hash == before[-1].definition_hash
        else:
            assert item.action == "new_version"
            assert item.to_version == before[-1].version + 1
            assert [c.change for c in item.changes] == [change]
    else:
        with pytest.raises(IncompatibleChangeError) as err:
            reg.definitions.apply([new])
        msg = str(err.value)
        assert name in msg and change in msg and repr(mode) in msg
        field = CASES[change].get("fields")
        if field is not None:
            changed = [c.field for c in err.value.violations[0].refused]
            assert changed and all(f in msg for f in changed)
        assert len(reg.definitions.versions("feature_view", name)) == len(before)
        # with a reason it goes through, and the reason is recorded
        plan = reg.definitions.apply([new], allow_breaking="consumers migrated")
        rec = reg.definitions.get("feature_view", name)
        assert rec.version == before[-1].version + 1
        assert rec.breaking_reason == "consumers migrated"
        assert plan.items[0].refused
