"""Landing sensor, replay clock, schedules and the retraining sensor against a real instance."""

import json
import os
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ml_platform.automation.sensors import MONITORING_CHECKS
from ml_platform.definitions import build_definitions
from ml_platform.ingestion.landing import land_days
from ml_platform.ingestion.source import PackagedSource
from ml_platform.keys import (
    FEATURE_DRIFT,
    FLIGHT_FEATURES,
    PREDICTION_QUALITY,
    PREDICTIONS,
    RAW_DAILY,
    TRAINING_SET,
    op_name,
)


@pytest.fixture
def defs(landing_settings):
    return build_definitions(landing_settings)


@pytest.fixture
def landing_sensor(defs):
    return defs.get_sensor_def("landing_sensor")


@pytest.fixture
def replay_sensor(defs):
    return defs.get_sensor_def("replay_sensor")


@pytest.fixture
def local_defs(settings):
    return build_definitions(settings)


@pytest.fixture
def retrain_on_degradation_sensor(local_defs):
    return local_defs.get_sensor_def("retrain_on_degradation_sensor")


@pytest.fixture
def daily_ingestion_schedule(local_defs):
    return local_defs.get_schedule_def("daily_ingestion_schedule")


@pytest.fixture
def weekly_retraining_schedule(local_defs):
    return local_defs.get_schedule_def("weekly_retraining_schedule")


def evaluate(sensor, instance, defs, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
    )
    result = sensor(context)
    return result, context


def ranges(result) -> list[tuple[str, str]]:
    return [
        (r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG])
        for r in (result.run_requests or [])
    ]


def test_landing_sensor_requests_new_days_once_and_survives_a_restart(
    landing_settings, instance, defs, landing_sensor
):
    root = landing_settings.landing_root
    land_days(date(2013, 1, 1), 3, root, echo=lambda _: None)
    first, _ = evaluate(landing_sensor, instance, defs)
    assert ranges(first) == [("2013-01-01", "2013-01-03")]
    request = first.run_requests[0]
    keys = set(request.asset_selection)
    assert {*RAW_DAILY, FLIGHT_FEATURES} <= keys
    assert PREDICTIONS not in keys  # no champion registered yet
    assert request.run_key.startswith("landing:2013-01-01..2013-01-03:")

    again, _ = evaluate(landing_sensor, instance, defs, cursor=first.cursor)
    assert not again.run_requests
    # A restarted daemon re-derives the same request from the same files: same run key.
    restarted, _ = evaluate(landing_sensor, instance, defs)
    assert [r.run_key for r in restarted.run_requests] == [request.run_key]


def test_a_changed_file_requests_only_its_day_and_an_identical_one_nothing(
    landing_settings, instance, defs, landing_sensor
):
    root = landing_settings.landing_root
    land_days(date(2013, 1, 1), 3, root, echo=lambda _: None)
    first, _ = evaluate(landing_sensor, instance, defs)
    # Re-landing identical content changes the file's mtime, not its content.
    land_days(date(2013, 1, 2), 1, root, reference=False, echo=lambda _: None)
    identical, _ = evaluate(landing_sensor, instance, defs, cursor=first.cursor)
    assert not identical.run_requests
    path = root / "flights" / "2013-01-02.parquet"
    frame = pd.read_parquet(path)
    frame.iloc[:-1].to_parquet(path, index=False)  # upstream corrected the day
    changed, _ = evaluate(landing_sensor, instance, defs, cursor=identical.cursor)
    assert ranges(changed) == [("2013-01-02", "2013-01-02")]


def test_malformed_files_are_reported_and_skipped_while_good_files_go_through(
    landing_settings, instance, defs, landing_sensor
):
    root = landing_settings.landing_root
    land_days(date(2013, 1, 4), 1, root, echo=lambda _: None)
    land_days(date(2013, 1, 6), 1, root, reference=False, echo=lambda _: None)
    (root / "flights" / "2013-01-05.parquet").write_bytes(b"PAR1 this is not parquet")
    land_days(date(2013, 1, 5), 1, root / "elsewhere", reference=False, echo=lambda _: None)
    (root / "weather" / "2013-01-05.parquet").write_bytes(
        (root / "elsewhere" / "weather" / "2013-01-05.parquet").read_bytes()
    )
    (root / "flights" / "notadate.parquet").write_bytes(b"x")
    outside = root.parent / "outside.parquet"
    outside.write_bytes((root / "flights" / "2013-01-04.parquet").read_bytes())
    os.symlink(outside, root / "flights" / "2013-01-07.parquet")
    result, context = evaluate(landing_sensor, instance, defs)
    assert ranges(result) == [("2013-01-04", "2013-01-04"), ("2013-01-06", "2013-01-06")]
    state = json.loads(result.cursor)["files"]
    assert state["flights/2013-01-05.parquet"]["status"] == "rejected"
    assert "unreadable parquet" in state["flights/2013-01-05.parquet"]["problem"]
    assert "2013-01-05.parquet" in state["flights/2013-01-05.parquet"]["problem"]
    assert state["flights/notadate.parquet"]["status"] == "rejected"
    assert "outside the landing root" in state["flights/2013-01-07.parquet"]["problem"]
    # The corrected file is picked up on the next tick.
    (root / "flights" / "2013-01-05.parquet").write_bytes(
        (root / "elsewhere" / "flights" / "2013-01-05.parquet").read_bytes()
    )
    fixed, _ = evaluate(landing_sensor, instance, defs, cursor=result.cursor)
    assert ranges(fixed) == [("2013-01-05", "2013-01-05")]


def test_replay_lands_the_next_days_on_each_tick(landing_settings, instance):
    defs = build_definitions(replace(landing_settings, replay_days_per_tick=2))
    replay_sensor = defs.get_sensor_def("replay_sensor")
    context = dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources)
    replay_sensor(context)
    assert context.cursor == "2013-01-03"
    root = landing_settings.landing_root
    assert sorted(p.name for p in (root / "flights").iterdir()) == [
        "2013-01-01.parquet",
        "2013-01-02.parquet",
    ]
    assert (root / "reference" / "planes.parquet").exists()
    context2 = dg.build_sensor_context(
        instance=instance, cursor=context.cursor, definitions=defs, resources=defs.resources
    )
    replay_sensor(context2)
    assert context2.cursor == "2013-01-05"
    end = dg.build_sensor_context(
        instance=instance, cursor="2014-01-01", definitions=defs, resources=defs.resources
    )
    assert "replay finished" in replay_sensor(end).skip_message


def test_daily_schedule_requests_the_newest_day_upstream_has(local_defs, instance, daily_ingestion_schedule):
    source = local_defs.resources["source"]
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2013, 3, 10, 6, tzinfo=UTC)
    )
    request = daily_ingestion_schedule(context, source=source)
    assert request.partition_key == "2013-03-09" and request.run_key == "ingest:2013-03-09"
    late = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 11, 22, 6, tzinfo=UTC)
    )
    assert daily_ingestion_schedule(late, source=source).partition_key == "2013-12-31"
    assert PackagedSource().available_days()[-1] == date(2013, 12, 31)


def report_features(instance, days):
    for day in days:
        instance.report_runless_asset_event(dg.AssetMaterialization(FLIGHT_FEATURES, partition=day))


def test_weekly_retraining_targets_the_newest_full_window(instance, weekly_retraining_schedule):
    context = dg.build_schedule_context(instance=instance)
    assert isinstance(weekly_retraining_schedule(context), dg.SkipReason)
    # Three days are no full holdout of seven: that cutoff would precede the first partition.
    report_features(instance, ["2013-01-03"])
    skip = weekly_retraining_schedule(dg.build_schedule_context(instance=instance))
    assert isinstance(skip, dg.SkipReason) and "full holdout (7 days)" in skip.skip_message
    report_features(instance, ["2013-03-01", "2013-03-20", "2013-03-10"])
    request = weekly_retraining_schedule(dg.build_schedule_context(instance=instance))
    config = request.run_config["ops"][op_name(TRAINING_SET)]["config"]
    assert config == {"cutoff": "2013-03-14", "window_days": 28, "holdout_days": 7}
    assert request.run_key == "retrain:2013-03-14"


def failed_check(instance, check_key, partition="2013-03-20"):
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=check_key.asset_key, check_name=check_key.name, passed=False, partition=partition
        )
    )


def test_retraining_on_failed_monitoring_respects_its_cool_down(
    settings, instance, local_defs, retrain_on_degradation_sensor
):
    defs = local_defs
    report_features(instance, ["2013-03-20"])
    quiet, ctx = evaluate(retrain_on_degradation_sensor, instance, defs)
    assert isinstance(quiet, dg.SkipReason)

    failed_check(instance, MONITORING_CHECKS[0])
    ctx = dg.build_sensor_context(instance=instance, cursor=ctx.cursor, definitions=defs)
    request = retrain_on_degradation_sensor(ctx)
    assert isinstance(request, dg.RunRequest)
    reason = request.tags["ml_platform/retrain_reason"]
    assert f"{PREDICTION_QUALITY.to_user_string()}:auc_above_floor failed" in reason
    assert request.tags["ml_platform/cutoff"] == "2013-03-14"

    failed_check(instance, MONITORING_CHECKS[1])
    ctx2 = dg.build_sensor_context(instance=instance, cursor=ctx.cursor, definitions=defs)
    cooling = retrain_on_degradation_sensor(ctx2)
    assert isinstance(cooling, dg.SkipReason) and "cool-down" in cooling.skip_message

    # Once the cool-down has passed, a new failure requests again.
    state = json.loads(ctx2.cursor)
    state["last_request"] -= settings.retrain_cooldown_hours * 3600 + 1
    failed_check(instance, MONITORING_CHECKS[1], partition="2013-03-21")
    ctx3 = dg.build_sensor_context(instance=instance, cursor=json.dumps(state), definitions=defs)
    again = retrain_on_degradation_sensor(ctx3)
    assert isinstance(again, dg.RunRequest)
    assert f"{FEATURE_DRIFT.to_user_string()}:psi_below_threshold" in again.tags["ml_platform/retrain_reason"]


def test_schedule_ticks_through_the_instance_are_deduplicated_by_run_key(
    instance, weekly_retraining_schedule
):
    report_features(instance, ["2013-03-20"])
    first = weekly_retraining_schedule(dg.build_schedule_context(instance=instance))
    second = weekly_retraining_schedule(
        dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime.now(UTC) + timedelta(days=7)
        )
    )
    assert first.run_key == second.run_key  # same window: the daemon launches it once
