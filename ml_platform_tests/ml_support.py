"""Helpers for tests that run the ML assets: a warehouse with features, and run configs."""

import dagster as dg
from dagster._core.storage.defs_state.base import set_defs_state_storage
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ml_platform.definitions import build_definitions
from ml_platform.features.assets import build_dbt_features
from ml_platform.ingestion.assets import build_raw_daily_assets
from ml_platform.keys import (
    CANDIDATES,
    DAY_AHEAD_FEATURES,
    FEATURE_DRIFT,
    FOREST,
    HGB,
    LOGREG,
    NOWCAST_FEATURES,
    PREDICTION_QUALITY,
    PREDICTIONS,
    RAW_HOURLY,
    RAW_SCHEDULE,
    TRAINING_SET,
    op_name,
    training,
)
from ml_platform.partitions import daily_partitions_for
from ml_platform.resources import build_resources

# The daily chain's inputs: not the intraday feed (hourly partitions cannot share a run with
# daily ones) nor the point-in-time models built over it.
RAW_AND_FEATURES = dg.AssetSelection.groups("ingestion", "features") - dg.AssetSelection.assets(
    RAW_SCHEDULE, *RAW_HOURLY.values(), DAY_AHEAD_FEATURES, NOWCAST_FEATURES
)
TRAINING = dg.AssetSelection.groups("training")
SERVING = dg.AssetSelection.assets(PREDICTIONS)
MONITORING = dg.AssetSelection.assets(PREDICTION_QUALITY, FEATURE_DRIFT)


def all_definitions(settings=None, candidates=CANDIDATES):
    """Every asset and check of the code location built for ``settings`` (None: from the
    environment), to materialize in process."""
    defs = build_definitions(settings, candidates)
    return [*defs.assets, *defs.asset_checks]


def raw_daily_assets(settings) -> list:
    """The daily raw assets on the partitions of ``settings``."""
    return build_raw_daily_assets(daily_partitions_for(settings))


def dbt_features(settings):
    """The dbt feature models on the partitions of ``settings``."""
    return build_dbt_features(daily_partitions_for(settings))


def run(settings, instance, selection, resources: dict | None = None, **kwargs):
    """One in-process run of the definitions of ``settings`` on ``instance``. Dagster reads the
    definitions' state storage from a context variable that whichever instance was entered last
    set; a module-scoped instance outlives the tests around it, so the run names its own."""
    with set_defs_state_storage(instance.defs_state_storage):
        return dg.materialize(
            all_definitions(settings),
            selection=selection,
            resources=resources or build_resources(settings),
            instance=instance,
            **kwargs,
        )


def materialize_features(settings, instance, start: str, end: str):
    """Raw data and features for [start, end] (inclusive) in one single-run backfill."""
    return run(
        settings,
        instance,
        RAW_AND_FEATURES,
        tags={ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end},
    )


def training_config(cutoff: str | None, window_days: int = 14, holdout_days: int = 4, **candidates) -> dict:
    """Run config of a training run; ``candidates`` maps a candidate's asset name to its
    hyperparameters."""
    ops = {
        op_name(TRAINING_SET): {
            "config": {"cutoff": cutoff, "window_days": window_days, "holdout_days": holdout_days}
        }
    }
    for name, params in candidates.items():
        ops[op_name(training(name))] = {"config": params}
    return {"ops": ops}


def train(settings, instance, run_config: dict, raise_on_error: bool = True):
    return run(settings, instance, TRAINING, run_config=run_config, raise_on_error=raise_on_error)


def predict(
    settings, instance, partition_key: str, selection=SERVING, raise_on_error: bool = True, **overrides
):
    resources = {**build_resources(settings), **overrides}
    return run(
        settings, instance, selection, resources, partition_key=partition_key, raise_on_error=raise_on_error
    )


def predict_range(settings, instance, first: str, last: str):
    """Predictions for [first, last] (inclusive) in one single-run backfill."""
    return run(
        settings,
        instance,
        SERVING,
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
    )


# Deliberately weak hyperparameters: a model the gate must refuse against a good champion.
WEAK_CANDIDATES = {
    LOGREG.asset_name: {"C": 1e-6, "max_iter": 50, "min_frequency": 100000},
    HGB.asset_name: {"learning_rate": 0.001, "max_iter": 10, "max_leaf_nodes": 2, "l2_regularization": 0.0},
    FOREST.asset_name: {"n_estimators": 10, "max_depth": 1, "min_samples_leaf": 5000},
}
