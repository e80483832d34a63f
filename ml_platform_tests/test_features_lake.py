"""The dbt features on a DuckLake: a real lake over a throwaway PostgreSQL catalog, a real dbt
build through the profile's lake target, the same rows as on the DuckDB file.

One module-scoped lake: the reference tables, 2013-01-01, 2013-01-02, and 2013-01-01 again.
"""

import json
from collections.abc import Iterator
from datetime import date

import pytest
from pandas.testing import assert_frame_equal

from ml_platform.config import DBT_PROJECT_DIR, load_settings
from ml_platform.definitions import build_definitions
from ml_platform.features import assets as feature_assets
from ml_platform.ingestion.assets import raw_reference_assets
from ml_platform.keys import FLIGHT_FEATURES
from ml_platform.resources import build_resources
from ml_platform.resources.dbt import parse_state_path
from ml_platform.resources.warehouse import WriteScope
from ml_platform.runtime.guard import DBT_IN_PROCESS
from ml_platform.versions import FORCE_TAG
from ml_platform_tests.conftest import local_environment, local_instance, local_platform
from ml_platform_tests.features_support import (
    DAILY,
    FLIGHTS_PER_DAY,
    Platform,
    assert_checks,
    by_partition,
    duplicate_rows,
)
from ml_platform_tests.lake_support import failure_message, lake_catalog

D1, D2 = date(2013, 1, 1), date(2013, 1, 2)
FEATURE_ROWS = "select * from features.flight_features where flight_date = ? order by flight_id"


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("lake-platform")
    with lake_catalog(root) as where, pytest.MonkeyPatch.context() as mp:
        local_environment(mp, root / "data")
        mp.setenv("ML_PLATFORM_WAREHOUSE", where.database)
        mp.setenv("ML_PLATFORM_LAKE_DATA_PATH", where.data_path)
        settings = load_settings()
        (root / "dagster_home").mkdir()
        with local_instance(root / "dagster_home") as instance:
            platform = Platform(settings, build_resources(settings), instance)
            assert_checks(platform.materialize(raw_reference_assets), raw_reference_assets)
            yield platform


@pytest.fixture(scope="module")
def lake_runs(lake):
    """2013-01-01, 2013-01-02, then 2013-01-01 again (forced: its inputs are unchanged), with the
    first day's features as they were before the rerun."""
    first = lake.materialize(DAILY, partition_key=D1.isoformat(), raise_on_error=False)
    second = lake.materialize(DAILY, partition_key=D2.isoformat(), raise_on_error=False)
    before = lake.query(FEATURE_ROWS, [D1])
    again = lake.materialize(
        DAILY, partition_key=D1.isoformat(), raise_on_error=False, tags={FORCE_TAG: "true"}
    )
    return first, second, again, before


@pytest.fixture(scope="module")
def file_day(tmp_path_factory) -> Platform:
    """2013-01-01 built into the DuckDB file, to compare with."""
    with local_platform(tmp_path_factory.mktemp("file-platform")) as parts:
        platform = Platform(*parts)
        platform.materialize(raw_reference_assets)
        assert platform.materialize(DAILY, partition_key=D1.isoformat()).success
        yield platform


def test_days_built_on_the_lake_hold_the_rows_the_file_holds(lake, lake_runs, file_day):
    first, second, again, before = lake_runs
    for result in (first, second, again):
        assert result.success
        assert_checks(result, DAILY)
    assert set(by_partition(second, FLIGHT_FEATURES)) == {D2.isoformat()}
    expected = {d: FLIGHTS_PER_DAY[d] for d in (D1, D2)}
    assert lake.counts_per_day("features.flight_features", "flight_date") == expected
    assert lake.counts_per_day("raw.flights", "flight_date") == expected
    # The rerun replaced its day: no duplicates, the same rows, the other day untouched.
    assert duplicate_rows(lake) == (0, 0)
    assert_frame_equal(lake.query(FEATURE_ROWS, [D1]), before)
    assert_frame_equal(lake.query(FEATURE_ROWS, [D1]), file_day.query(FEATURE_ROWS, [D1]))
    meta = by_partition(again, FLIGHT_FEATURES)[D1.isoformat()]
    assert meta["dagster/partition_row_count"] == FLIGHTS_PER_DAY[D1]


@pytest.mark.skipif(
    not DBT_IN_PROCESS.on(), reason="the parse state is the in-process dbt build's (accelerators off)"
)
def test_builds_into_a_lake_keep_their_own_parse_state(lake, lake_runs):
    """Keyed on the lake (its catalog without password, and data path): a later build into the
    same lake re-parses nothing."""
    *_, again, _ = lake_runs
    state = parse_state_path(DBT_PROJECT_DIR, lake.resources["warehouse"].engine)
    assert state.exists() and state != parse_state_path(DBT_PROJECT_DIR, lake.settings.data_dir / "w.duckdb")
    (target,) = (DBT_PROJECT_DIR / "target").glob(f"dbt_features-{again.run_id[:7]}-*")
    log = (target / "dbt.log").read_text()
    assert "Unable to do partial parsing" not in log
    assert "Partial parsing enabled" in log


def test_the_feature_table_is_named_in_the_lake(lake):
    spec = build_definitions(lake.settings).resolve_assets_def(FLIGHT_FEATURES).specs_by_key[FLIGHT_FEATURES]
    assert spec.metadata["dagster/table_name"] == "lake.features.flight_features"


def test_a_build_waits_for_the_staged_window_another_build_holds(lake, lake_runs, monkeypatch):
    """The staging relation is one for every window: a build that cannot have it publishes
    nothing (here it gives up at once, so the test need not race another build)."""
    monkeypatch.setattr(feature_assets, "STAGING_LOCK_SECONDS", 1.0)
    staged = feature_assets.PUBLICATION.staged
    day = date(2013, 1, 3)
    with lake.resources["warehouse"].engine.locked(WriteScope(staged)):
        result = lake.materialize(DAILY, partition_key=day.isoformat(), raise_on_error=False)
    assert not result.success
    assert f"{staged}: another writer held its lock for 1 s" in failure_message(result)
    assert lake.scalar("select count(*) from features.flight_features where flight_date = ?", [day]) == 0


def test_a_prediction_on_the_lake_traces_back_to_its_model_and_raw_days(
    lake, lake_runs, monkeypatch, tmp_path, capsys
):
    """Lineage reads the lake read-only: the prediction of a flight built there, the model version
    it names (registered here, with the tags training gives it) and the raw days of the instance."""
    from ml_platform.cli import main as cli_main
    from ml_platform.lineage import trace_prediction

    settings, warehouse, mlflow = lake.settings, lake.resources["warehouse"], lake.resources["mlflow"]
    client = mlflow.client()
    client.create_registered_model(settings.registered_model_name)
    tags = {"lineage.train_window": f"{D1}..{D2}", "candidate": "logistic", "code_version": "c1"}
    version = client.create_model_version(settings.registered_model_name, "file:///model", tags=tags).version
    flight = lake.query(
        "select min(flight_id) from features.flight_features where flight_date = ?", [D2]
    ).iloc[0, 0]

    def predict(conn):
        conn.execute("create schema if not exists serving")
        conn.execute(
            "create table serving.predictions as select flight_id, flight_date, 0.75 as late_probability,"
            " true as predicted_late, ? as model_name, ? as model_version"
            " from features.flight_features where flight_id = ?",
            [settings.registered_model_name, int(version), flight],
        )

    warehouse.write(WriteScope("serving.predictions"), predict)
    trace = trace_prediction(flight, warehouse, mlflow, lake.instance)
    assert (trace["flight_date"], trace["prediction"]["late_probability"]) == (D2.isoformat(), 0.75)
    assert trace["model"]["version"] == str(version) and trace["model"]["candidate"] == "logistic"
    assert trace["training"]["raw"]["flights"]["materialized_days"] == 2
    assert trace["raw_for_flight_day"]["flights"]["materialized"]

    # The command opens the lake itself: an unknown flight is named, the catalog's password never
    # (the throwaway server trusts its clients, so any password connects).
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("ML_PLATFORM_WAREHOUSE", f"{settings.warehouse} password=s3cret")
    capsys.readouterr()
    assert cli_main(["lineage", flight, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["version"] == str(version)
    assert cli_main(["lineage", "no-such-flight"]) == 2
    refused = capsys.readouterr().err
    assert "no prediction for flight 'no-such-flight' in ducklake:postgres:" in refused
    assert "s3cret" not in refused
