"""The trigger of the hourly nowcast: hour P is requested once the data it reads has landed.

Hour P scores the flights departing in the hour P + h from the events before P, so it waits for
hour P - 1 of departures, arrivals and observations, and for the schedule of the New York day
those flights belong to. Hours are requested in order; the cursor is the last one requested. With
no nowcast champion nothing is requested (and the cursor stays), with the reason shown."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from dagster import (
    AssetSelection,
    HourlyPartitionsDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    sensor,
)

from ml_platform.automation.defaults import sensor_status
from ml_platform.automation.jobs import IN_ONE_PROCESS
from ml_platform.config import Settings
from ml_platform.keys import NOWCAST_CHAMPION, NOWCAST_PREDICTIONS, RAW_HOURLY, RAW_SCHEDULE
from ml_platform.partitions import hour_key, hourly_partitions_for
from ml_platform.resources.mlflow import CHAMPION, MlflowTracking

HOURS_PER_TICK = 24
NOWCAST_HOURS = 2  # the serving asset's default (``NowcastServingConfig``)
NEW_YORK = ZoneInfo("America/New_York")
HOUR = timedelta(hours=1)


def build_nowcast_job(hourly: HourlyPartitionsDefinition):
    return define_asset_job(
        "nowcast_predictions",
        selection=AssetSelection.assets(NOWCAST_PREDICTIONS),
        partitions_def=hourly,
        config=IN_ONE_PROCESS,
        description="The flights predicted at one UTC hour, scored by the nowcast champion.",
        tags={"ml_platform/flow": "nowcast"},
    )


def build_nowcast_sensor(settings: Settings) -> SensorDefinition:
    hourly = hourly_partitions_for(settings)
    job = build_nowcast_job(hourly)

    @sensor(
        job=job,
        minimum_interval_seconds=30,
        default_status=sensor_status(settings),
        description=(
            "Requests nowcast/predictions for hour P once hour P-1 of departures, arrivals and "
            "observations and the schedule of the flights' day have landed."
        ),
    )
    def nowcast_sensor(context: SensorEvaluationContext, mlflow: MlflowTracking):
        return request_hours(context, hourly, mlflow)

    return nowcast_sensor


def schedule_day(hour: datetime) -> str:
    """The New York day of the flights predicted at ``hour`` (they depart h hours later)."""
    return (hour + timedelta(hours=NOWCAST_HOURS)).astimezone(NEW_YORK).date().isoformat()


def request_hours(context, hourly: HourlyPartitionsDefinition, mlflow: MlflowTracking):
    tracking = mlflow.nowcast()
    if tracking.version_for(CHAMPION) is None:
        return SkipReason(
            f"no nowcast champion: no version of {tracking.registered_model_name} carries "
            f"@champion; materialize {NOWCAST_CHAMPION.to_user_string()} first"
        )
    instance = context.instance
    landed = {key: instance.get_materialized_partitions(key) for key in RAW_HOURLY.values()}
    schedules = instance.get_materialized_partitions(RAW_SCHEDULE)
    start = hourly.start.astimezone(UTC)
    hour = (
        datetime.strptime(context.cursor, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC) + HOUR
        if context.cursor
        else start + HOUR
    )
    requests, waiting = [], ""
    end = hourly.end.astimezone(UTC) if hourly.end else None
    while len(requests) < HOURS_PER_TICK and (end is None or hour < end):
        previous = hour_key(hour - HOUR)
        missing = [k.to_user_string() for k, keys in landed.items() if previous not in keys]
        if schedule_day(hour) not in schedules:
            missing.append(f"{RAW_SCHEDULE.to_user_string()}[{schedule_day(hour)}]")
        if missing:
            waiting = f"hour {hour_key(hour)} waits for {', '.join(missing)} (hour {previous})"
            break
        requests.append(
            RunRequest(
                run_key=f"nowcast-{hour_key(hour)}",
                partition_key=hour_key(hour),
                tags={"ml_platform/trigger": "nowcast_sensor"},
            )
        )
        hour += HOUR
    if not requests:
        return SkipReason(waiting or "every hour of the partitions has been requested")
    return SensorResult(run_requests=requests, cursor=requests[-1].partition_key)
