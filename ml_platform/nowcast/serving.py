"""Hourly nowcast predictions: at each UTC hour P, the flights whose prediction instant is P
(they depart in the hour P + h) scored by the nowcast champion, from the features the
``nowcast_features`` SQL computes out of the raw data landed by then.

Each row keeps a digest of the exact feature values scored, so a replay can prove the served
features equal the ones training computes for the same flight (``serving/nowcast_features.py``).
"""

import time

import pandas as pd
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    Failure,
    MetadataValue,
    Output,
    PartitionsDefinition,
    TimeWindowPartitionMapping,
    asset,
)
from pydantic import Field

import ml_platform.ml.training as training_module
import ml_platform.serving.nowcast_features as serving_features_module
from ml_platform.features.assets import feature_reader_version
from ml_platform.keys import NOWCAST_CHAMPION, NOWCAST_PREDICTIONS, RAW_HOURLY, RAW_SCHEDULE
from ml_platform.ml.regimes import NOWCAST
from ml_platform.ml.training import score
from ml_platform.nowcast.training import COLUMNS, GROUP
from ml_platform.resources.dbt import DbtCli
from ml_platform.resources.mlflow import CHAMPION, MlflowTracking
from ml_platform.resources.policy import ModelPolicy
from ml_platform.resources.warehouse import WAREHOUSE_POOL, Warehouse, describe_frame
from ml_platform.serving.assets import NoChampionError
from ml_platform.serving.nowcast_features import feature_digests, features_at

PARTITION_COLUMN = "as_of"
CODE_VERSION = feature_reader_version(__name__, training_module, serving_features_module)
# Hour P reads the events of the hours before it: its hourly inputs are hour P - 1 (and earlier).
PREVIOUS_HOUR = TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)


class NowcastServingConfig(Config):
    nowcast_hours: int = Field(
        default=2, ge=0, le=24, description="Hours before its scheduled departure hour a flight is nowcast"
    )


def build_nowcast_predictions(hourly: PartitionsDefinition) -> AssetsDefinition:
    @asset(
        key=NOWCAST_PREDICTIONS,
        group_name=GROUP,
        partitions_def=hourly,
        deps=[
            AssetDep(RAW_SCHEDULE),
            *(AssetDep(key, partition_mapping=PREVIOUS_HOUR) for key in RAW_HOURLY.values()),
            AssetDep(NOWCAST_CHAMPION),
        ],
        metadata={"partition_expr": PARTITION_COLUMN},
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", "mlflow", "dbt"},
        code_version=CODE_VERSION,
    )
    def predictions(
        context: AssetExecutionContext,
        config: NowcastServingConfig,
        dbt: DbtCli,
        warehouse: Warehouse,
        mlflow: MlflowTracking,
        policy: ModelPolicy,
    ):
        """The flights predicted at this hour, scored by the nowcast ``@champion``."""
        return score_hour(context, config.nowcast_hours, dbt, warehouse, mlflow.nowcast(), policy)

    return predictions


def champion_version(tracking: MlflowTracking):
    """The nowcast champion, refused unless the gate passed it."""
    version = tracking.version_for(CHAMPION)
    if version is None:
        raise NoChampionError(
            f"no version of {tracking.registered_model_name} carries the alias @champion; "
            f"materialize {NOWCAST_CHAMPION.to_user_string()} first"
        )
    if version.tags.get("gate") != "passed":
        raise Failure(
            f"{tracking.registered_model_name} version {version.version} is @champion without a "
            "passed gate; it is not served",
            allow_retries=False,
        )
    return version


def score_hour(context, hours: int, dbt: DbtCli, warehouse: Warehouse, tracking: MlflowTracking, policy):
    as_of = context.partition_time_window.start
    version = champion_version(tracking)
    started = time.perf_counter()
    features = features_at(dbt, warehouse, as_of, hours)
    feature_seconds = time.perf_counter() - started
    model = tracking.load_version(version.version)
    name = tracking.registered_model_name
    frame = scored(model, features, policy.decision_threshold, version.version, name)
    with tracking.materialization_run(context, tags={"model_version": version.version}) as run:
        run.log_metrics(
            {
                "rows": len(frame),
                "mean_probability": float(frame.late_probability.mean()) if len(frame) else float("nan"),
                "feature_seconds": feature_seconds,
            }
        )
    return Output(
        frame,
        metadata={
            **describe_frame(frame),
            **run.dagster_metadata(),
            "as_of": as_of.isoformat(),
            "model": f"models:/{tracking.registered_model_name}/{version.version}",
            "model_version": str(version.version),
            "mean_probability": float(frame.late_probability.mean()) if len(frame) else float("nan"),
            "feature_seconds": MetadataValue.float(round(feature_seconds, 3)),
        },
    )


def scored(model, features: pd.DataFrame, threshold: float, version: str, model_name: str) -> pd.DataFrame:
    """The daily path's prediction rows, with the prediction instant and the feature digest."""
    frame = score(model, features, threshold, version, model_name, COLUMNS)
    frame.insert(2, PARTITION_COLUMN, pd.to_datetime(features[PARTITION_COLUMN], utc=True).to_numpy())
    frame["feature_digest"] = feature_digests(features, NOWCAST) if len(features) else []
    return frame
