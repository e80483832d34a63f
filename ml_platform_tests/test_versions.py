"""Data versions, skip-if-unchanged, lineage and reproducibility, on real parts (code versions:
test_code_versions.py)."""

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date

import dagster as dg
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ml_platform.cli import main as cli_main
from ml_platform.config import load_settings
from ml_platform.ingestion.landing import land_days
from ml_platform.keys import (
    CANDIDATES,
    CHAMPION_MODEL,
    FLIGHT_FEATURES,
    MODEL_SELECTION,
    PREDICTIONS,
    RAW_FLIGHTS,
    RAW_PLANES,
    RAW_WEATHER,
    TRAINING_SET,
    op_name,
)
from ml_platform.resources import build_resources
from ml_platform.versions import (
    FORCE_TAG,
    frame_hash,
    hash_of_rows,
    row_hashes,
)
from ml_platform_tests.conftest import REPO_ROOT, TEST_OUTPUT, local_instance
from ml_platform_tests.ml_support import (
    all_definitions,
    materialize_features,
    predict,
    train,
    training_config,
)

CUTOFF = "2013-01-19"
PREDICT_DAY = "2013-01-21"
FEATURES = FLIGHT_FEATURES
CANDIDATE_NODES = [op_name(c.key) for c in CANDIDATES]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Landing-zone source, features for 2013-01-05..01-22, one champion and a day's predictions."""
    root = tmp_path_factory.mktemp("versions")
    home = root / "dagster_home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML_PLATFORM_DATA_DIR", str(root / "data"))
        mp.setenv("ML_PLATFORM_SOURCE", "landing")
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'data' / 'mlflow' / 'mlflow.db'}")
        mp.setenv("ML_PLATFORM_MLFLOW_ARTIFACTS", str(root / "data" / "mlflow" / "artifacts"))
        mp.setenv("DAGSTER_HOME", str(home))
        (root / "data" / "mlflow").mkdir(parents=True)
        settings = load_settings()
        land_days(date(2013, 1, 5), 18, settings.landing_root, echo=lambda _: None)
        with local_instance(home) as instance:
            started = time.perf_counter()
            assert materialize_features(settings, instance, "2013-01-05", "2013-01-22").success
            features_seconds = time.perf_counter() - started
            started = time.perf_counter()
            first = train(settings, instance, training_config(CUTOFF))
            training_seconds = time.perf_counter() - started
            assert first.success
            assert predict(settings, instance, PREDICT_DAY).success
            yield {
                "settings": settings,
                "instance": instance,
                "first": first,
                "home": home,
                "features_seconds": features_seconds,
                "training_seconds": training_seconds,
            }


def client(settings):
    return MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def mat(result, node):
    return result.asset_materializations_for_node(node)[0]


def test_a_days_hash_from_the_whole_frames_row_hashes_equals_the_hash_of_that_day_alone():
    frame = pd.DataFrame(
        {
            "day": pd.to_datetime(["2013-01-02", "2013-01-01", "2013-01-02", "2013-01-03", "2013-01-01"]),
            "carrier": pd.Categorical(["UA", "AA", None, "UA", "B6"]),
            "flight": pd.array([1, None, 3, 4, 5], dtype="Int64"),
            "tailnum": ["N1", None, "N3", "N4", "N5"],
            "delay": [1.5, float("nan"), -2.0, 0.0, 7.25],
        }
    )
    hashes = row_hashes(frame)
    for day, rows in frame.groupby("day"):
        positions = frame.index.get_indexer(rows.index)
        assert hash_of_rows(frame.columns, hashes[positions]) == frame_hash(rows), day
    assert hash_of_rows(frame.columns, hashes) == frame_hash(frame)
    assert hash_of_rows(frame.columns, hashes[:0]) == frame_hash(frame.iloc[0:0])
    assert hash_of_rows(frame.columns, hashes[[0]]) != hash_of_rows(frame.columns, hashes[[2]])
    assert frame_hash(pd.DataFrame({"a": [1, 2]})) == frame_hash(pd.DataFrame({"a": [2, 1]}))
    assert frame_hash(pd.DataFrame({"a": [1, 2]})) != frame_hash(pd.DataFrame({"a": [1, 3]}))


def test_every_asset_has_a_code_version(env):
    specs = build_resources  # noqa: F841 - the definitions below use the module settings
    from ml_platform.definitions import build_definitions

    versions = {s.key.to_user_string(): s.code_version for s in build_definitions().resolve_all_asset_specs()}
    assert all(versions.values()), [k for k, v in versions.items() if not v]


def test_raw_data_version_is_the_content_and_a_changed_file_changes_it(env):
    settings, instance = env["settings"], env["instance"]
    select = dg.AssetSelection.assets(["raw", "flights"])
    kwargs = dict(selection=select, resources=build_resources(settings), instance=instance)
    first = dg.materialize(all_definitions(), partition_key="2013-01-22", **kwargs)
    again = dg.materialize(all_definitions(), partition_key="2013-01-22", **kwargs)
    version = mat(first, "raw__flights").tags["dagster/data_version"]
    assert mat(again, "raw__flights").tags["dagster/data_version"] == version
    path = settings.landing_root / "flights" / "2013-01-22.parquet"
    original = path.read_bytes()
    try:
        frame = pd.read_parquet(path)
        frame.iloc[:-1].to_parquet(path, index=False)
        changed = dg.materialize(all_definitions(), partition_key="2013-01-22", **kwargs)
        assert mat(changed, "raw__flights").tags["dagster/data_version"] != version
    finally:
        path.write_bytes(original)
        assert dg.materialize(all_definitions(), partition_key="2013-01-22", **kwargs).success


def test_an_unchanged_rerun_skips_dbt_and_training_and_says_so(env):
    settings, instance = env["settings"], env["instance"]
    registry = client(settings)
    versions_before = len(registry.search_model_versions(f"name='{settings.registered_model_name}'"))
    started = time.perf_counter()
    features = materialize_features(settings, instance, "2013-01-05", "2013-01-22")
    features_seconds = time.perf_counter() - started
    started = time.perf_counter()
    retrain = train(settings, instance, training_config(CUTOFF))
    training_seconds = time.perf_counter() - started
    assert features.success and retrain.success
    ff = [e for e in features.get_asset_materialization_events() if e.asset_key == FEATURES]
    assert len(ff) == 18 and all(e.materialization.metadata["unchanged"].value for e in ff)
    for node in CANDIDATE_NODES:
        assert mat(retrain, node).metadata["unchanged"].value is True
        first_version = mat(env["first"], node).tags["dagster/data_version"]
        assert mat(retrain, node).tags["dagster/data_version"] == first_version
    assert mat(retrain, op_name(CHAMPION_MODEL)).metadata["unchanged"].value is True
    assert len(registry.search_model_versions(f"name='{settings.registered_model_name}'")) == versions_before
    report = {
        "features_first_seconds": env["features_seconds"],
        "features_unchanged_seconds": features_seconds,
        "training_first_seconds": env["training_seconds"],
        "training_unchanged_seconds": training_seconds,
    }
    report["features_fraction"] = features_seconds / env["features_seconds"]
    report["training_fraction"] = training_seconds / env["training_seconds"]
    (TEST_OUTPUT / "versions").mkdir(parents=True, exist_ok=True)
    (TEST_OUTPUT / "versions" / "skip_unchanged.json").write_text(json.dumps(report, indent=2))
    print(f"unchanged re-run cost: {report}")


def test_model_versions_carry_their_lineage_and_a_prediction_traces_back(env, capsys):
    settings = env["settings"]
    champion = client(settings).get_model_version_by_alias(settings.registered_model_name, "champion")
    tags = champion.tags
    assert tags["dagster.run_id"] == env["first"].run_id
    assert tags["code_version"] and tags["lineage.train_window"] == "2013-01-05..2013-01-18"
    assert tags["lineage.holdout_window"] == "2013-01-19..2013-01-22"
    assert tags["lineage.feature_partition_count"] == "18"
    run = client(settings).get_run(tags["source_run_id"])
    contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
    assert contexts == {"training", "evaluation"}
    flight = (
        build_resources(settings)["warehouse"]
        .query(
            "select flight_id from serving.predictions where flight_date = ? order by flight_id limit 1",
            [PREDICT_DAY],
        )
        .flight_id[0]
    )
    assert cli_main(["lineage", flight, "--json"]) == 0
    trace = json.loads(capsys.readouterr().out)
    assert trace["model"]["version"] == str(champion.version)
    assert trace["training"]["train_window"] == "2013-01-05..2013-01-18"
    assert trace["training"]["raw"]["flights"]["materialized_days"] == 14
    day_files = trace["raw_for_flight_day"]["flights"]["source_files"]
    assert day_files == str(settings.landing_root / "flights" / f"{PREDICT_DAY}.parquet")
    assert cli_main(["lineage", "no-such-flight"]) == 2


def test_retraining_from_the_same_inputs_reproduces_metrics_and_predictions(env):
    settings, instance = env["settings"], env["instance"]
    before = build_resources(settings)["warehouse"].query(
        "select flight_id, late_probability from serving.predictions where flight_date = ? order by 1",
        [PREDICT_DAY],
    )
    forced = dg.materialize(
        all_definitions(),
        selection=dg.AssetSelection.groups("training"),
        resources=build_resources(settings),
        instance=instance,
        run_config=training_config(CUTOFF),
        tags={FORCE_TAG: "true"},
    )
    assert forced.success
    for node in CANDIDATE_NODES:
        again, first = mat(forced, node).metadata, mat(env["first"], node).metadata
        assert again["unchanged"].value is False
        assert again["mlflow_run_id"].value != first["mlflow_run_id"].value  # really refitted
        for metric in ("roc_auc", "log_loss", "precision", "recall"):
            assert again[metric].value == first[metric].value
    assert predict(settings, instance, PREDICT_DAY).success
    after = build_resources(settings)["warehouse"].query(
        "select flight_id, late_probability from serving.predictions where flight_date = ? order by 1",
        [PREDICT_DAY],
    )
    pd.testing.assert_frame_equal(before, after)


def _statuses(env_vars: dict, *args: str) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "ml_platform_tests.stale_status", PREDICT_DAY, *args],
        check=True,
        env=env_vars,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_editing_one_features_sql_marks_it_and_its_descendants_stale_and_nothing_else(env, tmp_path):
    home_env = {**os.environ, "DAGSTER_HOME": str(env["home"])}
    before = _statuses(home_env)
    assert not {k for k, v in before.items() if v == "STALE"}

    project = tmp_path / "dbt_project"
    shutil.copytree(REPO_ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs"))
    sql = project / "models" / "features" / "flight_features.sql"
    sql.write_text(sql.read_text().replace("arr_delay > 15", "arr_delay > 15.0"))
    edited = {**home_env, "ML_PLATFORM_DBT_PROJECT_DIR": str(project)}
    dbt = shutil.which("dbt", path=str(REPO_ROOT / ".venv" / "bin")) or "dbt"
    subprocess.run(
        [dbt, "parse", "--quiet", "--project-dir", str(project), "--profiles-dir", str(project)],
        check=True,
        env=edited,
    )
    # The edit itself: the feature model's code version changed, and with it the code versions
    # of what is computed from features (training set, models, predictions); the raw and staging
    # layers and monitoring are not affected.
    after_edit = _statuses(edited)
    computed_from_features = [FLIGHT_FEATURES, TRAINING_SET, *(c.key for c in CANDIDATES)]
    computed_from_features += [MODEL_SELECTION, CHAMPION_MODEL, PREDICTIONS]
    assert {k for k, v in after_edit.items() if v == "STALE"} == {
        key.to_user_string() for key in computed_from_features
    }
    # Rebuilt with the new SQL, the features are fresh again; what reads them stays stale until
    # it is built again.
    after_rebuild = _statuses(edited, "2013-01-05", "2013-01-22")
    stale = {k for k, v in after_rebuild.items() if v == "STALE"}
    assert {PREDICTIONS.to_user_string(), TRAINING_SET.to_user_string()} <= stale
    assert not stale & {k.to_user_string() for k in (RAW_FLIGHTS, RAW_WEATHER, RAW_PLANES, FLIGHT_FEATURES)}
    assert not {k for k in stale if k.startswith("staging/")}
