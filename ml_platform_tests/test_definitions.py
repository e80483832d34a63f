"""The code location loads, and the foundation's assets carry the policies the platform relies on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import BackfillPolicy, DailyPartitionsDefinition

from ml_platform import keys
from ml_platform.automation.execution import forkserver_unless_chosen
from ml_platform.config import DBT_PROJECT_DIR, REPO_ROOT
from ml_platform.definitions import build_definitions
from ml_platform.features.assets import (
    MODEL_CODE_VERSIONS,
    FeatureTranslator,
    build_dbt_features,
    dbt_project,
    manifest,
)
from ml_platform.ingestion.assets import build_raw_daily_assets, raw_reference_assets
from ml_platform.ingestion.quality import DAILY_CHECKS, REFERENCE_CHECKS
from ml_platform.ingestion.schemas import DAILY_TABLES, REFERENCE_TABLES
from ml_platform.partitions import daily_partitions_for
from ml_platform.resources.warehouse import WAREHOUSE_POOL

FEATURES = keys.FLIGHT_FEATURES


@pytest.fixture
def daily_partitions(settings):
    return daily_partitions_for(settings)


@pytest.fixture
def raw_daily_assets(daily_partitions):
    return build_raw_daily_assets(daily_partitions)


@pytest.fixture
def dbt_features(daily_partitions):
    return build_dbt_features(daily_partitions)


def test_dagster_definitions_validate(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    data = tmp_path / "data"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ML_PLATFORM_ENV": "local",
        "ML_PLATFORM_DATA_DIR": str(data),
        "MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow' / 'mlflow.db'}",
        "ML_PLATFORM_MLFLOW_ARTIFACTS": str(data / "mlflow" / "artifacts"),
    }
    for name in ("ML_PLATFORM_WAREHOUSE", "ML_PLATFORM_LANDING_ROOT", "ML_PLATFORM_SOURCE"):
        env.pop(name, None)
    dagster = Path(sys.executable).parent / "dagster"
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "ml_platform.definitions"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "All code locations passed validation" in output


def test_the_partitioning_is_the_2013_day_range(daily_partitions):
    assert isinstance(daily_partitions, DailyPartitionsDefinition)
    keys = daily_partitions.get_partition_keys()
    assert (keys[0], keys[-1], len(keys)) == ("2013-01-01", "2013-12-31", 365)
    assert daily_partitions.timezone == "UTC"


def test_every_warehouse_writer_shares_one_pool(raw_daily_assets, dbt_features):
    for assets_def in [*raw_daily_assets, *raw_reference_assets, dbt_features]:
        assert assets_def.node_def.pool == WAREHOUSE_POOL, assets_def.keys


def test_partitioned_assets_backfill_in_a_single_run(raw_daily_assets, dbt_features, daily_partitions):
    for assets_def in [*raw_daily_assets, dbt_features]:
        assert assets_def.partitions_def == daily_partitions, assets_def.keys
        assert assets_def.backfill_policy == BackfillPolicy.single_run(), assets_def.keys
    for assets_def in raw_reference_assets:
        assert assets_def.partitions_def is None


def test_a_staging_edit_changes_the_version_of_the_features_that_inline_it(dbt_features):
    feature_id = next(u for u, n in manifest["nodes"].items() if n["name"] == "flight_features")
    version = dbt_features.code_versions_by_key[FEATURES]
    assert version == FeatureTranslator(manifest).get_code_version(manifest["nodes"][feature_id])

    edited = json.loads(json.dumps(manifest))
    staging_id = next(u for u, n in edited["nodes"].items() if n["name"] == "stg_weather")
    assert edited["nodes"][staging_id]["config"]["materialized"] == "ephemeral"
    edited["nodes"][staging_id]["checksum"]["checksum"] = "edited"
    assert FeatureTranslator(edited).get_code_version(edited["nodes"][feature_id]) != version

    own_only = json.loads(json.dumps(manifest))
    own_only["nodes"][feature_id]["depends_on"]["nodes"] = []
    assert FeatureTranslator(own_only).get_code_version(own_only["nodes"][feature_id]) != version


def test_raw_checks_are_declared_with_their_blocking_flags(raw_daily_assets):
    for assets_defs, declared in ((raw_daily_assets, DAILY_CHECKS), (raw_reference_assets, REFERENCE_CHECKS)):
        for assets_def in assets_defs:
            (key,) = assets_def.keys
            assert key in keys.RAW.values()
            specs = sorted((s.name, s.blocking) for s in assets_def.check_specs)
            assert specs == sorted(declared), key
            assert all(s.asset_key == key for s in assets_def.check_specs)
            expected = {"flights": "flight_date", "weather": "weather_date"}.get(key.path[1])
            assert assets_def.metadata_by_key[key].get("partition_expr") == expected


def test_dbt_features_depend_on_the_raw_tables_and_expose_their_tests_as_checks(
    raw_daily_assets, dbt_features
):
    # The staging models are ephemeral: compiled into flight_features, not assets of their own.
    assert set(dbt_features.keys) == {FEATURES}
    assert {keys.RAW_FLIGHTS, keys.RAW_WEATHER, keys.RAW_PLANES} <= set(dbt_features.dependency_keys)
    assert set(dbt_features.group_names_by_key.values()) == {"features"}
    for assets_def in [*raw_daily_assets, *raw_reference_assets]:
        assert set(assets_def.group_names_by_key.values()) == {"ingestion"}

    checks = {s.name: s for s in dbt_features.check_specs if s.asset_key == FEATURES}
    for name in (
        "unique_in_window_flight_features_flight_id",
        "not_null_flight_features_flight_id",
        "row_count_matches_flights_flight_features_",
        "weather_joined_flight_features_",
    ):
        assert name in checks
    assert checks["unique_in_window_flight_features_flight_id"].blocking
    assert not checks["weather_joined_flight_features_"].blocking  # severity: warn


def test_the_feature_model_is_audited_in_staging_and_the_manifest_is_prepared(dbt_features):
    """dbt builds the window alone into features_staging; the step publishes it into features."""
    assert Path(dbt_project.manifest_path).is_file()
    assert Path(dbt_project.manifest_path).is_relative_to(DBT_PROJECT_DIR)
    manifest = json.loads(Path(dbt_project.manifest_path).read_text())
    model = manifest["nodes"]["model.ml_platform.flight_features"]
    assert model["config"]["materialized"] == "table"
    assert model["config"]["contract"]["enforced"]
    assert model["config"]["schema"] == "features_staging"
    assert model["config"]["meta"]["publish_schema"] == "features"
    table = dbt_features.specs_by_key[FEATURES].metadata["dagster/table_name"]
    assert table.endswith(".features.flight_features")
    tests = [n for n in manifest["nodes"].values() if n["resource_type"] == "test"]
    assert tests and all(n["config"]["store_failures_as"] == "view" for n in tests)


def test_steps_fork_from_a_preloaded_server_unless_the_run_chooses_otherwise():
    default = forkserver_unless_chosen({"multiprocess": {"max_concurrent": None}})
    assert default == {
        "multiprocess": {
            "max_concurrent": None,
            "start_method": {"forkserver": {"preload_modules": ["ml_platform.definitions"]}},
        }
    }
    # A run (ingestion, or the launchpad) that asks for one process, or another start method, gets it.
    assert forkserver_unless_chosen({"in_process": {}}) == {"in_process": {}}
    spawn = {"multiprocess": {"start_method": {"spawn": {}}}}
    assert forkserver_unless_chosen(spawn) == spawn


def test_the_model_code_versions_known_at_import_are_those_of_the_built_dbt_assets(dbt_features):
    # Assets computed from the features carry these versions before any dbt asset is built.
    assert MODEL_CODE_VERSIONS == dbt_features.code_versions_by_key


def test_every_asset_key_of_the_location_is_declared_once_in_keys(settings):
    defs = build_definitions(settings)
    built = set(defs.resolve_asset_graph().get_all_asset_keys())
    declared = {value for value in vars(keys).values() if isinstance(value, type(FEATURES))}
    declared |= set(keys.RAW.values()) | {c.key for c in keys.CANDIDATES}
    assert built == declared
    assert set(keys.RAW) == set(DAILY_TABLES) | set(REFERENCE_TABLES)
