"""Definitions follow the settings they are built with: two built in one process from different
settings differ in their partitions, in which automation starts by itself and in the training
windows their assets, schedules and sensors use."""

from dataclasses import replace
from datetime import UTC, date, datetime

import dagster as dg
import duckdb
import pytest

from ml_platform.definitions import build_definitions
from ml_platform.keys import BACKTEST, FLIGHT_FEATURES, RAW_HOURLY, TRAINING_SET, op_name
from ml_platform.training.assets import cutoff_days

AUTOMATED_SENSORS = (
    "landing_sensor",
    "retrain_on_degradation_sensor",
    "freshness_checks_sensor",
    "automation_condition_sensor",
)
SCHEDULES = ("daily_ingestion_schedule", "weekly_retraining_schedule")


@pytest.fixture
def pair(settings):
    """The local profile as it comes, and a March week with automation on and shorter windows."""
    march = replace(
        settings,
        partition_start=date(2013, 3, 1),
        partition_end=date(2013, 3, 8),
        automation_on=True,
        training_window_days=10,
        holdout_days=3,
    )
    return (settings, build_definitions(settings)), (march, build_definitions(march))


def partition_keys(defs: dg.Definitions) -> dict[str, list[str]]:
    graph = defs.resolve_asset_graph()
    return {
        key.to_user_string(): graph.get(key).partitions_def.get_partition_keys()
        for key in graph.get_all_asset_keys()
        if graph.get(key).partitions_def is not None
    }


def test_partitions_follow_the_settings(pair):
    (_, year), (_, march) = pair
    year_keys, march_keys = partition_keys(year), partition_keys(march)
    assert year_keys.keys() == march_keys.keys()
    assert FLIGHT_FEATURES.to_user_string() in year_keys
    hourly = {k for k, keys in year_keys.items() if ":" in keys[0]}  # the intraday feed's hours
    assert {k.to_user_string() for k in RAW_HOURLY.values()} <= hourly
    assert all(len(keys) == 365 for k, keys in year_keys.items() if k not in hourly)
    # An hour partition per UTC hour, through one day past the last day: its evening flights
    # leave and land after its UTC midnight.
    assert all(len(keys) == 366 * 24 for k, keys in year_keys.items() if k in hourly)
    week = [f"2013-03-0{d}" for d in range(1, 8)]
    assert all(keys == week for k, keys in march_keys.items() if k not in hourly)
    assert all(
        keys[0] == "2013-03-01-00:00" and len(keys) == 8 * 24 for k, keys in march_keys.items() if k in hourly
    )
    assert march.resolve_job_def("ingest_days").partitions_def.get_partition_keys() == week
    assert len(year.resolve_job_def("ingest_days").partitions_def.get_partition_keys()) == 365


def test_default_statuses_follow_the_settings(pair):
    (_, off), (_, on) = pair
    for name in AUTOMATED_SENSORS:
        assert off.get_sensor_def(name).default_status == dg.DefaultSensorStatus.STOPPED, name
        assert on.get_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING, name
    for name in SCHEDULES:
        assert off.get_schedule_def(name).default_status == dg.DefaultScheduleStatus.STOPPED, name
        assert on.get_schedule_def(name).default_status == dg.DefaultScheduleStatus.RUNNING, name
    for defs in (off, on):  # the same whatever the settings
        assert defs.get_sensor_def("replay_sensor").default_status == dg.DefaultSensorStatus.STOPPED
        assert defs.get_sensor_def("alert_on_run_failure").default_status == dg.DefaultSensorStatus.RUNNING


def config_defaults(defs: dg.Definitions, key: dg.AssetKey) -> dict:
    fields = defs.get_assets_def(key).op.config_schema.config_type.fields
    return {name: field.default_value for name, field in fields.items() if field.default_provided}


def test_training_windows_follow_the_settings(pair):
    (_, year), (_, march) = pair
    for defs, window, holdout in ((year, 28, 7), (march, 10, 3)):
        defaults = config_defaults(defs, TRAINING_SET)
        assert (defaults["window_days"], defaults["holdout_days"]) == (window, holdout)
    assert config_defaults(year, BACKTEST)["window_days"] == 28
    assert config_defaults(march, BACKTEST)["window_days"] == 10


def test_the_launchpad_takes_the_days_of_the_partitions_as_cutoffs(pair):
    (_, year), (_, march) = pair
    days = {}
    for name, defs in (("year", year), ("march", march)):
        field = defs.get_assets_def(TRAINING_SET).op.config_schema.config_type.fields["cutoff"]
        enum = getattr(field.config_type, "inner_type", field.config_type)  # Noneable when defaulted
        days[name] = (
            enum.given_name,
            len(enum.config_values),
            field.default_value if field.default_provided else None,
        )
    assert days == {
        "year": ("a day from 2013-01-01 to 2013-12-31 (YYYY-MM-DD)", 365, "2013-06-01"),
        "march": ("a day from 2013-03-01 to 2013-03-07 (YYYY-MM-DD)", 7, None),
    }
    open_ended = replace(pair[0][0], partition_end=None)
    assert cutoff_days(open_ended, today=date(2026, 5, 4)).__name__ == (
        "a day from 2013-01-01 to 2027-12-31 (YYYY-MM-DD)"
    )


def test_the_training_set_reads_the_window_of_its_settings(pair, instance):
    """Materialized with only a cutoff, each training set reads its own settings' windows."""
    (settings, year), (_, march) = pair
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.warehouse_path)) as conn:
        conn.execute("create schema features")
        conn.execute(
            "create table features.flight_features as select 'f' || i as flight_id,"
            " date '2013-02-01' + cast(i as integer) as flight_date, i % 3 = 0 as arrived_late"
            " from range(60) t(i)"
        )
    windows = {}
    for name, defs in (("year", year), ("march", march)):
        result = dg.materialize(
            [*defs.assets, *defs.asset_checks],
            selection=[TRAINING_SET],
            resources=defs.resources,
            instance=instance,
            run_config={"ops": {op_name(TRAINING_SET): {"config": {"cutoff": "2013-03-05"}}}},
        )
        meta = result.asset_materializations_for_node(op_name(TRAINING_SET))[0].metadata
        windows[name] = (meta["train_window"].value, meta["holdout_window"].value)
    assert windows == {
        "year": ("2013-02-05 .. 2013-03-05 (exclusive)", "2013-03-05 .. 2013-03-12 (exclusive)"),
        "march": ("2013-02-23 .. 2013-03-05 (exclusive)", "2013-03-05 .. 2013-03-08 (exclusive)"),
    }


def test_schedules_use_the_partitions_and_windows_of_their_settings(pair, instance):
    (_, year), (_, march) = pair
    tick = datetime(2013, 6, 10, 6, tzinfo=UTC)
    newest = {}
    for name, defs in (("year", year), ("march", march)):
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
        request = defs.get_schedule_def("daily_ingestion_schedule")(context, source=defs.resources["source"])
        newest[name] = request.partition_key
    # The newest day upstream has that the partitions allow.
    assert newest == {"year": "2013-06-09", "march": "2013-03-07"}

    instance.report_runless_asset_event(dg.AssetMaterialization(FLIGHT_FEATURES, partition="2013-03-07"))
    configs = {}
    for name, defs in (("year", year), ("march", march)):
        request = defs.get_schedule_def("weekly_retraining_schedule")(
            dg.build_schedule_context(instance=instance)
        )
        configs[name] = request.run_config["ops"][op_name(TRAINING_SET)]["config"]
    assert configs == {
        "year": {"cutoff": "2013-03-01", "window_days": 28, "holdout_days": 7},
        "march": {"cutoff": "2013-03-05", "window_days": 10, "holdout_days": 3},
    }


def test_the_replay_clock_starts_at_the_first_partition_of_its_settings(pair, instance, tmp_path):
    (settings, year), (_, march) = pair
    landed = {}
    for name, defs in (("year", year), ("march", march)):
        context = dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources)
        defs.get_sensor_def("replay_sensor")(context)
        landed[name] = context.cursor
    assert landed == {"year": "2013-01-02", "march": "2013-03-02"}
    days = sorted(p.name for p in (settings.landing_root / "flights").iterdir())
    assert days == ["2013-01-01.parquet", "2013-03-01.parquet"]
