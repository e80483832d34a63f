"""Landing days from the packaged dataset into a landing directory, as upstream would."""

from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd

from ml_platform.ingestion import hourly
from ml_platform.ingestion.delivery import hour_name
from ml_platform.ingestion.schemas import DAILY_TABLES, HOURLY_TABLES, REFERENCE_TABLES
from ml_platform.ingestion.source import EMPTY_DIR, REFERENCE_DIR, PackagedSource, write_frame_atomically

FORMATS = ("parquet", "csv")


def declare_empty(root: Path, table: str, day: date) -> Path:
    """Upstream's word that ``day`` of ``table`` really has no rows: without it an empty delivery
    is refused, since upstream fills every day."""
    marker = Path(root) / EMPTY_DIR / table / day.isoformat()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"upstream has no {table} rows for {day.isoformat()}\n")
    return marker


def land_days(
    start: date, days: int, root: Path, fmt: str = "parquet", *, reference: bool = True, echo=print
) -> list[Path]:
    """Write ``days`` days from ``start`` (flights and weather, one file per day and table).

    A day with no rows upstream is still delivered, as an empty file with the declared columns,
    so that "nothing happened" is distinguishable from "nothing arrived", together with the marker
    ``<root>/empty/<table>/<day>`` that says the day is really empty (an empty file alone is
    refused: upstream fills every day).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    source = PackagedSource()
    # A day the packaged data does not cover would land as an empty file, i.e. as "no flights
    # that day": refuse it instead of fabricating a delivery.
    covered = source.available_days("flights")
    last = start + timedelta(days=days - 1)
    if start < covered[0] or last > covered[-1]:
        raise ValueError(
            f"{start.isoformat()}..{last.isoformat()} is not inside the packaged data "
            f"({covered[0].isoformat()}..{covered[-1].isoformat()})"
        )
    root = Path(root)
    written: list[Path] = []
    if reference:
        for table in REFERENCE_TABLES:
            path = root / REFERENCE_DIR / f"{table}.parquet"
            write_frame_atomically(source.read_reference(table).frame, path)
            written.append(path)
    for offset in range(days):
        day = start + timedelta(days=offset)
        for table in DAILY_TABLES:
            frame = source.read_days(table, day, day + timedelta(days=1)).frame
            path = root / table / f"{day.isoformat()}.{fmt}"
            if frame.empty:
                written.append(declare_empty(root, table, day))
            write_frame_atomically(frame, path)
            written.append(path)
        echo(f"landed {day.isoformat()} ({offset + 1}/{days}) into {root}")
    return written


def land_schedule(day: date, root: Path, fmt: str = "parquet") -> Path:
    """The schedule of ``day`` (every flight planned), as upstream delivers it before the day."""
    frame = PackagedSource().read_days("schedule", day, day + timedelta(days=1)).frame
    path = Path(root) / "schedule" / f"{day.isoformat()}.{fmt}"
    if frame.empty:
        declare_empty(root, "schedule", day)
    write_frame_atomically(frame, path)
    return path


def land_hours(start: datetime, hours: int, root: Path, fmt: str = "parquet") -> list[Path]:
    """The departures, arrivals and observations of ``hours`` UTC hours from ``start``, one file
    per table and hour; a quiet hour is an empty file with the declared columns (no marker: an
    hour without departures is normal at night)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    first = hourly.utc_hour(start)
    source, written = PackagedSource(), []
    every = hourly.hours_between(first, first + timedelta(hours=hours))
    for table in HOURLY_TABLES:
        # One read of the whole span (hour by hour inside), then one file per hour.
        frame = source.read_hours(table, first, first + timedelta(hours=hours)).frame
        by_hour = frame.groupby(frame["event_hour"], sort=False).indices
        for hour in every:
            rows = by_hour.get(pd.Timestamp(hour))
            part = frame.iloc[rows if rows is not None else []].reset_index(drop=True)
            path = Path(root) / table / f"{hour_name(hour)}.{fmt}"
            write_frame_atomically(part, path)
            written.append(path)
    return written


def land_intraday(start: date, days: int, root: Path, fmt: str = "parquet", echo=print) -> list[Path]:
    """For each day: its schedule, then its 24 UTC hours (the order a live feed delivers in)."""
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    written: list[Path] = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        written.append(land_schedule(day, root, fmt))
        written += land_hours(hourly.utc_hour(datetime(day.year, day.month, day.day)), 24, root, fmt)
        echo(f"landed the schedule and 24 hours of {day.isoformat()} ({offset + 1}/{days}) into {root}")
    return written
