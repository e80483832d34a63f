"""Upstream's intraday feed: a day's schedule before the day, then what happens, hour by hour.

A real operations feed delivers each event with the instant it happened. The packaged 2013 data
has local clock times instead (departures in New York, arrivals in the destination's zone), so
the packaged source derives those instants here, once, and slices them into the deliveries a
live feed would make. Every instant is UTC (``*_at`` columns, timezone-aware): hour boundaries
then never repeat or vanish at a daylight-saving change.

- the schedule of a day: every flight planned, with its scheduled instants, known before the day;
- departures of an hour: the flights whose wheels-off instant falls in ``[hour, hour + 1h)``;
- arrivals of an hour: the flights whose arrival instant falls in it (cancelled and diverted
  flights never arrive);
- observations of an hour: the weather observations stamped in it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

# Destinations the airports table lists without a time zone (Puerto Rico and the Virgin Islands
# keep Atlantic Standard Time all year).
MISSING_ZONES = {
    "BQN": "America/Puerto_Rico",
    "PSE": "America/Puerto_Rico",
    "SJU": "America/Puerto_Rico",
    "STT": "America/St_Thomas",
}
HOUR = pd.Timedelta(hours=1)
FLIGHT_KEY = ["flight_date", "carrier", "flight", "origin", "sched_dep_time"]
SCHEDULE_COLUMNS = [
    *FLIGHT_KEY,
    "year",
    "month",
    "day",
    "sched_arr_time",
    "tailnum",
    "dest",
    "distance",
    "hour",
    "minute",
    "time_hour",
    "sched_dep_at",
    "sched_arr_at",
]
DEPARTURE_COLUMNS = [*FLIGHT_KEY, "tailnum", "dep_time", "dep_delay", "dep_at"]
ARRIVAL_COLUMNS = [*FLIGHT_KEY, "dest", "arr_time", "arr_delay", "air_time", "arr_at"]


class IntradayError(ValueError):
    """The flights cannot be placed in time (a destination without a known time zone)."""


def destination_zones(airports: pd.DataFrame) -> dict[str, str]:
    """Each airport's IANA time zone, from the airports reference table."""
    known = airports.dropna(subset=["tzone"])
    zones = dict(zip(known["faa"].astype(str), known["tzone"].astype(str), strict=True))
    return {**MISSING_ZONES, **zones}


def flight_instants(flights: pd.DataFrame, zones: dict[str, str]) -> pd.DataFrame:
    """Scheduled and actual departure and arrival instants of each flight (same index).

    The scheduled departure is ``time_hour`` (the scheduled hour, already an instant) plus the
    minute; the actual one adds the departure delay. The scheduled arrival is the destination's
    local clock time on the first day that puts it after the scheduled departure (no flight here
    is airborne for a day); the actual one adds the arrival delay.
    """
    unknown = sorted(set(flights["dest"].astype(str)) - set(zones))
    if unknown:
        raise IntradayError(f"no time zone for destination(s) {', '.join(unknown)}")
    sched_dep = _utc(flights["time_hour"]) + pd.to_timedelta(flights["minute"].astype("float64"), unit="m")
    dep = sched_dep + pd.to_timedelta(flights["dep_delay"].astype("float64"), unit="m")
    sched_arr = pd.Series(pd.NaT, index=flights.index, dtype="datetime64[us, UTC]")
    clock = flights["sched_arr_time"].astype("float64")
    local_day = pd.to_datetime(flights["flight_date"]).dt.tz_localize(None)
    for zone, rows in flights.groupby(flights["dest"].astype(str)).groups.items():
        hhmm = clock.loc[rows]
        wall = local_day.loc[rows] + pd.to_timedelta(hhmm // 100 * 60 + hhmm % 100, unit="m")
        first = np.ones(len(wall), dtype=bool)  # a repeated local hour: its first occurrence
        local = wall.dt.tz_localize(zones[zone], ambiguous=first, nonexistent="shift_forward")
        sched_arr.loc[rows] = local.dt.tz_convert("UTC")
    for _ in range(2):  # arrival clock times are on the departure day or the next one
        early = sched_arr < sched_dep
        sched_arr = sched_arr.where(~early, sched_arr + pd.Timedelta(days=1))
    arr = sched_arr + pd.to_timedelta(flights["arr_delay"].astype("float64"), unit="m")
    return pd.DataFrame({"sched_dep_at": sched_dep, "dep_at": dep, "sched_arr_at": sched_arr, "arr_at": arr})


def _utc(column: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(column, utc=True)
    return stamps.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


def with_instants(flights: pd.DataFrame, airports: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([flights, flight_instants(flights, destination_zones(airports))], axis=1)


def schedule(timed: pd.DataFrame) -> pd.DataFrame:
    """The day's plan: what is known of every flight before the day starts."""
    return timed[SCHEDULE_COLUMNS].reset_index(drop=True)


def hour_window(hour: datetime) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(hour)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    if start != start.floor("h"):
        raise IntradayError(f"{hour} is not the start of an hour")
    return start, start + HOUR


def departures(timed: pd.DataFrame, hour: datetime) -> pd.DataFrame:
    """Flights that left in the hour starting at ``hour`` (UTC)."""
    start, end = hour_window(hour)
    rows = timed[(timed["dep_at"] >= start) & (timed["dep_at"] < end)]
    return rows[DEPARTURE_COLUMNS].assign(event_hour=start).reset_index(drop=True)


def arrivals(timed: pd.DataFrame, hour: datetime) -> pd.DataFrame:
    """Flights that arrived in the hour starting at ``hour`` (UTC)."""
    start, end = hour_window(hour)
    rows = timed[(timed["arr_at"] >= start) & (timed["arr_at"] < end)]
    return rows[ARRIVAL_COLUMNS].assign(event_hour=start).reset_index(drop=True)


def observations(weather: pd.DataFrame, hour: datetime) -> pd.DataFrame:
    """Weather observations stamped in the hour starting at ``hour`` (UTC)."""
    start, end = hour_window(hour)
    stamps = _utc(weather["time_hour"])
    return weather[(stamps >= start) & (stamps < end)].assign(event_hour=start).reset_index(drop=True)


def hours_of(start: datetime, end: datetime) -> list[pd.Timestamp]:
    """Every UTC hour start in ``[start, end)``."""
    first, _ = hour_window(start)
    last, _ = hour_window(end)
    return list(pd.date_range(first, last, freq="h", inclusive="left"))


def last_event_hour(timed: pd.DataFrame) -> pd.Timestamp:
    """The hour by which everything about these flights has happened (latest departure or
    arrival), so a replay knows when a day's events are complete."""
    latest = pd.concat([timed["dep_at"], timed["arr_at"]]).max()
    return latest.floor("h") + timedelta(0)
