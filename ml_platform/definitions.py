"""The one code location: every domain's assets, checks and automation, with global policy.

``build_definitions(settings)`` builds everything that depends on the settings (partitions,
training windows, which automation starts by itself) from the settings it is given;
``defs`` below is the only place the code location reads them from the environment.
"""

from collections.abc import Sequence

from dagster import DailyPartitionsDefinition, Definitions

from ml_platform.automation.alerts import build_alert_sensor
from ml_platform.automation.conditions import build_automation_condition_sensor
from ml_platform.automation.execution import build_executor
from ml_platform.automation.freshness import (
    build_freshness_checks,
    build_freshness_sensor,
    freshness_checks_job,
)
from ml_platform.automation.intraday_sensors import build_intraday_sensors
from ml_platform.automation.jobs import build_ingest_days_job, retrain_job
from ml_platform.automation.policy import build_policy
from ml_platform.automation.schedules import build_schedules
from ml_platform.automation.sensors import build_sensors
from ml_platform.config import Settings, load_settings
from ml_platform.features.assets import build_dbt_features
from ml_platform.features.pit_assets import build_pit_features
from ml_platform.ingestion.assets import build_raw_daily_assets, raw_reference_assets
from ml_platform.ingestion.hourly_assets import build_intraday_assets
from ml_platform.keys import CANDIDATES, Candidate
from ml_platform.monitoring.assets import build_monitoring_assets
from ml_platform.monitoring.backtest import build_backtest
from ml_platform.nowcast.sensor import build_nowcast_sensor
from ml_platform.nowcast.serving import build_nowcast_predictions
from ml_platform.nowcast.training import build_nowcast_training
from ml_platform.partitions import daily_partitions_for, hourly_partitions_for
from ml_platform.resources import build_resources
from ml_platform.resources.warehouse_engines import engine_for
from ml_platform.serving.assets import build_predictions
from ml_platform.training.assets import build_training_set
from ml_platform.training.candidates import build_candidate_assets
from ml_platform.training.selection import build_model_selection, champion_model, champion_passed_gate


def build_assets(
    settings: Settings, partitions: DailyPartitionsDefinition, candidates: Sequence[Candidate]
) -> list:
    """Every asset of the platform, built for ``settings``, with ``candidates`` competing."""
    return [
        *build_raw_daily_assets(partitions),
        *raw_reference_assets,
        *build_intraday_assets(partitions, hourly_partitions_for(settings)),
        build_dbt_features(partitions, engine_for(settings.warehouse, settings.lake_data_path).database),
        build_pit_features(partitions, engine_for(settings.warehouse, settings.lake_data_path).database),
        build_training_set(settings),
        *build_candidate_assets(candidates),
        build_model_selection(candidates),
        champion_model,
        build_predictions(partitions),
        *build_nowcast_training(settings),
        build_nowcast_predictions(hourly_partitions_for(settings)),
        *build_monitoring_assets(partitions),
        build_backtest(settings),
    ]


def build_definitions(
    settings: Settings | None = None, candidates: Sequence[Candidate] = CANDIDATES
) -> Definitions:
    """The code location for ``settings`` (None: read from the environment) with ``candidates``
    competing for champion. Every call builds its own assets, sensors and schedules, so
    definitions built from different settings in one process share nothing that depends on them."""
    settings = settings or load_settings()
    partitions = daily_partitions_for(settings)
    ingest_days_job = build_ingest_days_job(partitions)
    defs = Definitions(
        assets=build_assets(settings, partitions, candidates),
        asset_checks=[champion_passed_gate, build_freshness_checks(settings, partitions)],
        jobs=[ingest_days_job, retrain_job, freshness_checks_job],
        schedules=build_schedules(settings, ingest_days_job),
        sensors=[
            *build_sensors(settings),
            *build_intraday_sensors(settings),
            build_nowcast_sensor(settings),
            build_alert_sensor(settings),
            build_freshness_sensor(settings, partitions),
            build_automation_condition_sensor(settings),
        ],
        resources=build_resources(settings),
        executor=build_executor(settings),
    )
    # Freshness and automation conditions are platform policy: set here, once, for every asset.
    return defs.map_asset_specs(func=build_policy(settings))


defs = build_definitions()
