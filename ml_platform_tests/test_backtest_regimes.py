"""The backtest over the daily and point-in-time regimes on real parts: raw data and features
materialized by Dagster (the point-in-time models by dbt), DuckDB, and an MLflow SQLite store."""

from datetime import date

import dagster as dg
import duckdb
import pytest
from mlflow.tracking import MlflowClient

from ml_platform.keys import BACKTEST, DAY_AHEAD_FEATURES, NOWCAST_FEATURES, op_name
from ml_platform.ml import regimes
from ml_platform_tests import pit_support
from ml_platform_tests.conftest import local_platform
from ml_platform_tests.ml_support import materialize_features, run

FIRST, LAST = "2013-01-01", "2013-01-24"
CHEAP = {
    "first_cutoff": "2013-01-15",
    "last_cutoff": "2013-01-21",
    "frozen_until": "2013-01-12",
    "window_days": 10,
    "holdout_days": 3,
    "max_iter": 20,
    "pit_window_days": 10,
    "pit_max_iter": 20,
    "pit_min_samples_leaf": 20,
    "importance_repeats": 1,
    "importance_rows": 1000,
}


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """Raw data and flight_features for the days, the intraday raw tables, and both point-in-time
    models built and published by their Dagster asset."""
    with local_platform(tmp_path_factory.mktemp("bt")) as (settings, _, instance):
        assert materialize_features(settings, instance, FIRST, LAST).success
        raw = pit_support.raw_days(date.fromisoformat(FIRST), date.fromisoformat("2013-01-25"))
        pit_support.write_raw(settings.warehouse_path, raw, only=pit_support.INTRADAY)
        tags = {"dagster/asset_partition_range_start": FIRST, "dagster/asset_partition_range_end": LAST}
        assert run(
            settings, instance, dg.AssetSelection.assets(DAY_AHEAD_FEATURES, NOWCAST_FEATURES), tags=tags
        ).success
        yield settings, instance


def backtest(settings, instance, **config):
    result = run(
        settings,
        instance,
        dg.AssetSelection.assets(BACKTEST),
        run_config={"ops": {op_name(BACKTEST): {"config": {**CHEAP, **config}}}},
    )
    assert result.success
    meta = result.asset_materializations_for_node(op_name(BACKTEST))[0].metadata
    return result.output_for_node(op_name(BACKTEST)), meta


def test_every_regime_is_backtested_with_a_plot_importances_and_mlflow_artifacts(platform):
    settings, instance = platform
    weeks, meta = backtest(settings, instance)
    by_regime = {}
    for w in weeks:
        by_regime.setdefault(w["regime"], []).append(w["week_start"])
    assert by_regime == {
        r: ["2013-01-15", "2013-01-18", "2013-01-21"] for r in ("daily", "day_ahead", "nowcast")
    }
    assert all(0.4 < w["auc_weekly_retrain"] <= 1 and 0.4 < w["auc_frozen"] <= 1 for w in weeks)
    assert meta["regimes"].value == {"daily": "measured", "day_ahead": "measured", "nowcast": "measured"}
    for prefix in ("", "day_ahead_", "nowcast_"):
        assert 0.4 < meta[f"{prefix}mean_auc_weekly_retrain"].value <= 1
    assert meta["plot"].value.startswith("![weekly AUC](data:image/png;base64,")
    for regime in (regimes.DAY_AHEAD, regimes.NOWCAST):
        table = meta[f"importance_{regime.name}"].value
        named = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
        assert len(named) == 15 and set(named) <= set(regime.columns)
    assert "importance_daily" not in meta

    client = MlflowClient(settings.mlflow_tracking_uri)
    run_id = meta["mlflow_run_id"].value
    mlflow_run = client.get_run(run_id)
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.metrics["nowcast_weeks"] == 3.0 and mlflow_run.data.metrics["weeks"] == 3.0
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    artifacts |= {a.path for a in client.list_artifacts(run_id, "plots")}
    expected = {
        "plots/weekly_auc.png",
        "weekly_auc.csv",
        "plots/importance_day_ahead.png",
        "importance_nowcast.csv",
    }
    assert expected <= artifacts


def test_a_regime_whose_table_is_empty_is_skipped_and_the_others_reported(platform):
    settings, instance = platform
    with duckdb.connect(str(settings.warehouse_path)) as conn:
        conn.execute(
            "create or replace table features.nowcast_keep as select * from features.nowcast_features"
        )
        conn.execute("delete from features.nowcast_features")
    try:
        weeks, meta = backtest(settings, instance, regimes=["day_ahead", "nowcast"])
    finally:
        with duckdb.connect(str(settings.warehouse_path)) as conn:
            conn.execute("insert into features.nowcast_features select * from features.nowcast_keep")
    assert {w["regime"] for w in weeks} == {"day_ahead"}
    assert meta["regimes"].value == {"day_ahead": "measured", "nowcast": "its feature table has no rows"}
    assert "nowcast_mean_auc_weekly_retrain" not in meta and "importance_nowcast" not in meta
