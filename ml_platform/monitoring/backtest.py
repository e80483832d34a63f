"""Walk-forward backtest of 2013: weekly retraining against a model frozen after January, for the
served daily features and for both point-in-time regimes (day-ahead and nowcast).

The asset key stays ``monitoring/backtest``: its output is still the weekly rows (now with a
``regime`` column) and its daily figures keep their names, so existing readers see what they
saw; the point-in-time regimes add prefixed figures, lines on the same plot and the permutation
importances of their last weekly model."""

from datetime import date, timedelta
from functools import partial

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, Config, MetadataValue, Output, asset
from pydantic import Field

import ml_platform.ml.backtest as backtest_module
import ml_platform.ml.training as training_module
from ml_platform.config import Settings
from ml_platform.features.pit_assets import PUBLICATIONS
from ml_platform.keys import BACKTEST, DAY_AHEAD_FEATURES, FLIGHT_FEATURES, NOWCAST_FEATURES
from ml_platform.ml import importance, models, regimes
from ml_platform.ml.backtest import DAILY, RegimeResult, RegimeSpec, Walk, backtest_regime, plot_series
from ml_platform.ml.plots import importance_png, markdown_image, weekly_auc_png
from ml_platform.resources.mlflow import MlflowTracking
from ml_platform.resources.policy import ModelPolicy
from ml_platform.resources.warehouse import Warehouse, ident, table_exists
from ml_platform.versions import module_version

CODE_VERSION = module_version(__name__, models, training_module, backtest_module, importance, regimes)
PIT_KEYS = {regimes.DAY_AHEAD.name: DAY_AHEAD_FEATURES, regimes.NOWCAST.name: NOWCAST_FEATURES}


class BacktestConfig(Config):
    """The daily regime's window defaults to the settings' (``backtest_config``); the point-in-time
    regimes' window and boosting default to the best measured setting (``benchmarks/pit_auc.py``:
    91 days, the ``tuned`` parameters). Tests lower ``pit_max_iter`` to keep runs cheap."""

    first_cutoff: str = Field(default="2013-02-01", description="First weekly cutoff (YYYY-MM-DD)")
    last_cutoff: str = Field(default="2013-12-24", description="Last weekly cutoff (YYYY-MM-DD)")
    frozen_until: str = Field(default="2013-02-01", description="The frozen model trains on days before this")
    window_days: int = Field(ge=1)
    holdout_days: int = Field(default=7, ge=1)
    max_iter: int = Field(default=150, ge=10, description="Boosting rounds of each weekly daily-regime model")
    regimes: list[str] = Field(
        default=[DAILY, regimes.DAY_AHEAD.name, regimes.NOWCAST.name], description="Regimes to backtest"
    )
    pit_window_days: int = Field(default=91, ge=1, description="Training window of the point-in-time regimes")
    pit_learning_rate: float = Field(default=0.05, gt=0)
    pit_max_iter: int = Field(default=500, ge=10)
    pit_min_samples_leaf: int = Field(default=80, ge=1)
    pit_l2_regularization: float = Field(default=1.0, ge=0)
    importance_repeats: int = Field(
        default=3, ge=1, description="Shuffles per column (permutation importance)"
    )
    importance_rows: int = Field(
        default=5000, ge=100, description="Holdout rows the importances are taken on"
    )
    importance_top: int = Field(default=15, ge=1)


def backtest_config(settings: Settings) -> type[BacktestConfig]:
    class SettingsBacktestConfig(BacktestConfig):
        window_days: int = Field(default=settings.training_window_days, ge=1)

    return SettingsBacktestConfig


def build_backtest(settings: Settings) -> AssetsDefinition:
    config_class = backtest_config(settings)

    @asset(
        key=BACKTEST,
        group_name="monitoring",
        deps=[FLIGHT_FEATURES, DAY_AHEAD_FEATURES, NOWCAST_FEATURES],
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
        """Does retraining every week pay, and how do the regimes compare? Mean and per-week
        holdout AUC of both strategies per regime, with the last model's feature importances."""
        return run_backtest(context, config, warehouse, mlflow, policy)

    return backtest


def specs(config: BacktestConfig) -> list[RegimeSpec]:
    out = []
    for name in config.regimes:
        if name == DAILY:
            out.append(
                RegimeSpec(
                    DAILY,
                    lambda: models.hist_gradient_boosting(max_iter=config.max_iter),
                    config.window_days,
                    importances=False,
                )
            )
            continue
        regime = regimes.REGIMES[name]  # KeyError names an unknown regime
        params = {
            "learning_rate": config.pit_learning_rate,
            "max_iter": config.pit_max_iter,
            "min_samples_leaf": config.pit_min_samples_leaf,
            "l2_regularization": config.pit_l2_regularization,
        }
        out.append(
            RegimeSpec(
                name,
                partial(regimes.hist_gradient_boosting, regime, **params),
                config.pit_window_days,
                (regime.categorical, regime.numeric),
            )
        )
    return out


def read_regime(warehouse: Warehouse, name: str, end: date) -> pd.DataFrame:
    """The regime's published rows before ``end``; an empty frame when the table is missing."""
    if name == DAILY:
        schema, table = "features", "flight_features"
    else:
        pub = PUBLICATIONS[PIT_KEYS[name]]
        schema, table = pub.published_schema, pub.table
    with warehouse.connection() as conn:
        if not table_exists(conn, schema, table):
            return pd.DataFrame()
        sql = f"select * from {ident(schema)}.{ident(table)} where flight_date < ? order by all"  # noqa: S608
        return conn.execute(sql, [end]).fetchdf()


def run_backtest(
    context: AssetExecutionContext,
    config: BacktestConfig,
    warehouse: Warehouse,
    mlflow: MlflowTracking,
    policy: ModelPolicy,
):
    walk = Walk(
        date.fromisoformat(config.first_cutoff),
        date.fromisoformat(config.last_cutoff),
        config.holdout_days,
        date.fromisoformat(config.frozen_until),
        policy.decision_threshold,
        policy.fit_threads,
        config.importance_repeats,
        config.importance_rows,
    )
    end = walk.last_cutoff + timedelta(days=config.holdout_days)
    results: list[RegimeResult] = []
    for spec in specs(config):
        result = backtest_regime(read_regime(warehouse, spec.name, end), spec, walk)
        if result.skipped:
            context.log.warning(f"backtest: regime {spec.name} skipped: {result.skipped}")
        results.append(result)
    if all(r.skipped for r in results):
        raise ValueError(
            "backtest: no regime had a week with both training data and a two-class holdout; "
            "materialize features"
        )
    summary = backtest_module.summary(results)
    table = backtest_module.weeks_table(results)
    png = weekly_auc_png(*plot_series(table), "Walk-forward holdout AUC, 2013")
    ranked = {
        r.name: importance.top(r.importances, config.importance_top)
        for r in results
        if r.importances is not None
    }
    skipped = {r.name: r.skipped for r in results if r.skipped}
    with mlflow.materialization_run(context) as run:
        run.log_params(config.model_dump())
        run.log_metrics(summary)
        run.log_png(png, "weekly_auc")
        run.log_text(table.to_csv(index=False), "weekly_auc.csv")
        if skipped:
            run.set_tags({f"skipped.{name}": why for name, why in skipped.items()})
        for name, top in ranked.items():
            title = f"{name}: permutation importance, last week"
            run.log_png(
                importance_png(
                    top.feature.tolist(), top.importance_mean.tolist(), top.importance_std.tolist(), title
                ),
                f"importance_{name}",
            )
            run.log_text(
                next(r for r in results if r.name == name).importances.to_csv(index=False),
                f"importance_{name}.csv",
            )
    metadata = {
        **run.dagster_metadata(),
        **{k: MetadataValue.float(v) for k, v in summary.items()},
        "plot": MetadataValue.md(markdown_image(png, "weekly AUC")),
        "weeks_table": MetadataValue.md(table.to_markdown(index=False, floatfmt=".4f")),
        "regimes": MetadataValue.json({r.name: r.skipped or "measured" for r in results}),
    }
    for name, top in ranked.items():
        metadata[f"importance_{name}"] = MetadataValue.md(top.to_markdown(index=False, floatfmt=".4f"))
    return Output(table.to_dict("records"), metadata=metadata)
