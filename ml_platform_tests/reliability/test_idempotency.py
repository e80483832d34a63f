"""Idempotency: every asset materialized again from the same inputs stores the same result, row
for row (models: the same metrics and the same predictions, seeds being fixed), and automation
evaluated again from the same cursor or tick requests nothing new.

Runs are forced (``ml_platform/force_rebuild``) where the platform would otherwise recognise
unchanged inputs and skip the work: the point here is that doing the work again changes nothing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
import numpy as np
import pandas as pd
from pandas.testing import assert_frame_equal

from ml_platform import keys
from ml_platform.definitions import build_definitions
from ml_platform.ingestion.assets import raw_reference_assets
from ml_platform.ingestion.landing import land_days
from ml_platform.ml.frames import feature_frame
from ml_platform.resources import build_resources
from ml_platform.resources.mlflow import CHAMPION
from ml_platform_tests.ml_support import MONITORING, RAW_AND_FEATURES, SERVING, all_definitions
from ml_platform_tests.reliability.support import partition, platform, query

DAY = "2013-01-13"
FORCE = {"ml_platform/force_rebuild": "true"}
DAILY_TABLES = {
    "raw.flights": "flight_date",
    "raw.weather": "weather_date",
    "features.flight_features": "flight_date",
    "serving.predictions": "flight_date",
    "monitoring.prediction_quality": "flight_date",
    "monitoring.feature_drift": "flight_date",
}
REFERENCE = ["raw.planes", "raw.airports", "raw.airlines"]
VERSION_COLUMNS = ["model_version", "champion_version"]
CANDIDATES = [c.asset_name for c in keys.CANDIDATES]


def _stored(warehouse) -> dict[str, pd.DataFrame]:
    tables = {name: partition(warehouse, name, column, DAY) for name, column in DAILY_TABLES.items()}
    for name in [*REFERENCE, "training.training_set"]:
        tables[name] = query(warehouse, f"select * from {name} order by all")  # noqa: S608 - constants
    return tables


def _metrics(metadata) -> dict[str, float]:
    """A candidate's holdout metrics from its materialization (or from the summary of the fit it
    reused, when its inputs were unchanged)."""
    values = {k: v.value for k, v in metadata.items() if isinstance(v.value, float)}
    if not values and "summary" in metadata:
        values = dict(metadata["summary"].value["metrics"])
    values = {k: v for k, v in values.items() if "seconds" not in k}
    assert values, f"no metrics in {sorted(metadata)}"
    return values


def _node_metrics(result, node: str) -> dict[str, float]:
    assert result.success
    return _metrics(result.asset_materializations_for_node(keys.op_name(keys.training(node)))[0].metadata)


def _materialize(settings, instance, selection, **kwargs):
    return dg.materialize(
        all_definitions(),
        selection=selection,
        resources=build_resources(settings),
        instance=instance,
        tags=FORCE,
        **kwargs,
    )


def test_every_asset_materialized_again_stores_the_same_result(trained, record):
    """Raw, features, training set, candidates, champion, predictions and monitoring, again."""
    with trained.active() as (settings, instance):
        tracking = build_resources(settings)["mlflow"]
        # The first time: trained with the platform's own configuration (other cases share this
        # platform and may have trained other candidates since), plus one day served.
        first = _materialize(
            settings, instance, dg.AssetSelection.groups("training"), run_config=trained.run_config()
        )
        first_champion = tracking.version_for(CHAMPION)
        first_metrics = {node: _node_metrics(first, node) for node in CANDIDATES}
        for selection in (SERVING, MONITORING):
            assert _materialize(settings, instance, selection, partition_key=DAY).success
        before = _stored(trained.env.warehouse)

        # Again, every asset recomputed from the same inputs.
        assert _materialize(settings, instance, raw_reference_assets).success
        for selection in (RAW_AND_FEATURES,):
            assert _materialize(settings, instance, selection, partition_key=DAY).success
        again = _materialize(
            settings, instance, dg.AssetSelection.groups("training"), run_config=trained.run_config()
        )
        second_champion = tracking.version_for(CHAMPION)
        for selection in (SERVING, MONITORING):
            assert _materialize(settings, instance, selection, partition_key=DAY).success
        after = _stored(trained.env.warehouse)

        # Tables: row for row. The champion's version number is the one thing allowed to differ:
        # the same model, refitted, is registered again under the next number.
        versions = [c for c in VERSION_COLUMNS if first_champion.version != second_champion.version]
        for name in before:
            assert len(before[name]) > 0, name
            left, right = before[name], after[name]
            ignored = [c for c in versions if c in left.columns]
            assert_frame_equal(left.drop(columns=ignored), right.drop(columns=ignored), obj=name)
        # Models: the same metrics, and the two champions predict the same probabilities.
        second_metrics = {node: _node_metrics(again, node) for node in CANDIDATES}
        assert second_metrics == first_metrics
        holdout = after["training.training_set"].query("split == 'holdout'")
        old = tracking.load_version(first_champion.version).predict_proba(feature_frame(holdout))[:, 1]
        new = tracking.load_version(second_champion.version).predict_proba(feature_frame(holdout))[:, 1]
        assert np.array_equal(old, new)
        assert second_champion.tags.get("gate") == "passed"
    rows = sum(len(t) for t in after.values())
    record(
        fault="every asset materialized a second time from the same inputs (forced recompute)",
        expected="same stored rows; same model metrics and predictions",
        observed=(
            f"{len(after)} tables ({rows} rows) identical; metrics of the 3 candidates identical "
            f"(hgb AUC {second_metrics[keys.HGB.asset_name]['roc_auc']:.4f} twice); champion "
            f"v{first_champion.version} and v{second_champion.version} predict identical probabilities"
        ),
        rows_lost=0,
        rows_duplicated=0,
    )


def test_automation_evaluated_again_requests_nothing_twice(tmp_path, record):
    """Sensors from the same cursor, schedules for the same tick: no second request."""
    with platform(tmp_path, "landing") as (env, settings, instance):
        defs = build_definitions(settings)
        land_days(date(2013, 1, 1), 3, env.landing, echo=lambda _: None)

        def sense(sensor, cursor):
            with dg.build_sensor_context(
                instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
            ) as context:
                result = sensor(context)
            cursor = result.cursor if isinstance(result, dg.SensorResult) else context.cursor
            requests = result.run_requests if isinstance(result, dg.SensorResult) else []
            if isinstance(result, dg.RunRequest):
                requests = [result]
            return list(requests or []), cursor

        landing_sensor = defs.get_sensor_def("landing_sensor")
        retrain_on_degradation_sensor = defs.get_sensor_def("retrain_on_degradation_sensor")
        first, cursor = sense(landing_sensor, None)
        again, cursor_again = sense(landing_sensor, cursor)
        restarted, _ = sense(landing_sensor, None)  # a daemon that lost its cursor
        assert len(first) == 1 and again == [] and cursor_again == cursor
        # Without the cursor the same request comes back with the same run key, which the daemon
        # does not launch twice.
        assert [r.run_key for r in restarted] == [r.run_key for r in first]

        retrain_first, retrain_cursor = sense(retrain_on_degradation_sensor, None)
        retrain_again, _ = sense(retrain_on_degradation_sensor, retrain_cursor)
        assert retrain_first == [] and retrain_again == []

        tick = datetime(2013, 1, 4, 6, tzinfo=UTC)
        run_keys = []
        for name in ("daily_ingestion_schedule", "weekly_retraining_schedule"):
            schedule = defs.get_schedule_def(name)
            for _ in range(2):
                with dg.build_schedule_context(
                    instance=instance, scheduled_execution_time=tick, resources=defs.resources
                ) as context:
                    result = schedule(context)
                run_keys.append((schedule.name, getattr(result, "run_key", None) or type(result).__name__))
        assert run_keys[0] == run_keys[1] and run_keys[2] == run_keys[3], run_keys
    record(
        fault="sensors re-evaluated from the same cursor; schedules evaluated twice for one tick",
        expected="nothing requested twice (no request, or the same run key)",
        observed=(
            f"landing sensor: 1 request, then none; restarted without cursor: same run key "
            f"{first[0].run_key[:32]}...; schedules: {run_keys[0][1]} twice, {run_keys[2][1]} twice"
        ),
    )
