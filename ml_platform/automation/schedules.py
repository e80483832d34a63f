"""Daily ingestion of the newest day upstream has, and weekly retraining on the latest window."""

from dagster import (
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from ml_platform.automation.defaults import schedule_status
from ml_platform.automation.jobs import latest_cutoff, retrain_job, retrain_run_config
from ml_platform.config import Settings
from ml_platform.ingestion.source import FlightSource
from ml_platform.keys import FLIGHT_FEATURES
from ml_platform.partitions import latest_complete_day


def build_schedules(settings: Settings, ingest_days_job) -> list[ScheduleDefinition]:
    """The schedules of a code location built with ``settings``; ``ingest_days_job`` carries its
    partitions."""

    @schedule(
        job=ingest_days_job,
        cron_schedule="0 6 * * *",
        execution_timezone="UTC",
        default_status=schedule_status(settings),
        description=(
            "Every morning: ingest the newest day that upstream has delivered and the partitions allow."
        ),
    )
    def daily_ingestion_schedule(context: ScheduleEvaluationContext, source: FlightSource):
        now = context.scheduled_execution_time
        last_day = latest_complete_day(now, settings.partition_start, settings.partition_end)
        if last_day is None:
            return SkipReason(f"no partition has ended by {now:%Y-%m-%d %H:%M}")
        available = [d for d in source.available_days("flights") if d <= last_day]
        if not available:
            return SkipReason(f"upstream has no day up to {last_day}")
        newest = max(available).isoformat()
        return RunRequest(
            run_key=f"ingest:{newest}",
            partition_key=newest,
            tags={"ml_platform/trigger": "daily_schedule"},
        )

    @schedule(
        job=retrain_job,
        cron_schedule="0 4 * * 1",
        execution_timezone="UTC",
        default_status=schedule_status(settings),
        description="Every Monday: retrain, evaluate and gate on the newest full training window.",
    )
    def weekly_retraining_schedule(context: ScheduleEvaluationContext):
        cutoff = latest_cutoff(context.instance, settings.holdout_days, settings.partition_start)
        if cutoff is None:
            return SkipReason(
                f"no {FLIGHT_FEATURES.path[-1]} partitions for a full holdout "
                f"({settings.holdout_days} days) have been materialized yet"
            )
        return RunRequest(
            run_key=f"retrain:{cutoff.isoformat()}",
            run_config=retrain_run_config(cutoff, settings.training_window_days, settings.holdout_days),
            tags={"ml_platform/trigger": "weekly_schedule", "ml_platform/cutoff": cutoff.isoformat()},
        )

    return [daily_ingestion_schedule, weekly_retraining_schedule]
