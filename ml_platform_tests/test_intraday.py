"""The intraday feed's instants and hourly slices, on the packaged 2013 flights."""

from datetime import date

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_platform.ingestion import intraday
from ml_platform.ingestion.source import PackagedSource


@pytest.fixture(scope="module")
def timed() -> pd.DataFrame:
    source = PackagedSource()
    flights = source.read_days("flights", date(2013, 3, 8), date(2013, 3, 12)).frame  # spans DST
    return intraday.with_instants(flights, source.read_reference("airports").frame)


def test_arrivals_follow_departures_by_the_time_in_the_air(timed):
    flown = timed.dropna(subset=["arr_at", "dep_at", "air_time"])
    gate_to_gate = (flown.arr_at - flown.dep_at).dt.total_seconds() / 60
    assert (flown.sched_arr_at > flown.sched_dep_at).all()
    assert ((flown.sched_arr_at - flown.sched_dep_at) < pd.Timedelta(hours=13)).all()
    # Taxiing adds minutes to the time in the air, never hours; a wrong zone would show as hours.
    assert ((gate_to_gate - flown.air_time).between(-60, 240)).mean() > 0.999


def test_scheduled_departure_is_the_local_clock_time(timed):
    local = timed.sched_dep_at.dt.tz_convert("America/New_York")
    assert (local.dt.hour * 100 + local.dt.minute == timed.sched_dep_time.astype(int)).all()
    assert (local.dt.date == pd.to_datetime(timed.flight_date).dt.date).all()


def test_every_departure_and_arrival_is_delivered_in_exactly_one_hour(timed):
    first = min(timed.sched_dep_at.min(), timed.dep_at.min()).floor("h")  # some leave early
    hours = intraday.hours_of(first, intraday.last_event_hour(timed) + intraday.HOUR)
    deps = pd.concat([intraday.departures(timed, h) for h in hours], ignore_index=True)
    arrs = pd.concat([intraday.arrivals(timed, h) for h in hours], ignore_index=True)
    assert len(deps) == timed.dep_at.notna().sum() and not deps.duplicated(intraday.FLIGHT_KEY).any()
    assert len(arrs) == timed.arr_at.notna().sum() and not arrs.duplicated(intraday.FLIGHT_KEY).any()
    assert ((deps.dep_at >= deps.event_hour) & (deps.dep_at < deps.event_hour + intraday.HOUR)).all()


def test_unknown_destination_zone_is_named(timed):
    with pytest.raises(intraday.IntradayError, match="no time zone for destination.*XYZ"):
        intraday.flight_instants(timed.head(3).assign(dest="XYZ"), {"ORD": "America/Chicago"})


@settings(max_examples=50, deadline=None)
@given(offset=st.integers(min_value=1, max_value=59))
def test_a_time_inside_an_hour_is_refused_as_a_slice_start(offset):
    with pytest.raises(intraday.IntradayError, match="not the start of an hour"):
        intraday.hour_window(pd.Timestamp("2013-03-10 06:00", tz="UTC") + pd.Timedelta(minutes=offset))
