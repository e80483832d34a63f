"""Monitoring: how good yesterday's predictions were, and how far features drifted."""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    BackfillPolicy,
    MetadataValue,
    Output,
    PartitionsDefinition,
    TimeWindowPartitionMapping,
    asset,
)

import ml_platform.ml.drift as drift_module
import ml_platform.ml.metrics as metrics_module
from ml_platform.keys import CHAMPION_MODEL, FEATURE_DRIFT, FLIGHT_FEATURES, PREDICTION_QUALITY, PREDICTIONS
from ml_platform.ml.drift import feature_psi
from ml_platform.ml.frames import CATEGORICAL, DAY, KEY, LABEL, NUMERIC
from ml_platform.ml.metrics import classification_metrics
from ml_platform.resources.mlflow import CHAMPION, MlflowTracking
from ml_platform.resources.policy import ModelPolicy
from ml_platform.resources.warehouse import WAREHOUSE_POOL
from ml_platform.versions import module_version

GROUP = "monitoring"
DRIFT_WINDOW_DAYS = 7
# Calendar features differ from any multi-week reference by construction; they are not drift.
WEATHER_FEATURES = {"temp", "dewp", "humid", "wind_speed", "precip", "pressure", "visib"}
DRIFT_FEATURES = [c for c in CATEGORICAL + NUMERIC if c not in ("day_of_week", "month")]

CODE_VERSION = module_version(__name__, drift_module, metrics_module)


def quality_by_day(predictions: pd.DataFrame, features: pd.DataFrame, threshold: float) -> pd.DataFrame:
    joined = predictions.merge(features[[KEY, LABEL]], on=KEY, how="inner")
    rows = []
    for day, group in joined.groupby(DAY):
        labelled = group[group[LABEL].notna()]
        m = classification_metrics(
            labelled[LABEL].astype(bool).astype(int), labelled.late_probability, threshold
        )
        versions = ",".join(sorted(group.model_version.astype(str).unique()))
        rows.append(
            {
                DAY: pd.Timestamp(day),
                "model_version": versions,
                "predictions": len(group),
                "labelled": len(labelled),
                **{
                    k: m[k]
                    for k in ("roc_auc", "log_loss", "late_rate", "predicted_late_rate", "mean_probability")
                },
            }
        )
    return pd.DataFrame(rows)


def drift_by_day(features: pd.DataFrame, profile: dict, start, end, version: str) -> pd.DataFrame:
    """One PSI per feature and day of [start, end), each over the week ending on that day."""
    days = pd.to_datetime(features[DAY])
    rows = []
    for day in pd.date_range(start, end, inclusive="left"):
        window = features[(days > day - pd.Timedelta(days=DRIFT_WINDOW_DAYS)) & (days <= day)]
        if window.empty:
            continue
        for feature, value in feature_psi(window, profile).items():
            rows.append({DAY: day, "feature": feature, "psi": value, "champion_version": version})
    return pd.DataFrame(rows, columns=[DAY, "feature", "psi", "champion_version"])


def build_monitoring_assets(partitions: PartitionsDefinition) -> list[AssetsDefinition]:
    """Daily quality and drift, on the code location's partitions."""
    return [build_prediction_quality(partitions), build_feature_drift(partitions)]


def build_prediction_quality(partitions: PartitionsDefinition) -> AssetsDefinition:
    @asset(
        key=PREDICTION_QUALITY,
        group_name=GROUP,
        partitions_def=partitions,
        ins={"predictions": AssetIn(key=PREDICTIONS), "flight_features": AssetIn(key=FLIGHT_FEATURES)},
        metadata={"partition_expr": DAY},
        backfill_policy=BackfillPolicy.single_run(),
        check_specs=[AssetCheckSpec("auc_above_floor", asset=PREDICTION_QUALITY)],
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        code_version=CODE_VERSION,
    )
    def prediction_quality(
        context: AssetExecutionContext,
        predictions: pd.DataFrame,
        flight_features: pd.DataFrame,
        mlflow: MlflowTracking,
        policy: ModelPolicy,
    ):
        """AUC, log loss and late rate against predicted rate, once the day's arrivals are known."""
        yield from judge_quality(context, predictions, flight_features, mlflow, policy)

    return prediction_quality


def judge_quality(context, predictions, flight_features, mlflow: MlflowTracking, policy: ModelPolicy):
    frame = quality_by_day(predictions, flight_features, policy.decision_threshold)
    auc = float(frame.roc_auc.mean()) if len(frame) else float("nan")
    with mlflow.materialization_run(context) as run:
        run.log_metrics({"roc_auc": auc, "labelled": float(frame.labelled.sum()) if len(frame) else 0.0})
    yield Output(
        frame,
        metadata={
            **run.dagster_metadata(),
            "roc_auc": auc,
            "table": MetadataValue.md(frame.to_markdown(index=False, floatfmt=".4f")),
        },
    )
    floor = policy.quality_min_auc
    yield AssetCheckResult(
        check_name="auc_above_floor",
        passed=bool(auc == auc and auc >= floor),
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "roc_auc": auc,
            "floor": floor,
            "labelled_rows": int(frame.labelled.sum()) if len(frame) else 0,
        },
        description="Fails when the day's AUC is below the floor, or no AUC can be computed.",
    )


def build_feature_drift(partitions: PartitionsDefinition) -> AssetsDefinition:
    @asset(
        key=FEATURE_DRIFT,
        group_name=GROUP,
        partitions_def=partitions,
        ins={
            "flight_features": AssetIn(
                key=FLIGHT_FEATURES,
                partition_mapping=TimeWindowPartitionMapping(
                    start_offset=-(DRIFT_WINDOW_DAYS - 1), allow_nonexistent_upstream_partitions=True
                ),
            )
        },
        deps=[CHAMPION_MODEL],
        metadata={"partition_expr": DAY},
        backfill_policy=BackfillPolicy.single_run(),
        check_specs=[AssetCheckSpec("psi_below_threshold", asset=FEATURE_DRIFT)],
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        code_version=CODE_VERSION,
    )
    def feature_drift(
        context: AssetExecutionContext,
        flight_features: pd.DataFrame,
        mlflow: MlflowTracking,
        policy: ModelPolicy,
    ):
        """PSI of each feature over the trailing week against the champion's training set (the
        reference profile logged with it)."""
        yield from measure_drift(context, flight_features, mlflow, policy)

    return feature_drift


def measure_drift(context, flight_features: pd.DataFrame, mlflow: MlflowTracking, policy: ModelPolicy):
    version = mlflow.version_for(CHAMPION)
    if version is None:
        raise RuntimeError(
            "feature_drift: no champion model to compare against; materialize "
            f"{CHAMPION_MODEL.to_user_string()}"
        )
    profile = mlflow.download_json(version.run_id, "reference_profile.json")
    profile = {k: v for k, v in profile.items() if k in DRIFT_FEATURES}
    start, end = context.partition_time_window
    frame = drift_by_day(
        flight_features,
        profile,
        pd.Timestamp(start).tz_localize(None),
        pd.Timestamp(end).tz_localize(None),
        str(version.version),
    )
    worst = frame.sort_values("psi", ascending=False).head(5)
    max_psi = float(frame.psi.max()) if len(frame) else float("nan")
    with mlflow.materialization_run(context, tags={"model_version": version.version}) as run:
        run.log_metrics({"max_psi": max_psi})
    yield Output(
        frame,
        metadata={
            **run.dagster_metadata(),
            "max_psi": max_psi,
            "worst_features": MetadataValue.md(worst.to_markdown(index=False)),
        },
    )
    limits = frame.feature.map(lambda f: policy.psi_limit(f, WEATHER_FEATURES))
    drifted = frame[frame.psi > limits]
    yield AssetCheckResult(
        check_name="psi_below_threshold",
        passed=drifted.empty,
        metadata={
            "max_psi": max_psi,
            "threshold": policy.drift_max_psi,
            "weather_threshold": policy.drift_max_psi_weather,
            "drifted_features": ", ".join(drifted.feature.unique()) or "none",
        },
        description="Fails when any feature's weekly PSI against the champion's training set is too high.",
    )
