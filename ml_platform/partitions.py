"""The daily partitioning of the platform (a UTC calendar day of scheduled departures) and the
hourly one of the intraday feed (a UTC hour of events)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from dagster import DailyPartitionsDefinition, HourlyPartitionsDefinition

from ml_platform.config import Settings


def build_daily_partitions(start: date, end: date | None) -> DailyPartitionsDefinition:
    """End is exclusive; ``None`` leaves the partitions open-ended for a live source."""
    return DailyPartitionsDefinition(
        start_date=start.isoformat(),
        end_date=end.isoformat() if end else None,
        timezone="UTC",
        end_offset=0,
    )


def daily_partitions_for(settings: Settings) -> DailyPartitionsDefinition:
    """The partitions of a code location built with ``settings``."""
    return build_daily_partitions(settings.partition_start, settings.partition_end)


def build_hourly_partitions(start: date, end: date | None) -> HourlyPartitionsDefinition:
    """UTC hours from the first day's midnight. A bounded range runs one day past the daily end:
    the last day's flights depart and arrive after its UTC midnight (end exclusive, None open)."""
    return HourlyPartitionsDefinition(
        start_date=f"{start.isoformat()}-00:00",
        end_date=f"{(end + timedelta(days=1)).isoformat()}-00:00" if end else None,
        timezone="UTC",
        end_offset=0,
    )


def hourly_partitions_for(settings: Settings) -> HourlyPartitionsDefinition:
    return build_hourly_partitions(settings.partition_start, settings.partition_end)


HOUR_KEY_FORMAT = "%Y-%m-%d-%H:%M"  # Dagster's hourly partition keys: 2013-06-01-14:00


def hour_key(hour: datetime) -> str:
    """The hourly partition key of a UTC hour."""
    return hour.astimezone(UTC).strftime(HOUR_KEY_FORMAT)


def day_of(partition_key: str) -> date:
    """Parse a partition key, refusing anything that is not a calendar day."""
    try:
        return date.fromisoformat(partition_key)
    except ValueError as exc:
        raise ValueError(f"partition key {partition_key!r} is not a day (YYYY-MM-DD)") from exc


def days_in(start: date, end: date) -> list[date]:
    """The days of a half-open window [start, end)."""
    return [start + timedelta(days=i) for i in range((end - start).days)]


def window_dates(start: datetime, end: datetime) -> tuple[date, date]:
    """A partition time window as half-open dates; windows are whole UTC days."""
    if start.time() != time(0) or end.time() != time(0):
        raise ValueError(f"time window {start}..{end} does not fall on day boundaries")
    return start.date(), end.date()


def latest_complete_day(now: datetime, start: date, end: date | None) -> date | None:
    """The newest partition of [start, end) whose day has ended by ``now``."""
    last = now.date() - timedelta(days=1)
    if end is not None:
        last = min(last, end - timedelta(days=1))
    return last if last >= start else None
