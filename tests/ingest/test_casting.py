"""Exact casts: what is cast, what fails, and the missing / extra column rules."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from featureledger import Entity, FeatureView, Field
from featureledger.errors import IngestionError
from featureledger.ingest import cast_exact, conform, stored_schema

UTC = dt.UTC


def chunked(values, type_=None) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array(values, type_)])


def bad_rows(values, type_, dtype) -> list[int]:
    _, bad, _ = cast_exact(chunked(values, type_), dtype)
    return [] if bad is None else np.flatnonzero(bad).tolist()


def test_integer_widening_is_exact() -> None:
    out, bad, rule = cast_exact(chunked([1, -2, None], pa.int32()), "int64")
    assert out.type == pa.int64() and out.to_pylist() == [1, -2, None]
    assert bad is None and rule == "int32->int64"


def test_narrowing_fails_only_values_that_do_not_fit() -> None:
    assert bad_rows([1, 2**31, -(2**31), None], pa.int64(), "int32") == [1]


def test_int_to_float64_exact_up_to_2_pow_53() -> None:
    assert bad_rows([2**53, 2**53 + 1, 7], pa.int64(), "float64") == [1]


def test_float_to_int_only_for_whole_numbers() -> None:
    out, bad, _ = cast_exact(chunked([2.0, 2.5, float("nan"), None, -3.0]), "int64")
    assert np.flatnonzero(bad).tolist() == [1, 2]
    assert out.to_pylist() == [2, None, None, None, -3]


def test_float64_to_float32_rounds_and_rejects_only_overflow() -> None:
    values = [0.5, 0.1, float("nan"), float("inf"), 1e39, -1e39, 3.0e38, None]
    assert bad_rows(values, pa.float64(), "float32") == [4, 5]
    out, _, rule = cast_exact(chunked(values, pa.float64()), "float32")
    got = out.to_pylist()
    assert got[0] == 0.5 and got[1] == float(np.float32(0.1))
    assert np.isnan(got[2]) and got[3] == float("inf") and got[4] is None and got[5] is None
    assert got[6] == float(np.float32(3.0e38)) and got[7] is None
    assert rule == "double->float32 (rounded to nearest)"


def test_float32_to_float64_is_exact() -> None:
    out, bad, _ = cast_exact(chunked([0.1, 1.5], pa.float32()), "float64")
    assert bad is None
    assert out.to_pylist() == [float(np.float32(0.1)), 1.5]


def test_naive_timestamps_are_utc_and_zoned_ones_converted() -> None:
    naive = chunked([dt.datetime(2024, 1, 1, 12)], pa.timestamp("ns"))
    out, bad, rule = cast_exact(naive, "timestamp")
    assert bad is None and "naive = UTC" in rule
    assert out.type == pa.timestamp("us", tz="UTC")
    assert out.to_pylist() == [dt.datetime(2024, 1, 1, 12, tzinfo=UTC)]
    zoned = chunked([dt.datetime(2024, 1, 1, 12, tzinfo=UTC)], pa.timestamp("s", tz="Europe/Paris"))
    out, _, _ = cast_exact(zoned, "timestamp")
    assert out.to_pylist() == [dt.datetime(2024, 1, 1, 12, tzinfo=UTC)]


def test_nanoseconds_that_are_not_whole_microseconds_fail() -> None:
    ints = pa.array([1_000, 1_001, 2_000_000], pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
    assert bad_rows(ints, None, "timestamp") == [1]


def test_iso_text_parses_to_timestamp_and_bad_text_fails() -> None:
    out, bad, _ = cast_exact(
        chunked(["2024-01-01T10:00:00Z", "2024-01-01 12:00:00+02:00", "2024-01-02", "nope",
                 None]), "timestamp")
    assert np.flatnonzero(bad).tolist() == [3]
    assert out.to_pylist() == [dt.datetime(2024, 1, 1, 10, tzinfo=UTC),
                               dt.datetime(2024, 1, 1, 10, tzinfo=UTC),
                               dt.datetime(2024, 1, 2, tzinfo=UTC), None, None]


def test_unrelated_types_fail_every_present_value() -> None:
    assert bad_rows(["1.5", None, "2"], pa.string(), "float64") == [0, 2]
    assert bad_rows([True, False], pa.bool_(), "int64") == [0, 1]
    assert bad_rows([1, 2], pa.int64(), "string") == [0, 1]


def test_string_variants_and_dictionaries_decode() -> None:
    out, bad, _ = cast_exact(chunked(["a", "b"], pa.large_string()), "string")
    assert bad is None and out.type == pa.string()
    dict_arr = pa.chunked_array([pa.array(["x", "y", "x"]).dictionary_encode()])
    out, bad, rule = cast_exact(dict_arr, "string")
    assert out.to_pylist() == ["x", "y", "x"] and bad is None and "dictionary" in rule


def view_with(**kw) -> FeatureView:
    fields = kw.pop("fields", [Field(name="x", dtype="float64")])
    return FeatureView(name="v", entities=[Entity(name="d", join_keys={"k": "int64"})],
                       fields=fields, **kw)


def test_missing_required_column_is_a_clear_error() -> None:
    view = view_with(fields=[Field(name="x", dtype="float64", nullable=False)])
    with pytest.raises(IngestionError, match=r"lacks required column\(s\) 'x'"):
        conform(pa.table({"k": [1], "event_timestamp": [dt.datetime(2024, 1, 1)]}), view)
    with pytest.raises(IngestionError, match=r"'event_timestamp'"):
        conform(pa.table({"k": [1], "x": [1.0]}), view)


def test_unknown_extra_column_is_a_clear_error() -> None:
    table = pa.table({"k": [1], "event_timestamp": [dt.datetime(2024, 1, 1)], "x": [1.0],
                      "junk": [2]})
    with pytest.raises(IngestionError, match=r"'junk' are not in feature view 'v'"):
        conform(table, view_with())


def test_missing_optional_columns_filled_with_default_or_null() -> None:
    view = view_with(fields=[Field(name="x", dtype="float64"),
                             Field(name="y", dtype="int64", default=7, nullable=False),
                             Field(name="z", dtype="string", default="none")])
    table = pa.table({"k": [1, 2], "event_timestamp": [dt.datetime(2024, 1, 1)] * 2,
                      "z": ["a", None]})
    out = conform(table, view)
    assert out.table.column("x").to_pylist() == [None, None]
    assert out.table.column("y").to_pylist() == [7, 7]
    assert out.table.column("z").to_pylist() == ["a", None]  # present nulls stay null
    assert [s["step"] for s in out.steps if s["step"].startswith("fill")] == [
        "fill_null", "fill_default"]
    assert out.table.schema.equals(stored_schema(view).remove(6).remove(5))


def polars_frame():
    import polars as pl

    return pl.DataFrame({
        "k": [1, 2, 3, 4],
        "event_timestamp": [dt.datetime(2024, 1, 1, h, tzinfo=UTC) for h in range(4)],
        "tags": [["a", None, "c"], None, [], [None]],
        "counts": [[1, 2], [None], None, []],
        "name": ["x", None, "z", "w"],
        "blob": [b"\x00\x01", None, b"", b"z"],
        "kind": pl.Series(["p", "q", None, "p"], dtype=pl.Categorical),
    })


POLARS_FIELDS = [Field(name="tags", dtype="list<string>"), Field(name="counts", dtype="list<int64>"),
                 Field(name="name", dtype="string"), Field(name="blob", dtype="bytes"),
                 Field(name="kind", dtype="string")]


def test_polars_large_types_are_the_same_values_as_arrow() -> None:
    frame = polars_frame().to_arrow()
    # what Polars hands over: 64-bit offsets everywhere
    assert frame.schema.field("tags").type == pa.large_list(pa.large_string())
    assert frame.schema.field("blob").type == pa.large_binary()
    view = view_with(fields=POLARS_FIELDS)
    out = conform(frame, view)
    assert out.cast_failures == {}
    stored = stored_schema(view)
    assert out.table.schema == pa.schema([f for f in stored if not f.name.startswith("_")])
    assert out.table.column("tags").to_pylist() == [["a", None, "c"], None, [], [None]]
    assert out.table.column("counts").to_pylist() == [[1, 2], [None], None, []]
    assert out.table.column("name").to_pylist() == ["x", None, "z", "w"]
    assert out.table.column("blob").to_pylist() == [b"\x00\x01", None, b"", b"z"]
    assert out.table.column("kind").to_pylist() == ["p", "q", None, "p"]
    # the same data built in Arrow with 32-bit offsets conforms to the same table
    arrow = pa.table({c: frame.column(c).to_pylist() for c in frame.column_names},
                     schema=pa.schema([("k", pa.int64()),
                                       ("event_timestamp", pa.timestamp("us", tz="UTC")),
                                       ("tags", pa.list_(pa.string())),
                                       ("counts", pa.list_(pa.int64())),
                                       ("name", pa.string()), ("blob", pa.binary()),
                                       ("kind", pa.string())]))
    assert conform(arrow, view).table.equals(out.table)


def test_list_elements_follow_the_scalar_cast_rules() -> None:
    import polars as pl

    big = pl.Series("v", [[1, 2**40], [3], None, [None, 4]]).to_arrow()
    out, bad, rule = cast_exact(pa.chunked_array([big]), "list<int32>")
    # a list with one element that does not fit fails its row; the others are cast
    assert np.flatnonzero(bad).tolist() == [0]
    assert out.to_pylist() == [None, [3], None, [None, 4]]
    assert rule == "large_list<item: int64>->list<int32>"
    out, bad, _ = cast_exact(pa.chunked_array([big]), "list<float64>")
    assert bad is None and out.to_pylist() == [[1.0, 2.0**40], [3.0], None, [None, 4.0]]
    words = pl.Series("w", [["a"], ["1.5"]]).to_arrow()
    assert np.flatnonzero(cast_exact(pa.chunked_array([words]), "list<float64>")[1]).tolist() \
        == [0, 1]  # text is never a number, inside a list or not
