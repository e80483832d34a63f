"""Training set, candidate models, selection and the champion in the MLflow registry."""

import re
from datetime import UTC, date, datetime, timedelta

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DataVersion,
    Failure,
    MetadataValue,
    Output,
    asset,
)
from pydantic import BaseModel, Field, field_validator

import ml_platform.ml.frames as frames_module
from ml_platform.config import Settings
from ml_platform.features.assets import feature_reader_version
from ml_platform.keys import FLIGHT_FEATURES, NOWCAST_FEATURES, TRAINING_SET
from ml_platform.launchpad import checked, day_choices, launchpad_form
from ml_platform.ml.frames import DAY, LABEL, split_training_set, training_windows
from ml_platform.resources.mlflow import CHAMPION, MlflowTracking
from ml_platform.resources.warehouse import WAREHOUSE_POOL, Warehouse, describe_frame, ident
from ml_platform.versions import frame_hash

GROUP = "training"


class TrainingWindowConfig(BaseModel):
    """The cutoff is the first day the model must not have seen; training precedes it. The
    window lengths default to the settings the definitions are built with (``window_config``)."""

    cutoff: str = Field(
        default="2013-06-01",
        description="Training cutoff: the first day not trained on, YYYY-MM-DD, a day of the partitions",
    )
    window_days: int = Field(ge=1, le=366)
    holdout_days: int = Field(ge=1, le=60)

    @field_validator("cutoff")
    @classmethod
    def _is_date(cls, value: str) -> str:
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                raise ValueError(value)
            date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError("not a calendar day; use YYYY-MM-DD, e.g. 2013-06-01") from exc
        return value


def window_config(settings: Settings) -> type[TrainingWindowConfig]:
    """The launchpad config of the training set, its windows defaulting to ``settings``."""

    class SettingsWindowConfig(TrainingWindowConfig):
        window_days: int = Field(default=settings.training_window_days, ge=1, le=366)
        holdout_days: int = Field(default=settings.holdout_days, ge=1, le=60)

    return SettingsWindowConfig


def cutoff_days(settings: Settings, today: date | None = None):
    """The cutoffs the launchpad takes: the days of the code location's partitions. Open-ended
    partitions are offered through the end of next year (a cutoff with features is in the past)."""
    today = today or datetime.now(UTC).date()
    end = settings.partition_end or date(today.year + 2, 1, 1)
    return day_choices(settings.partition_start, end - timedelta(days=1))


FEATURE_TABLES = {FLIGHT_FEATURES: "flight_features", NOWCAST_FEATURES: "nowcast_features"}


def read_features(
    warehouse: Warehouse, start: date, end: date, features: AssetKey = FLIGHT_FEATURES
) -> pd.DataFrame:
    """The published rows of a feature table (one of ``FEATURE_TABLES``) for days [start, end)."""
    return warehouse.query(
        f"select * from features.{ident(FEATURE_TABLES[features])}"  # noqa: S608
        " where flight_date >= ? and flight_date < ? order by all",
        [start, end],
    )


# Dagster compares data versions across a daily -> unpartitioned edge only up to 100 upstream
# partitions, so a feature SQL edit reaches the training set through its code version.
CODE_VERSION = feature_reader_version(__name__, frames_module)


def build_training_set(settings: Settings) -> AssetsDefinition:
    strict = window_config(settings)
    form = launchpad_form(strict, "TrainingWindowConfig", choices={"cutoff": cutoff_days(settings)})

    @asset(
        key=TRAINING_SET,
        group_name=GROUP,
        deps=[FLIGHT_FEATURES],
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", "pandas"},
        code_version=CODE_VERSION,
    )
    def training_set(context: AssetExecutionContext, config: form, warehouse: Warehouse):
        """Labelled flights of the trailing window before the cutoff (train) and the days after it
        (holdout). Flights without an arrival delay have no label and are left out, never guessed."""
        window = checked(strict, config, TRAINING_SET.to_user_string())
        return training_frame(context, window, warehouse)

    return training_set


def training_frame(
    context: AssetExecutionContext,
    config: TrainingWindowConfig,
    warehouse: Warehouse,
    key: AssetKey = TRAINING_SET,
    source: AssetKey = FLIGHT_FEATURES,
):
    """The training set ``key`` from the feature table ``source`` (the nowcast reads its own)."""
    cutoff = date.fromisoformat(config.cutoff)
    windows = training_windows(cutoff, config.window_days, config.holdout_days)
    features = read_features(warehouse, windows["train"][0], windows["holdout"][1], source)
    frame = split_training_set(features, cutoff, config.window_days, config.holdout_days)
    counts = frame["split"].value_counts().to_dict()
    for split in ("train", "holdout"):
        if not counts.get(split):
            start, end = windows[split]
            raise Failure(
                description=(
                    f"{key.to_user_string()}: no labelled features for the {split} window "
                    f"{start}..{end} (cutoff {config.cutoff}); materialize "
                    f"{source.to_user_string()} for those days first"
                ),
                allow_retries=False,
            )
    days = pd.to_datetime(features[DAY]).dt.date.nunique() if len(features) else 0
    expected_days = config.window_days + config.holdout_days
    if days < expected_days:
        context.log.warning(
            f"{key.to_user_string()}: features cover {days} of {expected_days} days of the window"
        )
    return Output(
        frame,
        # The rows decide the version: the same window over the same features is unchanged.
        data_version=DataVersion(frame_hash(frame)),
        metadata={
            **describe_frame(frame, DAY),
            "cutoff": config.cutoff,
            "train_window": f"{windows['train'][0]} .. {windows['train'][1]} (exclusive)",
            "holdout_window": f"{windows['holdout'][0]} .. {windows['holdout'][1]} (exclusive)",
            "train_rows": int(counts.get("train", 0)),
            "holdout_rows": int(counts.get("holdout", 0)),
            "days_with_features": f"{days} of {expected_days}",
            "late_rate_train": float(frame.loc[frame.split == "train", LABEL].mean()),
        },
    )


def champion_summary(mlflow: MlflowTracking) -> dict:
    version = mlflow.version_for(CHAMPION)
    if version is None:
        return {"version": None}
    return {"version": str(version.version), "tags": dict(version.tags), "run_id": version.run_id}


def metadata_table(rows: list[dict]) -> MetadataValue:
    return MetadataValue.md(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"))
