"""The nowcast on real parts (DuckDB, dbt, a Dagster instance, an MLflow SQLite store): its
champion in its own registered model, a day replayed hour by hour through the sensor and the
hourly predictions with no training/serving skew, and no score moved by a later event."""

import time
from dataclasses import replace
from datetime import date, timedelta

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
from dagster._core.storage.defs_state.base import set_defs_state_storage
from mlflow.tracking import MlflowClient

from ml_platform.keys import (
    NOWCAST_CANDIDATE,
    NOWCAST_PREDICTIONS,
    NOWCAST_TRAINING_SET,
    RAW_HOURLY,
    RAW_SCHEDULE,
    op_name,
)
from ml_platform.ml.frames import feature_frame
from ml_platform.ml.regimes import NOWCAST
from ml_platform.nowcast.sensor import build_nowcast_sensor, schedule_day
from ml_platform.nowcast.serving import build_nowcast_predictions, scored
from ml_platform.partitions import hour_key, hourly_partitions_for
from ml_platform.resources.mlflow import CHAMPION
from ml_platform.serving.nowcast_features import feature_digests
from ml_platform_tests import pit_support
from ml_platform_tests.conftest import local_platform
from ml_platform_tests.ml_support import all_definitions
from ml_platform_tests.pit_support import RawDays
from ml_platform_tests.test_pit_features import perturb_after

RAW_START, DAY, RAW_END = date(2013, 2, 24), date(2013, 3, 7), date(2013, 3, 8)
FIRST_FEATURES = date(2013, 2, 25)
CUTOFF = "2013-03-05"  # trains on 02-25..03-04, holds out 03-05..06; the replayed day is never seen
CHEAP = {"learning_rate": 0.1, "max_iter": 40, "min_samples_leaf": 50, "l2_regularization": 1.0}
WEAK = {"learning_rate": 0.001, "max_iter": 3, "max_leaf_nodes": 2, "min_samples_leaf": 50}
NOWCAST_TRAINING = dg.AssetSelection.assets(NOWCAST_TRAINING_SET).downstream() - dg.AssetSelection.assets(
    NOWCAST_PREDICTIONS
)


def landed_by(raw: RawDays, hour: pd.Timestamp) -> RawDays:
    """The raw tables as the feed has delivered them by ``hour``: the events of earlier hours,
    schedules (delivered before their day), and arrival delays of the days before ``DAY``."""
    return replace(
        raw,
        flights=raw.flights[pd.to_datetime(raw.flights.flight_date) < pd.Timestamp(DAY)],
        departures=raw.departures[raw.departures.event_hour < hour],
        arrivals=raw.arrivals[raw.arrivals.event_hour < hour],
        observations=raw.observations[raw.observations.event_hour < hour],
    )


def publish_nowcast_features(path) -> None:
    """What the pit_features asset publishes: the staged window, into features."""
    with duckdb.connect(str(path)) as conn:
        conn.execute("create schema if not exists features")
        conn.execute(
            "create or replace table features.nowcast_features as "
            "select * from features_staging.nowcast_features"
        )


def run(settings, instance, assets, selection, resources, **kwargs):
    with set_defs_state_storage(instance.defs_state_storage):
        return dg.materialize(assets, selection=selection, resources=resources, instance=instance, **kwargs)


def train_config(**params) -> dict:
    window = {"cutoff": CUTOFF, "window_days": 8, "holdout_days": 2}
    return {
        "ops": {
            op_name(NOWCAST_TRAINING_SET): {"config": window},
            op_name(NOWCAST_CANDIDATE): {"config": params},
        }
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A warehouse with the raw feed of 02-24..03-07 and the published nowcast features of
    02-25..03-07, and a nowcast champion trained before 03-05."""
    with local_platform(tmp_path_factory.mktemp("nowcast")) as (settings, resources, instance):
        path = settings.warehouse_path
        raw = pit_support.raw_days(RAW_START, RAW_END)
        pit_support.write_raw(path, raw)
        pit_support.build_models(path, FIRST_FEATURES, RAW_END)
        publish_nowcast_features(path)
        sensor = build_nowcast_sensor(settings)
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            before = sensor(context)
        assets = all_definitions(settings)
        trained = run(
            settings, instance, assets, NOWCAST_TRAINING, resources, run_config=train_config(**CHEAP)
        )
        yield {
            "settings": settings,
            "resources": resources,
            "instance": instance,
            "path": path,
            "raw": raw,
            "sensor": sensor,
            "skipped_before_training": before,
            "trained": trained,
            "serving": build_nowcast_predictions(hourly_partitions_for(settings)),
        }


def client(settings) -> MlflowClient:
    return MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def test_the_nowcast_champion_is_gated_into_its_own_registered_model(env):
    settings, resources = env["settings"], env["resources"]
    assert env["trained"].success
    assert "no nowcast champion" in env["skipped_before_training"].skip_message
    nowcast = resources["mlflow"].nowcast()
    assert nowcast.registered_model_name == f"{settings.registered_model_name}_nowcast"
    champion = nowcast.version_for(CHAMPION)
    assert champion.tags["gate"] == "passed" and champion.tags["cutoff"] == CUTOFF
    model = client(settings).get_registered_model(nowcast.registered_model_name)
    assert dict(model.aliases) == {CHAMPION: champion.version}
    # The daily model is untouched: nothing registered under its name.
    assert client(settings).search_model_versions(f"name='{settings.registered_model_name}'") == []
    assert resources["mlflow"].version_for(CHAMPION) is None
    # A weaker candidate is refused by the same gate: registered as challenger, champion kept.
    weak = run(
        settings, env["instance"], all_definitions(settings), NOWCAST_TRAINING, env["resources"],
        run_config=train_config(**WEAK),
    )  # fmt: skip
    assert weak.success
    assert nowcast.version_for(CHAMPION).version == champion.version
    assert "better than" in nowcast.version_for("challenger").tags["gate_reasons"]
    assert nowcast.version_for("challenger").tags["gate"] == "rejected"


@pytest.fixture(scope="module")
def replayed(env):
    """The day replayed hour by hour: the feed lands hour P - 1, the sensor requests hour P, the
    run scores it. Returns the stored predictions and the seconds each hour took."""
    settings, instance, raw = env["settings"], env["instance"], env["raw"]
    published = published_features(env["path"])
    hours = sorted(published.as_of.unique())
    cursor, seconds = hour_key(hours[0] - timedelta(hours=1)), []
    for day in sorted({schedule_day(h) for h in hours}):
        instance.report_runless_asset_event(dg.AssetMaterialization(RAW_SCHEDULE, partition=day))
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=env["resources"]) as ctx:
        waiting = env["sensor"](ctx)  # hour P - 1 has not landed yet
    assert f"hour {hour_key(hours[0])} waits for raw/departures" in waiting.skip_message
    for hour in hours:
        started = time.perf_counter()
        pit_support.write_raw(env["path"], landed_by(raw, hour))
        for key in RAW_HOURLY.values():
            previous = hour_key(hour - timedelta(hours=1))
            instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=previous))
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=env["resources"]) as ctx:
            result = env["sensor"](ctx)
        assert [r.partition_key for r in result.run_requests] == [hour_key(hour)]
        cursor = result.cursor
        done = run(settings, instance, [env["serving"]], None, env["resources"], partition_key=hour_key(hour))
        assert done.success
        seconds.append(time.perf_counter() - started)
    pit_support.write_raw(env["path"], raw)
    return stored_predictions(env["path"]), published, seconds


def published_features(path) -> pd.DataFrame:
    with duckdb.connect(str(path)) as conn:
        conn.execute("set TimeZone = 'UTC'")
        frame = conn.execute(
            "select * from features.nowcast_features where flight_date = ? order by flight_id", [DAY]
        ).fetchdf()
    return frame


def stored_predictions(path) -> pd.DataFrame:
    with duckdb.connect(str(path)) as conn:
        conn.execute("set TimeZone = 'UTC'")
        return conn.execute("select * from nowcast.predictions order by flight_id").fetchdf()


def test_a_replayed_day_is_scored_with_the_features_training_computes(env, replayed):
    predictions, published, seconds = replayed
    print(f"replayed {len(seconds)} hours, {np.mean(seconds):.2f} s an hour")
    assert len(published) > 900
    assert list(predictions.flight_id) == list(published.flight_id)
    assert (pd.to_datetime(predictions.as_of, utc=True) == pd.to_datetime(published.as_of, utc=True)).all()
    # The features each flight was scored with are the ones the published table holds for it.
    assert list(predictions.feature_digest) == list(feature_digests(published, NOWCAST))
    # And so is its score: the champion on the published row.
    nowcast = env["resources"]["mlflow"].nowcast()
    champion = nowcast.version_for(CHAMPION)
    assert set(predictions.model_version) == {str(champion.version)}
    model = nowcast.load_version(champion.version)
    expected = model.predict_proba(feature_frame(published, NOWCAST.categorical, NOWCAST.numeric))[:, 1]
    # Equal up to the last bit of a parallel sum (see feature_digests); a skewed feature that
    # crosses a split moves a probability by far more.
    np.testing.assert_allclose(predictions.late_probability.to_numpy(), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("hour", ["2013-03-07 14:00", "2013-03-07 22:00"])
def test_events_after_the_prediction_instant_change_no_served_score(env, replayed, hour):
    """Everything at or after P is there and rewritten: hour P is served exactly as replayed."""
    predictions, published, _ = replayed
    cut = pd.Timestamp(hour, tz="UTC")
    perturbed = perturb_after(env["raw"], cut, seed=7)
    assert not perturbed.departures.equals(env["raw"].departures)
    pit_support.write_raw(env["path"], perturbed)
    try:
        done = run(env["settings"], env["instance"], [env["serving"]], None, env["resources"],
                   partition_key=hour_key(cut))  # fmt: skip
        assert done.success
        again = stored_predictions(env["path"])
    finally:
        pit_support.write_raw(env["path"], env["raw"])
    at = pd.to_datetime(predictions.as_of, utc=True) == cut
    served = again[pd.to_datetime(again.as_of, utc=True) == cut].reset_index(drop=True)
    assert len(served) == at.sum() > 20
    before = predictions[at].reset_index(drop=True)
    assert list(served.feature_digest) == list(before.feature_digest)
    np.testing.assert_allclose(served.late_probability, before.late_probability, rtol=0, atol=1e-9)


def test_an_hour_without_flights_is_scored_as_no_rows():
    """Nothing departs from New York at 04:00: the hour two hours before stores no row."""
    empty = pd.DataFrame({c: [] for c in ["flight_id", "flight_date", "as_of", *NOWCAST.columns]})
    frame = scored(None, empty, 0.5, "1", "model")
    assert frame.empty
    assert {"flight_id", "flight_date", "as_of", "late_probability", "feature_digest"} <= set(frame.columns)
