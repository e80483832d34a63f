"""Walk-forward backtest of 2013: weekly retraining against a model frozen after January."""

from datetime import date

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, Config, MetadataValue, Output, asset
from pydantic import Field

import ml_platform.ml.training as training_module
from ml_platform.config import Settings
from ml_platform.keys import BACKTEST, FLIGHT_FEATURES
from ml_platform.ml import models
from ml_platform.ml.plots import markdown_image, weekly_auc_png
from ml_platform.ml.training import walk_forward
from ml_platform.resources.mlflow import MlflowTracking
from ml_platform.resources.policy import ModelPolicy
from ml_platform.resources.warehouse import Warehouse
from ml_platform.versions import module_version

CODE_VERSION = module_version(__name__, models, training_module)


class BacktestConfig(Config):
    """The weekly training window defaults to the settings' (``backtest_config``)."""

    first_cutoff: str = Field(default="2013-02-01", description="First weekly cutoff (YYYY-MM-DD)")
    last_cutoff: str = Field(default="2013-12-24", description="Last weekly cutoff (YYYY-MM-DD)")
    frozen_until: str = Field(default="2013-02-01", description="The frozen model trains on days before this")
    window_days: int = Field(ge=1)
    holdout_days: int = Field(default=7, ge=1)
    max_iter: int = Field(default=150, ge=10, description="Boosting rounds of each weekly model")


def backtest_config(settings: Settings) -> type[BacktestConfig]:
    class SettingsBacktestConfig(BacktestConfig):
        window_days: int = Field(default=settings.training_window_days, ge=1)

    return SettingsBacktestConfig


def build_backtest(settings: Settings) -> AssetsDefinition:
    config_class = backtest_config(settings)

    @asset(
        key=BACKTEST,
        group_name="monitoring",
        deps=[FLIGHT_FEATURES],
        io_manager_key="model_io_manager",
        kinds={"sklearn", "mlflow"},
        code_version=CODE_VERSION,
    )
    def backtest(
        context: AssetExecutionContext,
        config: config_class,
        warehouse: Warehouse,
        mlflow: MlflowTracking,
        policy: ModelPolicy,
    ):
        """Does retraining every week pay? Mean and per-week holdout AUC of both strategies."""
        return run_backtest(context, config, warehouse, mlflow, policy)

    return backtest


def run_backtest(
    context: AssetExecutionContext,
    config: BacktestConfig,
    warehouse: Warehouse,
    mlflow: MlflowTracking,
    policy: ModelPolicy,
):
    features = warehouse.query(
        "select * from features.flight_features where flight_date < ? order by all",
        [date.fromisoformat(config.last_cutoff) + pd.Timedelta(days=config.holdout_days)],
    )
    weeks = walk_forward(
        features,
        lambda: models.hist_gradient_boosting(max_iter=config.max_iter),
        date.fromisoformat(config.first_cutoff),
        date.fromisoformat(config.last_cutoff),
        config.window_days,
        config.holdout_days,
        date.fromisoformat(config.frozen_until),
        policy.decision_threshold,
        policy.fit_threads,
    )
    if weeks.empty:
        raise ValueError(
            "backtest: no week had both training data and a two-class holdout; materialize features"
        )
    summary = {
        "mean_auc_weekly_retrain": float(weeks.auc_weekly_retrain.mean()),
        "mean_auc_frozen": float(weeks.auc_frozen.mean()),
        "weeks": float(len(weeks)),
    }
    png = weekly_auc_png(
        weeks.week_start.dt.strftime("%m-%d"),
        {
            "weekly retrain": weeks.auc_weekly_retrain.tolist(),
            "frozen after January": weeks.auc_frozen.tolist(),
        },
        "Walk-forward holdout AUC, 2013",
    )
    with mlflow.materialization_run(context) as run:
        run.log_params(config.model_dump())
        run.log_metrics(summary)
        run.log_png(png, "weekly_auc")
        run.log_text(weeks.to_csv(index=False), "weekly_auc.csv")
    table = weeks.assign(week_start=weeks.week_start.dt.strftime("%Y-%m-%d"))
    return Output(
        table.to_dict("records"),
        metadata={
            **run.dagster_metadata(),
            **{k: MetadataValue.float(v) for k, v in summary.items()},
            "plot": MetadataValue.md(markdown_image(png, "weekly AUC")),
            "weeks_table": MetadataValue.md(table.to_markdown(index=False, floatfmt=".4f")),
        },
    )
