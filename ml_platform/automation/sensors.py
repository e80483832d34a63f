"""Sensors: landed files become run requests, a replay clock lands 2013 day by day, and failed
monitoring checks request retraining (at most once per cool-down)."""

import json
import time
from datetime import date, timedelta

from dagster import (
    AssetCheckKey,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from ml_platform.automation.defaults import sensor_status
from ml_platform.automation.jobs import (
    IN_ONE_PROCESS,
    INGESTION_PATH,
    LANDING_PATH,
    latest_cutoff,
    retrain_job,
    retrain_run_config,
)
from ml_platform.automation.landing_scan import (
    contiguous_ranges,
    dump_cursor,
    load_cursor,
    range_run_key,
    scan,
)
from ml_platform.config import Settings
from ml_platform.ingestion.landing import land_days
from ml_platform.ingestion.source import LandingSource, PackagedSource
from ml_platform.keys import FEATURE_DRIFT, PREDICTION_QUALITY
from ml_platform.resources.mlflow import CHAMPION, MlflowTracking

MONITORING_CHECKS = [
    AssetCheckKey(PREDICTION_QUALITY, "auc_above_floor"),
    AssetCheckKey(FEATURE_DRIFT, "psi_below_threshold"),
]

# Dagster's documented run tags for a single-run range of partitions (a ranged backfill run).
ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"


def _champion_exists(mlflow: MlflowTracking, context) -> bool:
    try:
        return mlflow.version_for(CHAMPION) is not None
    except Exception as exc:  # noqa: BLE001 - tracking down: ingest now, predict later
        context.log.warning(f"cannot reach MLflow to look for a champion ({exc}); not requesting predictions")
        return False


def build_sensors(settings: Settings) -> list[SensorDefinition]:
    """The landing, replay and retraining sensors of a code location built with ``settings``."""
    return [build_landing_sensor(settings), build_replay_sensor(settings), build_retrain_sensor(settings)]


def build_landing_sensor(settings: Settings) -> SensorDefinition:
    @sensor(
        target=LANDING_PATH,
        minimum_interval_seconds=15,
        default_status=sensor_status(settings),
        description="New or changed day files in the landing zone become single-run range requests.",
    )
    def landing_sensor(context: SensorEvaluationContext, landing: LandingSource, mlflow: MlflowTracking):
        return request_landed_days(context, settings, landing, mlflow)

    return landing_sensor


def request_landed_days(
    context: SensorEvaluationContext, settings: Settings, landing: LandingSource, mlflow: MlflowTracking
):
    previous = load_cursor(context.cursor)
    result = scan(landing, previous, settings.partition_start, settings.partition_end)
    for problem in result.problems:
        context.log.warning(f"landing file skipped: {problem}")
    if not result.ready_days:
        return SensorResult(skip_reason=skip_reason(result.problems), cursor=dump_cursor(result.files))
    selection = LANDING_PATH if _champion_exists(mlflow, context) else INGESTION_PATH
    requests = []
    for first, last in contiguous_ranges(result.ready_days):
        requests.append(
            RunRequest(
                run_key=range_run_key(first, last, result.files),
                asset_selection=list(selection.resolve(_asset_graph(context))),
                run_config=IN_ONE_PROCESS,
                tags={
                    ASSET_PARTITION_RANGE_START_TAG: first.isoformat(),
                    ASSET_PARTITION_RANGE_END_TAG: last.isoformat(),
                    "ml_platform/trigger": "landing_sensor",
                    "ml_platform/days": str((last - first).days + 1),
                },
            )
        )
    return SensorResult(run_requests=requests, cursor=dump_cursor(result.files))


def skip_reason(problems: list[str], shown: int = 3) -> str:
    """Why nothing was requested, naming the refused files (each waits for a corrected file)."""
    if not problems:
        return "no new complete days"
    more = f"; and {len(problems) - shown} more (see the log)" if len(problems) > shown else ""
    return (
        f"no new complete days; {len(problems)} file(s) refused, each day waits for a corrected "
        f"file: {'; '.join(problems[:shown])}{more}"
    )


def _asset_graph(context):
    return context.repository_def.asset_graph


def build_replay_sensor(settings: Settings) -> SensorDefinition:
    @sensor(
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.STOPPED,
        description="Replays 2013: lands the next packaged day(s) into the landing zone on every tick.",
    )
    def replay_sensor(context: SensorEvaluationContext, landing: LandingSource):
        return replay_next_days(context, settings, landing)

    return replay_sensor


def replay_next_days(context: SensorEvaluationContext, settings: Settings, landing: LandingSource):
    days_per_tick = max(settings.replay_days_per_tick, 1)
    packaged_days = PackagedSource().available_days("flights")
    end = min(packaged_days[-1] + timedelta(days=1), settings.partition_end or date.max)
    next_day = date.fromisoformat(context.cursor) if context.cursor else settings.partition_start
    if next_day >= end:
        return SkipReason(f"replay finished: every day up to {end - timedelta(days=1)} has been landed")
    days = min(days_per_tick, (end - next_day).days)
    land_days(next_day, days, landing.root_path, reference=context.cursor is None, echo=context.log.info)
    context.update_cursor((next_day + timedelta(days=days)).isoformat())
    return SkipReason(f"landed {days} day(s) from {next_day}; the landing sensor takes it from here")


def build_retrain_sensor(settings: Settings) -> SensorDefinition:
    @sensor(
        job=retrain_job,
        minimum_interval_seconds=60,
        default_status=sensor_status(settings),
        description=(
            "Requests retraining when the prediction-quality or drift check fails, once per cool-down."
        ),
    )
    def retrain_on_degradation_sensor(context: SensorEvaluationContext):
        return request_retraining(context, settings)

    return retrain_on_degradation_sensor


def request_retraining(context: SensorEvaluationContext, settings: Settings):
    cooldown = settings.retrain_cooldown_hours * 3600
    state = json.loads(context.cursor) if context.cursor else {"seen": 0, "last_request": 0.0}
    latest = context.instance.event_log_storage.get_latest_asset_check_execution_by_key(MONITORING_CHECKS)
    failures, newest = [], state["seen"]
    for key, record in latest.items():
        newest = max(newest, record.id)
        if record.id <= state["seen"] or record.event is None:
            continue
        evaluation = record.event.dagster_event.event_specific_data
        if evaluation is not None and not evaluation.passed:
            failures.append(
                f"{key.asset_key.to_user_string()}:{key.name} failed for {record.partition or 'latest'}"
            )
    now = time.time()
    state["seen"] = newest
    if not failures:
        context.update_cursor(json.dumps(state))
        return SkipReason("no new failed quality or drift check")
    if now - state["last_request"] < cooldown:
        context.update_cursor(json.dumps(state))
        wait = (cooldown - (now - state["last_request"])) / 3600
        return SkipReason(f"{len(failures)} failed check(s), but in cool-down for {wait:.1f} more hour(s)")
    cutoff = latest_cutoff(context.instance, settings.holdout_days, settings.partition_start)
    if cutoff is None:
        context.update_cursor(json.dumps(state))
        return SkipReason("checks failed but no full holdout of features is materialized to retrain on")
    state["last_request"] = now
    context.update_cursor(json.dumps(state))
    return RunRequest(
        run_key=f"retrain-degraded:{cutoff.isoformat()}:{newest}",
        run_config=retrain_run_config(cutoff, settings.training_window_days, settings.holdout_days),
        tags={
            "ml_platform/trigger": "monitoring",
            "ml_platform/retrain_reason": "; ".join(failures)[:1000],
            "ml_platform/cutoff": cutoff.isoformat(),
        },
    )
