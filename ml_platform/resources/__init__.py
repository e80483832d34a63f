"""Resources, chosen once per environment by ``build_resources``."""

from __future__ import annotations

import os

from dagster import EnvVar, FilesystemIOManager

from ml_platform.automation.alerts import Notifier
from ml_platform.config import DBT_PROJECT_DIR, Settings
from ml_platform.ingestion.source import FlightSource, LandingSource, PackagedSource
from ml_platform.resources.dbt import DbtCli
from ml_platform.resources.mlflow import MlflowTracking
from ml_platform.resources.policy import ModelPolicy
from ml_platform.resources.warehouse import Warehouse, WarehouseIOManager


def build_source(settings: Settings) -> FlightSource:
    if settings.source == "landing":
        return LandingSource(root=str(settings.landing_root))
    return PackagedSource()


WEBHOOK_ENV_VAR = "ML_PLATFORM_ALERT_WEBHOOK_URL"


def build_notifier() -> Notifier:
    """Webhook if its (secret) URL is in the environment, else the log."""
    if os.environ.get(WEBHOOK_ENV_VAR):
        return Notifier(webhook_url=EnvVar(WEBHOOK_ENV_VAR))
    return Notifier()


def build_tracking(settings: Settings) -> MlflowTracking:
    # In prod the tracking URI may carry credentials, so it is read from the environment at run
    # time (EnvVar) and never stored in the definitions or shown in the UI.
    uri = EnvVar("MLFLOW_TRACKING_URI") if settings.env == "prod" else settings.mlflow_tracking_uri
    return MlflowTracking(
        tracking_uri=uri,
        experiment=settings.mlflow_experiment,
        registered_model_name=settings.registered_model_name,
        artifact_location=settings.mlflow_artifact_location,
        ui_url=settings.mlflow_ui_url,
        dagster_url=settings.dagster_url,
    )


def build_resources(settings: Settings) -> dict:
    """The resource map of ``settings.env`` (``ML_PLATFORM_ENV``); the same code runs everywhere,
    and tests build the same map over temp directories."""
    return {
        "io_manager": WarehouseIOManager(database=settings.warehouse, data_path=settings.lake_data_path),
        "warehouse": Warehouse(path=settings.warehouse, data_path=settings.lake_data_path),
        "source": build_source(settings),
        "landing": LandingSource(root=str(settings.landing_root)),
        "notifier": build_notifier(),
        # Small Python objects (candidate summaries, gate decisions); models live in MLflow. Pickles
        # at a path (universal_pathlib): a directory, or on a lake under its data path, which
        # every step reads and writes wherever it runs (ML_PLATFORM_OBJECTS_PATH).
        "model_io_manager": FilesystemIOManager(base_dir=settings.objects_path),
        "policy": ModelPolicy(
            decision_threshold=settings.decision_threshold,
            promotion_auc_floor=settings.promotion_auc_floor,
            quality_min_auc=settings.quality_min_auc,
            drift_max_psi=settings.drift_max_psi,
            drift_max_psi_weather=settings.drift_max_psi_weather,
            fit_threads=settings.fit_threads,
        ),
        "mlflow": build_tracking(settings),
        "dbt": DbtCli(project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR)),
    }
