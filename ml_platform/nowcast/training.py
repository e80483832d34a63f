"""The nowcast's training chain: a training set of ``features.nowcast_features``, one gradient
boosting candidate over the NOWCAST regime, and its champion in its own registered model.

The daily chain's functions do the work (window config and validation, the MLflow run of a
candidate, the gate, registration); only the feature table, the columns and the registered
model (``MlflowTracking.nowcast()``, ``<name>_nowcast``) differ."""

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, Config, asset
from pydantic import Field

import ml_platform.ml.regimes as regimes_module
import ml_platform.training.candidates as candidates_module
import ml_platform.training.selection as selection_module
from ml_platform.config import Settings
from ml_platform.features.assets import feature_reader_version
from ml_platform.keys import (
    NOWCAST_CANDIDATE,
    NOWCAST_CHAMPION,
    NOWCAST_FEATURES,
    NOWCAST_TRAINING_SET,
)
from ml_platform.launchpad import checked, launchpad_form
from ml_platform.ml.regimes import NOWCAST, hist_gradient_boosting
from ml_platform.resources.mlflow import MlflowTracking
from ml_platform.resources.policy import ModelPolicy
from ml_platform.resources.warehouse import WAREHOUSE_POOL, Warehouse
from ml_platform.training.assets import cutoff_days, training_frame, window_config
from ml_platform.training.candidates import MODEL_IO, train_candidate
from ml_platform.training.selection import gate, promote

GROUP = "nowcast"
COLUMNS = (NOWCAST.categorical, NOWCAST.numeric)
CANDIDATE_NAME = "nowcast_hgb"
CODE_VERSION = feature_reader_version(__name__, regimes_module, candidates_module, selection_module)


class NowcastHgbConfig(Config):
    """Defaults are the best measured on 2013 (benchmarks/pit_auc.py); tests pass cheaper ones."""

    learning_rate: float = Field(default=0.05, gt=0, le=1)
    max_iter: int = Field(default=500, ge=1, le=5000)
    max_leaf_nodes: int = Field(default=31, ge=2, le=1024)
    min_samples_leaf: int = Field(default=80, ge=1, le=10000)
    l2_regularization: float = Field(default=1.0, ge=0)


def build_nowcast_training(settings: Settings) -> list[AssetsDefinition]:
    strict = window_config(settings)
    form = launchpad_form(strict, "NowcastWindowConfig", choices={"cutoff": cutoff_days(settings)})

    @asset(
        key=NOWCAST_TRAINING_SET,
        group_name=GROUP,
        deps=[NOWCAST_FEATURES],
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", "pandas"},
        code_version=CODE_VERSION,
    )
    def training_set(context: AssetExecutionContext, config: form, warehouse: Warehouse):
        """Labelled nowcast rows of the window before the cutoff (train) and after it (holdout),
        each with the features known at its flight's prediction instant."""
        window = checked(strict, config, NOWCAST_TRAINING_SET.to_user_string())
        return training_frame(context, window, warehouse, NOWCAST_TRAINING_SET, NOWCAST_FEATURES)

    return [training_set, candidate_hgb, champion_model]


@asset(
    key=NOWCAST_CANDIDATE,
    group_name=GROUP,
    description="Histogram gradient boosting over the NOWCAST regime's columns.",
    ins={"training_set": AssetIn(key=NOWCAST_TRAINING_SET)},
    io_manager_key=MODEL_IO,
    kinds={"sklearn", "mlflow"},
    code_version=CODE_VERSION,
)
def candidate_hgb(
    context: AssetExecutionContext,
    config: NowcastHgbConfig,
    training_set: pd.DataFrame,
    mlflow: MlflowTracking,
    policy: ModelPolicy,
):
    params = config.model_dump()
    pipeline = hist_gradient_boosting(NOWCAST, **params)
    inputs = (NOWCAST_TRAINING_SET, NOWCAST_FEATURES)
    return train_candidate(
        context, CANDIDATE_NAME, pipeline, params, training_set, mlflow.nowcast(), policy,
        CODE_VERSION, COLUMNS, inputs,
    )  # fmt: skip


@asset(
    key=NOWCAST_CHAMPION,
    group_name=GROUP,
    ins={"candidate": AssetIn(key=NOWCAST_CANDIDATE), "training_set": AssetIn(key=NOWCAST_TRAINING_SET)},
    io_manager_key=MODEL_IO,
    kinds={"mlflow"},
    code_version=CODE_VERSION,
)
def champion_model(
    context: AssetExecutionContext,
    mlflow: MlflowTracking,
    policy: ModelPolicy,
    candidate: dict,
    training_set: pd.DataFrame,
):
    """The daily chain's gate against the nowcast's own champion on the same holdout: the
    candidate is registered in the nowcast model and takes ``@champion`` only if it passed."""
    tracking = mlflow.nowcast()
    _, _, selection = gate(tracking, policy, training_set, {CANDIDATE_NAME: candidate}, COLUMNS)
    return promote(context, tracking, selection)
