"""A corrupted delivery in the landing directory is stopped by the blocking raw checks before it
is stored, so it never reaches the dbt features; the day built before stays as it was."""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import duckdb
import pandas as pd
import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    AssetRecordsFilter,
    DagsterInstance,
    materialize,
)
from pandas.testing import assert_frame_equal

from ml_platform.config import Settings
from ml_platform.ingestion.assets import raw_reference_assets
from ml_platform.ingestion.landing import land_days
from ml_platform.ingestion.source import write_frame_atomically
from ml_platform.keys import FLIGHT_FEATURES, RAW_FLIGHTS, RAW_WEATHER
from ml_platform_tests.conftest import local_platform
from ml_platform_tests.ml_support import dbt_features, raw_daily_assets

JAN1 = date(2013, 1, 1)
FEATURES = FLIGHT_FEATURES


@dataclass
class Landed:
    settings: Settings
    resources: dict
    instance: DagsterInstance
    baseline: pd.DataFrame


def _query(settings: Settings, sql: str, params=None) -> pd.DataFrame:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        return conn.execute(sql, params or []).fetchdf()


def _features_on(settings: Settings, day: date) -> pd.DataFrame:
    sql = "select * from features.flight_features where flight_date = ? order by all"
    return _query(settings, sql, [day])


@pytest.fixture(scope="module")
def landed(tmp_path_factory) -> Iterator[Landed]:
    """Four days landed as parquet; 2013-01-01 materialized end to end from the landing source."""
    with local_platform(tmp_path_factory.mktemp("landed"), "landing") as (settings, resources, instance):
        land_days(JAN1, 4, settings.landing_root, echo=lambda _: None)
        assert materialize(raw_reference_assets, resources=resources, instance=instance).success
        good = materialize(
            [*raw_daily_assets(settings), dbt_features(settings)],
            resources=resources,
            instance=instance,
            partition_key=JAN1.isoformat(),
        )
        assert good.success
        baseline = _features_on(settings, JAN1)
        assert len(baseline) == 842
        yield Landed(settings, resources, instance, baseline)


def _corrupt_and_run(landed: Landed, day: date, corrupt):
    path = landed.settings.landing_root / "flights" / f"{day.isoformat()}.parquet"
    write_frame_atomically(corrupt(pd.read_parquet(path)), path)
    return materialize(
        [*raw_daily_assets(landed.settings), dbt_features(landed.settings)],
        resources=landed.resources,
        instance=landed.instance,
        partition_key=day.isoformat(),
        raise_on_error=False,
    )


def _assert_stopped_before_features(landed: Landed, result, day: date, failed_check: str):
    assert not result.success
    evaluations = {(e.asset_key, e.check_name): e for e in result.get_asset_check_evaluations()}
    failed = {key for key, e in evaluations.items() if not e.passed}
    assert failed == {(RAW_FLIGHTS, failed_check)}
    assert evaluations[(RAW_FLIGHTS, failed_check)].severity == AssetCheckSeverity.ERROR
    # Every raw check still ran and reported; no dbt test ran.
    assert {k for k in evaluations if k[0] == RAW_FLIGHTS} == {
        (RAW_FLIGHTS, c.name) for c in raw_daily_assets(landed.settings)[0].check_specs
    }
    assert all(k[0].path[0] == "raw" for k in evaluations)
    assert result.get_failed_step_keys() == {"raw__flights"}
    # Audited before it was written: the refused window was never stored; the failure says why.
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert materialized == {RAW_WEATHER}
    (failure,) = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    path = landed.settings.landing_root / "flights" / f"{day.isoformat()}.parquet"
    assert f"raw/flights {day.isoformat()}: not stored" in description
    assert f"- {failed_check} on {day.isoformat()} ({path})" in description
    assert "offending rows" in description
    raw_day = _query(landed.settings, "select count(*) as n from raw.flights where flight_date = ?", [day])
    assert raw_day["n"].item() == 0
    records = landed.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=FEATURES, asset_partitions=[day.isoformat()]), limit=1
    ).records
    assert records == []
    assert len(_features_on(landed.settings, day)) == 0
    # The day built before is untouched, in raw and in features.
    assert_frame_equal(_features_on(landed.settings, JAN1), landed.baseline)
    raw_jan1 = _query(landed.settings, "select count(*) as n from raw.flights where flight_date = ?", [JAN1])
    assert raw_jan1["n"].item() == 842


def test_duplicated_flight_keys_stop_the_features(landed):
    day = date(2013, 1, 2)
    result = _corrupt_and_run(landed, day, lambda f: pd.concat([f, f.head(3)], ignore_index=True))
    _assert_stopped_before_features(landed, result, day, "key_unique")
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "key_unique")
    assert check.metadata["duplicate_rows"].value == 3
    assert AssetCheckKey(RAW_FLIGHTS, "key_unique") in raw_daily_assets(landed.settings)[0].check_keys


def test_a_negative_distance_is_refused_before_anything_is_stored(landed):
    """A value outside its declared domain cannot be right: the raw step fails naming the file,
    column and value, and neither raw nor features of the day are written."""
    day = date(2013, 1, 3)

    def corrupt(frame):
        frame.loc[[5, 6], "distance"] = -100.0
        return frame

    result = _corrupt_and_run(landed, day, corrupt)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "raw__flights"
    message = failure.step_failure_data.error.cause.message
    path = landed.settings.landing_root / "flights" / f"{day.isoformat()}.parquet"
    assert f"{path}: column distance: -100 in row 6 is outside 0..10000 (2 row(s))" in message, message
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert RAW_FLIGHTS not in materialized and FEATURES not in materialized
    assert (
        _query(landed.settings, "select count(*) as n from raw.flights where flight_date = ?", [day])[
            "n"
        ].item()
        == 0
    )
    assert_frame_equal(_features_on(landed.settings, JAN1), landed.baseline)


def test_an_unreadable_delivery_fails_the_raw_step_naming_the_file(landed):
    day = date(2013, 1, 4)
    path = landed.settings.landing_root / "flights" / f"{day.isoformat()}.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    os.utime(path)
    result = materialize(
        [*raw_daily_assets(landed.settings), dbt_features(landed.settings)],
        resources=landed.resources,
        instance=landed.instance,
        partition_key=day.isoformat(),
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "raw__flights"
    assert str(path) in failure.step_failure_data.error.cause.message
    assert FEATURES not in {m.asset_key for m in result.get_asset_materialization_events()}
    assert_frame_equal(_features_on(landed.settings, JAN1), landed.baseline)
