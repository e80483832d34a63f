"""Freshness of the daily assets, judged on the right clock.

A day is due by 09:00 UTC the next morning. With open-ended partitions (production) "now" is the
wall clock. When the partitions end in the past (the packaged 2013, or a replay of it) the wall
clock would call every day overdue, so "now" is the data's own clock: the end of the newest day
upstream has delivered (a file in the landing zone, or a day already ingested). A correct
materialization of 2013 is then fresh, and a day that upstream delivered past but the platform
never ingested is overdue. The same check runs after each materialization and, with automation
on, from a sensor whenever the due day moves.

The time-window freshness policies, judged by the daemon on the wall clock, are in ``policy.py``.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    MetadataValue,
    PartitionsDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    define_asset_job,
    multi_asset_check,
    sensor,
)

from ml_platform.automation.defaults import sensor_status
from ml_platform.config import Settings
from ml_platform.ingestion.source import LandingSource
from ml_platform.keys import FLIGHT_FEATURES, PREDICTIONS, RAW_DAILY

DAILY_KEYS = [*RAW_DAILY, FLIGHT_FEATURES, PREDICTIONS]
CHECK_NAME = "freshness_check"
CHECK_KEYS = [AssetCheckKey(key, CHECK_NAME) for key in DAILY_KEYS]
DEADLINE_HOUR = 9


@dataclass(frozen=True)
class Clock:
    """The "now" freshness is judged at, and what it was read from (shown with every result)."""

    now: datetime | None  # None: upstream has delivered nothing yet, so nothing is due
    reading: str


def wall_clock() -> datetime:
    return datetime.now(UTC)


def due_day(now: datetime) -> date:
    """The newest day whose deadline (09:00 UTC the next morning) has passed by ``now``."""
    return (now.astimezone(UTC) - timedelta(hours=DEADLINE_HOUR)).date() - timedelta(days=1)


def data_clock(newest_delivered: date | None) -> Clock:
    """The data's own clock: the end of the newest delivered day."""
    if newest_delivered is None:
        return Clock(None, "data clock: upstream has delivered no day yet")
    now = datetime.combine(newest_delivered + timedelta(days=1), time(0), tzinfo=UTC)
    return Clock(now, f"data clock: upstream has delivered up to {newest_delivered}")


LOOKBACK_DAYS = 31


def materialized_days(
    instance: DagsterInstance, key: AssetKey, partitions: PartitionsDefinition, until: date | None = None
) -> set[date]:
    """The asset's stored days (a day whose newest run failed or runs still holds its data): all
    of them inside the partitions, or the month up to ``until``."""
    keys = set(partitions.get_partition_keys()) & instance.get_materialized_partitions(key)
    days = {date.fromisoformat(k) for k in keys}
    if until is not None:
        days = {d for d in days if until - timedelta(days=LOOKBACK_DAYS) <= d <= until}
    return days


def clock_for(
    settings: Settings, instance: DagsterInstance, partitions: PartitionsDefinition, landing: LandingSource
) -> Clock:
    if settings.partition_end is None:
        return Clock(wall_clock(), "wall clock")
    delivered = set(landing.available_days("flights")) if settings.source == "landing" else set()
    delivered = {d for d in delivered if settings.partition_start <= d < settings.partition_end}
    for key in RAW_DAILY:
        delivered |= materialized_days(instance, key, partitions)
    return data_clock(max(delivered, default=None))


@dataclass(frozen=True)
class Verdict:
    passed: bool
    description: str
    expected_day: date | None


def expected_day(clock: Clock, end: date | None) -> date | None:
    """The newest day that should be in at ``clock``, inside partitions ending at ``end``."""
    if clock.now is None:
        return None
    due = due_day(clock.now)
    return min(due, end - timedelta(days=1)) if end is not None else due


def judge(clock: Clock, materialized: set[date], start: date, end: date | None) -> Verdict:
    """Whether an asset holding ``materialized`` days is fresh at ``clock`` (partitions [start, end))."""
    due = expected_day(clock, end)
    if due is None or due < start:
        return Verdict(True, f"No day is due yet ({clock.reading}).", None)
    if due in materialized:
        return Verdict(True, f"Fresh: {due} is in ({clock.reading}).", due)
    newest = max((d for d in materialized if d <= due), default=None)
    since = f"the newest day in is {newest}" if newest else f"no day of the {LOOKBACK_DAYS} before is in"
    return Verdict(False, f"Overdue: {due} was due and is not in; {since} ({clock.reading}).", due)


def build_freshness_checks(settings: Settings, partitions: PartitionsDefinition):
    """One WARN check per daily asset, on the clock ``settings`` call for."""

    @multi_asset_check(
        specs=[
            AssetCheckSpec(
                CHECK_NAME, asset=key, description="The newest due day is in (09:00 UTC next morning)."
            )
            for key in DAILY_KEYS
        ],
        can_subset=True,
        name="daily_freshness_checks",
    )
    def daily_freshness_checks(
        context: AssetCheckExecutionContext, landing: LandingSource
    ) -> Iterator[AssetCheckResult]:
        clock = clock_for(settings, context.instance, partitions, landing)
        for check_key in context.selected_asset_check_keys:
            until = expected_day(clock, settings.partition_end)
            days = materialized_days(context.instance, check_key.asset_key, partitions, until)
            verdict = judge(clock, days, settings.partition_start, settings.partition_end)
            metadata = {"clock": MetadataValue.text(clock.reading)}
            if verdict.expected_day:
                metadata["expected_partition"] = MetadataValue.text(verdict.expected_day.isoformat())
            yield AssetCheckResult(
                asset_key=check_key.asset_key,
                check_name=CHECK_NAME,
                passed=verdict.passed,
                severity=AssetCheckSeverity.WARN,
                description=verdict.description,
                metadata=metadata,
            )

    return daily_freshness_checks


freshness_checks_job = define_asset_job(
    "freshness_checks",
    selection=AssetSelection.checks(*CHECK_KEYS),
    description="The daily assets' freshness checks, on the clock the settings call for.",
)


def build_freshness_sensor(settings: Settings, partitions: PartitionsDefinition) -> SensorDefinition:
    """Runs the checks whenever the due day moves: a stale day shows without a materialization."""

    @sensor(
        job=freshness_checks_job,
        name="freshness_checks_sensor",
        minimum_interval_seconds=300,
        default_status=sensor_status(settings),
        description="Runs the daily assets' freshness checks when the due day moves.",
    )
    def freshness_checks_sensor(context: SensorEvaluationContext, landing: LandingSource):
        clock = clock_for(settings, context.instance, partitions, landing)
        expected = expected_day(clock, settings.partition_end)
        due = expected.isoformat() if expected else "none"
        if context.cursor == due:
            return SkipReason(f"due day unchanged ({due}; {clock.reading})")
        context.update_cursor(due)
        # No run key: the cursor already asks once per move, and a replay run again must ask again.
        return RunRequest(tags={"ml_platform/due_day": due})

    return freshness_checks_sensor
