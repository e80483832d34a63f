"""The intraday raw tables of a range of days, from the packaged data, in a DuckDB file, and the
point-in-time dbt models built over them: what the leak tests and the AUC measurement run on.

The hourly tables hold exactly the rows ``intraday.departures/arrivals/observations`` deliver for
each hour; they are cut by flooring each event's instant (one pass, not one slice per hour)."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from ml_platform.config import DBT_PROJECT_DIR
from ml_platform.ingestion import intraday
from ml_platform.ingestion.source import PackagedSource

PIT_MODELS = ("day_ahead_features", "nowcast_features")


@dataclass
class RawDays:
    """The raw tables of a range of days, as frames (a test perturbs them before writing)."""

    flights: pd.DataFrame
    schedule: pd.DataFrame
    departures: pd.DataFrame
    arrivals: pd.DataFrame
    observations: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def timed_flights(start: date, end: date) -> pd.DataFrame:
    source = PackagedSource()
    flights = source.read_days("flights", start, end).frame
    return intraday.with_instants(flights, source.read_reference("airports").frame)


def raw_days(start: date, end: date) -> RawDays:
    """Flights scheduled on days ``[start, end)`` with all their events, and the weather of those
    days (and of the day after, where late events of the last day happen)."""
    timed = timed_flights(start, end)
    weather = PackagedSource().read_days("weather", start, end + timedelta(days=1)).frame
    return RawDays(
        flights=timed.drop(columns=["sched_dep_at", "dep_at", "sched_arr_at", "arr_at"]),
        schedule=intraday.schedule(timed),
        departures=events(timed, "dep_at", intraday.DEPARTURE_COLUMNS),
        arrivals=events(timed, "arr_at", intraday.ARRIVAL_COLUMNS),
        observations=observations(weather),
    )


def events(timed: pd.DataFrame, instant: str, columns: list[str]) -> pd.DataFrame:
    """Every event of these flights with the hour it is delivered in (the hour its instant is in)."""
    rows = timed[timed[instant].notna()].sort_values(instant, kind="stable")
    return rows[columns].assign(event_hour=rows[instant].dt.floor("h")).reset_index(drop=True)


def observations(weather: pd.DataFrame) -> pd.DataFrame:
    stamps = pd.to_datetime(weather["time_hour"], utc=True).dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    return weather.assign(event_hour=stamps.dt.floor("h")).reset_index(drop=True)


INTRADAY = ("schedule", "departures", "arrivals", "observations")


def write_raw(path: Path, raw: RawDays, only: tuple[str, ...] | None = None) -> None:
    """Replace the raw tables in the DuckDB file at ``path`` with these frames (``only``: just
    those, e.g. ``INTRADAY`` beside a warehouse whose ``raw.flights`` ingestion wrote)."""
    with duckdb.connect(str(path)) as conn:
        conn.execute("set TimeZone = 'UTC'")
        conn.execute("create schema if not exists raw")
        for name, frame in raw.tables().items():
            if only is not None and name not in only:
                continue
            days = [c for c in ("flight_date", "weather_date") if c in frame.columns]
            replace = f"replace ({', '.join(f'cast({c} as date) as {c}' for c in days)})" if days else ""
            conn.register("frame", frame)
            conn.execute(f"create or replace table raw.{name} as select * {replace} from frame")  # noqa: S608
            conn.unregister("frame")


def build_models(path: Path, start: date, end: date, nowcast_hours: int | str = 2, threads: int = 1) -> None:
    """``dbt build`` of the point-in-time models and their tests for the window ``[start, end)``,
    into the DuckDB file at ``path`` (dbt's own target folder is left alone)."""
    from dbt.cli.main import dbtRunner

    variables = {"min_date": start.isoformat(), "max_date": end.isoformat(), "nowcast_hours": nowcast_hours}
    previous = os.environ.get("ML_PLATFORM_WAREHOUSE")
    os.environ["ML_PLATFORM_WAREHOUSE"] = str(path)
    try:
        args = ["build", "--quiet", "--select", *PIT_MODELS, "--vars", json.dumps(variables)]
        args += ["--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
        args += ["--target-path", _target_path(), "--threads", str(threads)]
        result = dbtRunner().invoke(args)
    finally:
        if previous is None:
            os.environ.pop("ML_PLATFORM_WAREHOUSE", None)
        else:
            os.environ["ML_PLATFORM_WAREHOUSE"] = previous
    if not result.success:
        failed = [r.message for r in getattr(result.result, "results", []) if r.status in ("error", "fail")]
        raise RuntimeError(f"dbt build failed: {result.exception or failed}")


@functools.cache
def _target_path() -> str:
    """One dbt target folder per process, not the project's: a build with the same vars re-uses
    the previous parse."""
    return tempfile.mkdtemp(prefix="pit-dbt-")


def read_features(path: Path, model: str, read_only: bool = False) -> pd.DataFrame:
    """A built model's rows. Read-only lets several processes read at once; a process that ran
    dbt in-process still holds the file open read-write, and must read the same way."""
    if model not in PIT_MODELS:
        raise ValueError(f"unknown model {model!r}")
    with duckdb.connect(str(path), read_only=read_only) as conn:
        conn.execute("set TimeZone = 'UTC'")
        return conn.execute(f"select * from features_staging.{model} order by flight_id").fetchdf()  # noqa: S608
