"""The one code location: every domain's assets, checks and automation, with global policy."""

from dagster import Definitions

from ml_platform.automation.alerts import alert_on_run_failure
from ml_platform.automation.conditions import automation_condition_sensor
from ml_platform.automation.execution import executor
from ml_platform.automation.freshness import (
    apply_policy,
    partition_freshness_checks,
    partition_freshness_sensor,
)
from ml_platform.automation.jobs import ingest_days_job, retrain_job
from ml_platform.automation.schedules import daily_ingestion_schedule, weekly_retraining_schedule
from ml_platform.automation.sensors import landing_sensor, replay_sensor, retrain_on_degradation_sensor
from ml_platform.config import Settings, load_settings
from ml_platform.features.assets import dbt_features
from ml_platform.ingestion.assets import raw_daily_assets, raw_reference_assets
from ml_platform.monitoring.assets import feature_drift, prediction_quality
from ml_platform.monitoring.backtest import backtest
from ml_platform.resources import build_resources
from ml_platform.serving.assets import predictions
from ml_platform.training.assets import training_set
from ml_platform.training.candidates import candidate_assets
from ml_platform.training.selection import champion_model, champion_passed_gate, model_selection

ASSETS = [
    *raw_daily_assets,
    *raw_reference_assets,
    dbt_features,
    training_set,
    *candidate_assets,
    model_selection,
    champion_model,
    predictions,
    prediction_quality,
    feature_drift,
    backtest,
]


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or load_settings()
    defs = Definitions(
        assets=ASSETS,
        asset_checks=[champion_passed_gate, *partition_freshness_checks],
        jobs=[ingest_days_job, retrain_job],
        schedules=[daily_ingestion_schedule, weekly_retraining_schedule],
        sensors=[
            landing_sensor,
            replay_sensor,
            retrain_on_degradation_sensor,
            alert_on_run_failure,
            partition_freshness_sensor,
            automation_condition_sensor,
        ],
        resources=build_resources(settings),
        executor=executor,
    )
    # Freshness and automation conditions are platform policy: set here, once, for every asset.
    return defs.map_asset_specs(func=apply_policy)


defs = build_definitions()
