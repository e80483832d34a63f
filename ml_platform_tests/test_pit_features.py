"""The point-in-time feature models on a real DuckDB file and a real dbt build: no feature of a
flight moves when what happens after its prediction instant changes, and a day's features are
the same whether its window is that day alone or a longer one."""

from dataclasses import replace
from datetime import date

import numpy as np
import pandas as pd
import pytest
from dagster import materialize
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from ml_platform.features.pit_assets import build_pit_features
from ml_platform.ingestion import intraday
from ml_platform.keys import DAY_AHEAD_FEATURES, NOWCAST_FEATURES
from ml_platform_tests import pit_support
from ml_platform_tests.conftest import local_platform
from ml_platform_tests.features_support import PARTITIONS
from ml_platform_tests.pit_support import PIT_MODELS, RawDays

# Days around the spring DST change (2013-03-10); the windows built are inside them.
RAW_START, RAW_END = date(2013, 3, 8), date(2013, 3, 12)
WINDOW = (date(2013, 3, 10), date(2013, 3, 12))


@pytest.fixture(scope="module")
def raw() -> RawDays:
    return pit_support.raw_days(RAW_START, RAW_END)


@pytest.fixture(scope="module")
def built(raw, tmp_path_factory) -> dict[str, pd.DataFrame]:
    path = tmp_path_factory.mktemp("pit") / "base.duckdb"
    pit_support.write_raw(path, raw)
    pit_support.build_models(path, *WINDOW)
    return {model: pit_support.read_features(path, model) for model in PIT_MODELS}


def test_hourly_tables_are_the_hourly_deliveries(raw):
    """The support's one-pass cut equals the feed's hour-by-hour slices."""
    timed = pit_support.timed_flights(date(2013, 3, 10), date(2013, 3, 11))
    hours = intraday.hours_of(timed.dep_at.min().floor("h"), intraday.last_event_hour(timed) + intraday.HOUR)
    for cut, slicer, instant in (
        (pit_support.events(timed, "dep_at", intraday.DEPARTURE_COLUMNS), intraday.departures, "dep_at"),
        (pit_support.events(timed, "arr_at", intraday.ARRIVAL_COLUMNS), intraday.arrivals, "arr_at"),
    ):
        sliced = pd.concat([slicer(timed, h) for h in hours], ignore_index=True)
        order = [*intraday.FLIGHT_KEY, instant]
        assert_frame_equal(
            cut.sort_values(order).reset_index(drop=True), sliced.sort_values(order).reset_index(drop=True)
        )


def perturb_after(raw: RawDays, cut: pd.Timestamp, seed: int) -> RawDays:
    """Every event at or after ``cut`` changed: delays and instants moved (never before the cut),
    some departures and arrivals dropped, later weather observations rewritten."""
    rng = np.random.default_rng(seed)

    def events(frame: pd.DataFrame, instant: str, delay: str) -> pd.DataFrame:
        later = frame[instant] >= cut
        n = int(later.sum())
        shift = pd.to_timedelta(rng.integers(0, 300, n), unit="m")
        moved = frame.loc[later].assign(**{delay: frame.loc[later, delay] + rng.integers(-30, 240, n)})
        moved[instant] = moved[instant] + shift.to_numpy()
        moved["event_hour"] = moved[instant].dt.floor("h")
        moved = moved[rng.random(n) > 0.2]
        return pd.concat([frame.loc[~later], moved], ignore_index=True)

    weather = raw.observations.copy()
    later = weather["event_hour"] >= cut
    n = int(later.sum())
    weather.loc[later, "precip"] = rng.uniform(0, 1, n)
    weather.loc[later, "visib"] = rng.uniform(0, 10, n)
    weather.loc[later, "wind_speed"] = rng.uniform(0, 40, n)
    weather.loc[later, "temp"] = rng.uniform(-10, 90, n)
    return replace(
        raw,
        departures=events(raw.departures, "dep_at", "dep_delay"),
        arrivals=events(raw.arrivals, "arr_at", "arr_delay"),
        observations=weather,
    )


# Each example is a dbt build (about 10 s on 2 cores): one drawn cut and two fixed ones.
CUTS = st.datetimes(
    min_value=pd.Timestamp("2013-03-10 03:00").to_pydatetime(),
    max_value=pd.Timestamp("2013-03-12 03:00").to_pydatetime(),
).map(lambda t: pd.Timestamp(t, tz="UTC").floor("min"))


@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=CUTS, seed=st.integers(0, 2**16))
# New York midnight (the day-ahead instant: late arrivals of the day before change) and an hour
# boundary (nowcast instants are hour starts: an event at as_of itself is not known).
@example(cut=pd.Timestamp("2013-03-11 04:00", tz="UTC"), seed=1)
@example(cut=pd.Timestamp("2013-03-10 18:00", tz="UTC"), seed=2)
def test_events_after_the_prediction_instant_change_no_feature(raw, built, tmp_path, cut, seed):
    path = tmp_path / f"perturbed-{seed}.duckdb"
    path.unlink(missing_ok=True)
    pit_support.write_raw(path, perturb_after(raw, cut, seed))
    pit_support.build_models(path, *WINDOW)
    for model in PIT_MODELS:
        before, after = built[model], pit_support.read_features(path, model)
        assert list(before.flight_id) == list(after.flight_id)
        known = (before.as_of <= cut).to_numpy()
        assert_frame_equal(before[known].reset_index(drop=True), after[known].reset_index(drop=True))
        if model == "nowcast_features" and known.sum() > 200 and (~known).sum() > 200:
            # The perturbation is visible at all: flights predicted after the cut do change.
            assert not before[~known].reset_index(drop=True).equals(after[~known].reset_index(drop=True))


def test_a_day_built_alone_equals_the_same_day_in_a_longer_window(raw, tmp_path):
    day = date(2013, 3, 11)
    alone, longer = tmp_path / "alone.duckdb", tmp_path / "longer.duckdb"
    for path, window in ((alone, (day, date(2013, 3, 12))), (longer, (date(2013, 3, 9), date(2013, 3, 12)))):
        pit_support.write_raw(path, raw)
        pit_support.build_models(path, *window)
    for model in PIT_MODELS:
        one = pit_support.read_features(alone, model)
        many = pit_support.read_features(longer, model)
        many = many[many.flight_date == pd.Timestamp(day)].reset_index(drop=True)
        assert len(one) == len(raw.schedule[raw.schedule.flight_date == pd.Timestamp(day)]) > 900
        assert_frame_equal(one, many, check_dtype=False)  # a column without nulls reads as int64


def test_nowcast_hours_must_be_an_integer(raw, tmp_path):
    path = tmp_path / "hours.duckdb"
    pit_support.write_raw(path, raw)
    with pytest.raises(RuntimeError, match="nowcast_hours=2; drop table.*not a non-negative integer"):
        pit_support.build_models(path, *WINDOW, nowcast_hours="2; drop table raw.schedule")


def test_the_asset_publishes_both_models_of_its_partition(raw, tmp_path):
    """The Dagster asset builds the partition's window, audits it and publishes both tables."""
    day = date(2013, 3, 11)
    with local_platform(tmp_path / "platform") as (settings, resources, instance):
        pit_support.write_raw(settings.warehouse_path, raw)
        asset = build_pit_features(PARTITIONS)
        result = materialize([asset], resources=resources, instance=instance, partition_key=day.isoformat())
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())
        planned = int((raw.schedule.flight_date == pd.Timestamp(day)).sum())
        with resources["warehouse"].connection(read_only=True) as conn:
            for key in (DAY_AHEAD_FEATURES, NOWCAST_FEATURES):
                table = ".".join(key.path)
                rows = conn.execute(f"select flight_date, count(*) from {table} group by 1").fetchall()  # noqa: S608
                assert [(pd.Timestamp(d).date(), n) for d, n in rows] == [(day, planned)]
