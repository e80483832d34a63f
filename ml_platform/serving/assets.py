"""Batch predictions: each day's flights scored by the registered champion."""

import time

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    BackfillPolicy,
    MetadataValue,
    Output,
    PartitionsDefinition,
    asset,
)

import ml_platform.ml.frames as frames_module
import ml_platform.ml.training as training_module
from ml_platform.features.assets import feature_reader_version
from ml_platform.keys import CHAMPION_MODEL, FLIGHT_FEATURES, PREDICTIONS
from ml_platform.ml.frames import DAY
from ml_platform.ml.training import score, warm_up
from ml_platform.resources.mlflow import CHAMPION, MlflowTracking
from ml_platform.resources.policy import ModelPolicy
from ml_platform.resources.warehouse import WAREHOUSE_POOL, describe_frame

GROUP = "serving"
CODE_VERSION = feature_reader_version(__name__, training_module, frames_module)


class NoChampionError(RuntimeError):
    pass


def build_predictions(partitions: PartitionsDefinition) -> AssetsDefinition:
    @asset(
        key=PREDICTIONS,
        group_name=GROUP,
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        ins={"flight_features": AssetIn(key=FLIGHT_FEATURES)},
        deps=[CHAMPION_MODEL],
        metadata={"partition_expr": DAY},
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", "mlflow"},
        code_version=CODE_VERSION,
    )
    def predictions(
        context: AssetExecutionContext,
        flight_features: pd.DataFrame,
        mlflow: MlflowTracking,
        policy: ModelPolicy,
    ):
        """Probability of arriving more than 15 minutes late, per flight, with the model version."""
        return score_day(context, flight_features, mlflow, policy)

    return predictions


def score_day(context, flight_features: pd.DataFrame, mlflow: MlflowTracking, policy: ModelPolicy):
    version = mlflow.version_for(CHAMPION)
    if version is None:
        raise NoChampionError(
            f"no version of {mlflow.registered_model_name} carries the alias @champion; "
            f"materialize {CHAMPION_MODEL.to_user_string()} first"
        )
    loading = time.perf_counter()
    model = mlflow.load_version(version.version)
    warm_up(model, flight_features)
    load_seconds = time.perf_counter() - loading
    started = time.perf_counter()
    frame = score(
        model, flight_features, policy.decision_threshold, version.version, mlflow.registered_model_name
    )
    seconds = time.perf_counter() - started
    with mlflow.materialization_run(context, tags={"model_version": version.version}) as run:
        run.log_metrics(
            {
                "rows": len(frame),
                "mean_probability": float(frame.late_probability.mean()) if len(frame) else float("nan"),
                "predicted_late_rate": float(frame.predicted_late.mean()) if len(frame) else float("nan"),
                "rows_per_second": len(frame) / seconds if seconds > 0 else float("nan"),
            }
        )
    for day, figures in figures_per_day(frame, context.partition_keys).items():
        context.add_asset_metadata(figures, partition_key=day)
    return Output(
        frame,
        metadata={
            **describe_frame(frame, DAY),
            **run.dagster_metadata(),
            "model": f"models:/{mlflow.registered_model_name}/{version.version}",
            "model_version": str(version.version),
            "mean_probability": float(frame.late_probability.mean()) if len(frame) else float("nan"),
            "scoring_rows_per_second": MetadataValue.float(len(frame) / seconds if seconds > 0 else 0.0),
            "model_load_seconds": MetadataValue.float(round(load_seconds, 3)),
        },
    )


def figures_per_day(frame: pd.DataFrame, days: list[str]) -> dict[str, dict]:
    """Each partition's own figures: in a ranged run the Output's figures are the window's."""
    by_day = {f"{d:%Y-%m-%d}": part for d, part in frame.groupby(pd.to_datetime(frame[DAY]).dt.date)}
    out = {}
    for day in days:
        part = by_day.get(day, frame.iloc[:0])
        out[day] = {
            "dagster/partition_row_count": len(part),
            "mean_probability": float(part.late_probability.mean()) if len(part) else float("nan"),
            "predicted_late_rate": float(part.predicted_late.mean()) if len(part) else float("nan"),
        }
    return out
