"""Sensors of the intraday feed: landed schedules and hourly files become run requests, and a
replay clock lands the packaged 2013 feed hour by hour. The daily sensors are untouched."""

from datetime import UTC, datetime, timedelta

from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    PartitionsDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    sensor,
)

from ml_platform.automation.defaults import sensor_status
from ml_platform.automation.intraday_scan import Bounds, run_key, scan_intraday
from ml_platform.automation.jobs import IN_ONE_PROCESS
from ml_platform.automation.landing_scan import dump_cursor, load_cursor
from ml_platform.config import Settings
from ml_platform.ingestion import hourly
from ml_platform.ingestion.delivery import hour_name
from ml_platform.ingestion.landing import land_hours, land_schedule
from ml_platform.ingestion.source import LandingSource, PackagedSource
from ml_platform.keys import RAW_HOURLY, RAW_SCHEDULE
from ml_platform.partitions import daily_partitions_for, hour_key, hourly_partitions_for

HOURS_PER_TICK = 1


def build_intraday_jobs(daily: PartitionsDefinition, hours: PartitionsDefinition) -> tuple:
    """A job per partitioning (a run has one): the day's schedule, and the tables of an hour (a
    run selects those of them whose files arrived)."""
    schedule = define_asset_job(
        "ingest_schedule",
        selection=AssetSelection.assets(RAW_SCHEDULE),
        partitions_def=daily,
        config=IN_ONE_PROCESS,
        description="The schedule of a day, delivered before the day.",
        tags={"ml_platform/flow": "intraday"},
    )
    hourly_job = define_asset_job(
        "ingest_hours",
        selection=AssetSelection.assets(*RAW_HOURLY.values()),
        partitions_def=hours,
        config=IN_ONE_PROCESS,
        description="Departures, arrivals and observations of a UTC hour.",
        tags={"ml_platform/flow": "intraday"},
    )
    return schedule, hourly_job


def build_intraday_sensors(
    settings: Settings, hours_per_tick: int = HOURS_PER_TICK
) -> list[SensorDefinition]:
    jobs = build_intraday_jobs(daily_partitions_for(settings), hourly_partitions_for(settings))
    return [
        build_intraday_landing_sensor(settings, *jobs),
        build_intraday_replay_sensor(settings, hours_per_tick),
    ]


def bounds_for(settings: Settings) -> Bounds:
    hours = hourly_partitions_for(settings)
    end = hours.end
    return Bounds(
        settings.partition_start,
        settings.partition_end,
        hours.start.astimezone(UTC),
        end.astimezone(UTC) if end is not None else None,
    )


def build_intraday_landing_sensor(settings: Settings, schedule_job, hours_job) -> SensorDefinition:
    @sensor(
        jobs=[schedule_job, hours_job],
        minimum_interval_seconds=15,
        default_status=sensor_status(settings),
        description=(
            "New or changed schedule and hourly files become runs: raw/schedule for the day, and "
            "for each hour the hourly tables whose files arrived."
        ),
    )
    def intraday_landing_sensor(context: SensorEvaluationContext, landing: LandingSource):
        return request_intraday(context, settings, landing, (schedule_job.name, hours_job.name))

    return intraday_landing_sensor


def request_intraday(context: SensorEvaluationContext, settings: Settings, landing: LandingSource, jobs):
    schedule_job, hours_job = jobs
    result = scan_intraday(landing, load_cursor(context.cursor), bounds_for(settings))
    for problem in result.problems:
        context.log.warning(f"intraday file skipped: {problem}")
    requests = []
    for day in result.schedule_days:
        rels = [r for r in result.files if r.startswith(f"schedule/{day.isoformat()}.")]
        requests.append(
            _request(
                schedule_job,
                run_key("schedule", day.isoformat(), rels, result.files),
                day.isoformat(),
                [RAW_SCHEDULE],
            )
        )
    for hour, tables in result.hours.items():
        rels = [r for r in result.files if r.split("/")[0] in tables and hour_name(hour) in r]
        key = hour_key(hour)
        requests.append(
            _request(
                hours_job, run_key("hour", key, rels, result.files), key, [RAW_HOURLY[t] for t in tables]
            )
        )
    cursor = dump_cursor(result.files)
    if not requests:
        shown = "; ".join(result.problems[:3])
        return SensorResult(
            skip_reason=f"no new intraday files{f'; refused: {shown}' if shown else ''}", cursor=cursor
        )
    return SensorResult(run_requests=requests, cursor=cursor)


def _request(job: str, key: str, partition: str, assets: list) -> RunRequest:
    return RunRequest(
        job_name=job,
        run_key=key,
        partition_key=partition,
        asset_selection=assets,
        tags={"ml_platform/trigger": "intraday_landing_sensor"},
    )


def build_intraday_replay_sensor(settings: Settings, hours_per_tick: int) -> SensorDefinition:
    @sensor(
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.STOPPED,
        description=(
            "Replays 2013's intraday feed: lands the next UTC hour(s) of departures, arrivals and "
            "observations on every tick, each day's schedule before its first hour."
        ),
    )
    def intraday_replay_sensor(context: SensorEvaluationContext, landing: LandingSource):
        return replay_next_hours(context, settings, landing, hours_per_tick)

    return intraday_replay_sensor


def replay_next_hours(context, settings: Settings, landing: LandingSource, hours_per_tick: int):
    """The cursor is the next hour to land (``YYYY-MM-DDTHH``, UTC)."""
    bounds = bounds_for(settings)
    _, last = hourly.packaged_hour_range()
    end = min(last + timedelta(hours=1), bounds.end_hour or datetime.max.replace(tzinfo=UTC))
    if context.cursor:
        next_hour = datetime.strptime(context.cursor, "%Y-%m-%dT%H").replace(tzinfo=UTC)
    else:
        next_hour = bounds.first_hour
    if next_hour >= end:
        return SkipReason(f"intraday replay finished: every hour before {hour_name(end)} has been landed")
    count = min(max(hours_per_tick, 1), int((end - next_hour) / timedelta(hours=1)))
    days = set(PackagedSource().available_days("schedule"))
    for hour in hourly.hours_between(next_hour, next_hour + timedelta(hours=count)):
        # A day's schedule lands before its first UTC hour (the replay's first hour included).
        if (hour.hour == 0 or hour == next_hour) and hour.date() in days:
            schedule = landing.root_path / "schedule" / f"{hour.date().isoformat()}.parquet"
            if not schedule.exists():
                land_schedule(hour.date(), landing.root_path)
        land_hours(hour, 1, landing.root_path)
    context.update_cursor(hour_name(next_hour + timedelta(hours=count)))
    return SkipReason(
        f"landed {count} hour(s) from {hour_name(next_hour)}; the intraday landing sensor takes it from here"
    )
