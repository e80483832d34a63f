"""The ML lifecycle on real parts: DuckDB, dbt, a Dagster instance and an MLflow SQLite store."""

from pathlib import Path
from typing import Annotated

import dagster as dg
import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pydantic import Field

from ml_platform.config import load_settings
from ml_platform.definitions import build_definitions
from ml_platform.keys import (
    BACKTEST,
    CANDIDATES,
    CHAMPION_MODEL,
    HGB,
    LOGREG,
    MODEL_SELECTION,
    TRAINING_SET,
    Candidate,
    op_name,
)
from ml_platform.ml.frames import NUMERIC, feature_frame
from ml_platform.resources import build_resources
from ml_platform.resources.policy import ModelPolicy
from ml_platform_tests.asset_status import graphql_context, launch, ui_status
from ml_platform_tests.conftest import local_instance
from ml_platform_tests.ml_support import (
    MONITORING,
    WEAK_CANDIDATES,
    all_definitions,
    materialize_features,
    predict,
    train,
    training_config,
)

CUTOFF = "2013-01-19"
ML_ASSETS = [*(c.key for c in CANDIDATES), MODEL_SELECTION, CHAMPION_MODEL]


@pytest.fixture(scope="module")
def ml_env(tmp_path_factory):
    """One warehouse with features for 2013-01-05..01-24, one MLflow store, one trained champion."""
    root = tmp_path_factory.mktemp("ml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML_PLATFORM_DATA_DIR", str(root / "data"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'data' / 'mlflow' / 'mlflow.db'}")
        mp.setenv("ML_PLATFORM_MLFLOW_ARTIFACTS", str(root / "data" / "mlflow" / "artifacts"))
        mp.delenv("ML_PLATFORM_SOURCE", raising=False)
        (root / "data" / "mlflow").mkdir(parents=True)
        (root / "dagster_home").mkdir()
        settings = load_settings()
        with local_instance(root / "dagster_home") as instance:
            assert materialize_features(settings, instance, "2013-01-05", "2013-01-24").success
            first = train(settings, instance, training_config(CUTOFF))
            yield settings, instance, first


def client(settings) -> MlflowClient:
    return MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def runs_of(settings, dagster_run_id: str):
    c = client(settings)
    experiment = c.get_experiment_by_name(settings.mlflow_experiment)
    return c.search_runs([experiment.experiment_id], f"tags.`dagster.run_id` = '{dagster_run_id}'")


def test_each_materialization_is_its_own_finished_mlflow_run(ml_env):
    settings, _, result = ml_env
    runs = runs_of(settings, result.run_id)
    names = sorted(r.info.run_name for r in runs)
    assert names == sorted(key.to_user_string() for key in ML_ASSETS)
    for run in runs:
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags["dagster.asset_key"] == run.info.run_name
        assert tags["dagster.run_url"].endswith(f"/runs/{result.run_id}")
        assert "dagster.code_version" in tags
    candidate = next(r for r in runs if r.info.run_name == HGB.key.to_user_string())
    assert candidate.data.params["learning_rate"] == "0.08"
    assert 0.55 < candidate.data.metrics["roc_auc"] < 0.95
    assert candidate.data.tags["dagster.input.training/training_set"] != "unknown"
    artifacts = {a.path for a in client(settings).list_artifacts(candidate.info.run_id, "plots")}
    assert artifacts == {"plots/roc.png", "plots/calibration.png", "plots/confusion.png"}
    # The Dagster side links back to the MLflow run.
    mat = result.asset_materializations_for_node(op_name(HGB.key))[0]
    assert mat.metadata["mlflow_run_id"].value == candidate.info.run_id
    assert mat.metadata["plots"].value.count("data:image/png;base64,") == 3


def test_training_set_holds_nothing_after_the_cutoff(ml_env):
    settings, *_ = ml_env
    frame = build_resources(settings)["warehouse"].query("select * from training.training_set")
    train_rows = frame[frame.split == "train"]
    assert pd.to_datetime(train_rows.flight_date).max() < pd.Timestamp(CUTOFF)
    assert pd.to_datetime(frame[frame.split == "holdout"].flight_date).min() == pd.Timestamp(CUTOFF)
    assert frame.arrived_late.notna().all()


def test_first_champion_is_registered_with_lineage_tags(ml_env):
    settings, _, result = ml_env
    version = client(settings).get_model_version_by_alias(settings.registered_model_name, "champion")
    assert version.tags["gate"] == "passed"
    assert version.tags["dagster.run_id"] == result.run_id
    assert version.tags["cutoff"] == CUTOFF
    check = [e for e in result.get_asset_check_evaluations() if e.check_name == "champion_passed_gate"]
    assert len(check) == 1 and check[0].passed


# Dagster refuses a value outside the launchpad's Enum of days before a run exists.
REFUSED = "Value at path root:ops:training__training_set:config:cutoff not in enum type {form} got {value}"
CUTOFF_FORM = "a day from 2013-01-01 to 2013-12-31 (YYYY-MM-DD)"


def test_a_cutoff_that_is_not_a_day_starts_no_run_and_the_ui_shows_the_champion_as_before(ml_env):
    """Launched as the launchpad launches it (the training group's assets, or the retrain job) or
    in process, a bad cutoff is refused with the field and the allowed days before any run exists:
    nothing fails, nothing alerts, and the UI shows the champion and the other training assets as
    it did. For contrast, a value only the step can judge fails one run, and Dagster then shows
    every asset that run planned as failed."""
    settings, instance, _ = ml_env
    keys = [TRAINING_SET, *ML_ASSETS]
    champion = client(settings).get_model_version_by_alias(settings.registered_model_name, "champion")
    (latest,) = instance.fetch_materializations(CHAMPION_MODEL, limit=1).records
    runs = instance.get_runs_count()
    with graphql_context(instance) as context:
        before = ui_status(context, keys)
        assert not any(status["failed"] for status in before.values()), before
        assert before[CHAMPION_MODEL.to_user_string()]["materialized_by"] == latest.run_id
        for answer in (
            launch(context, training_config("2013-13-01"), assets=keys),
            launch(context, training_config("2013-13-01"), job="retrain"),
        ):
            assert answer["__typename"] == "RunConfigValidationInvalid", answer
            assert [e["message"] for e in answer["errors"]] == [
                REFUSED.format(form=CUTOFF_FORM, value="2013-13-01")
            ]
    for value in ("2013-13-01", "2014-03-01", "2013-6-1"):
        with pytest.raises(dg.DagsterInvalidConfigError) as refused:
            train(settings, instance, training_config(value))
        assert REFUSED.format(form=CUTOFF_FORM, value=value) in str(refused.value)
    assert instance.get_runs_count() == runs
    with graphql_context(instance) as context:
        assert ui_status(context, keys) == before
    assert instance.fetch_materializations(CHAMPION_MODEL, limit=1).records == [latest]
    now = client(settings).get_model_version_by_alias(settings.registered_model_name, "champion")
    assert now.version == champion.version

    failed = train(settings, instance, training_config(CUTOFF, window_days=0), raise_on_error=False)
    assert not failed.success and instance.get_runs_count() == runs + 1
    with graphql_context(instance) as context:
        after = ui_status(context, keys)
    assert all(s["failed"] and s["latest_run"] == failed.run_id for s in after.values()), after
    assert after[CHAMPION_MODEL.to_user_string()]["materialized_by"] == latest.run_id


def test_gate_refuses_a_worse_model_and_keeps_the_champion(ml_env):
    settings, instance, _ = ml_env
    before = client(settings).get_model_version_by_alias(settings.registered_model_name, "champion")
    weak = train(settings, instance, training_config(CUTOFF, **WEAK_CANDIDATES))
    assert weak.success
    decision = weak.output_for_node(op_name(MODEL_SELECTION))
    assert decision["promote"] is False
    assert any("current champion scores" in r for r in decision["reasons"])
    after = client(settings).get_model_version_by_alias(settings.registered_model_name, "champion")
    assert after.version == before.version
    challenger = client(settings).get_model_version_by_alias(settings.registered_model_name, "challenger")
    assert challenger.tags["gate"] == "rejected" and int(challenger.version) > int(before.version)


@pytest.mark.parametrize(
    ("run_config", "step", "headline"),
    [
        (training_config(CUTOFF, window_days=0), TRAINING_SET, "window_days: Input should be greater than"),
        (training_config(None), TRAINING_SET, "cutoff: Input should be a valid string (got None)"),
        (training_config("2013-06-01"), TRAINING_SET, "no labelled features for the train window"),
        (training_config(CUTOFF, candidate_hgb={"learning_rate": 0}), HGB.key, "learning_rate: Input should"),
    ],
)
def test_a_bad_launchpad_value_fails_one_step_with_a_headline_and_keeps_the_champion(
    ml_env, run_config, step, headline
):
    settings, instance, _ = ml_env
    champion = client(settings).get_model_version_by_alias(settings.registered_model_name, "champion")
    before = instance.get_latest_materialization_event(CHAMPION_MODEL).run_id
    result = train(settings, instance, run_config, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert [e.step_key for e in failures] == [op_name(step)]
    data = failures[0].step_failure_data
    # A Failure: its description is the headline, and it is never retried.
    assert data.user_failure_data is not None and headline in data.user_failure_data.description
    assert step.to_user_string() in data.user_failure_data.description
    assert not result.get_asset_materialization_events() or step == HGB.key
    now = client(settings).get_model_version_by_alias(settings.registered_model_name, "champion")
    assert now.version == champion.version
    assert instance.get_latest_materialization_event(CHAMPION_MODEL).run_id == before


def test_predictions_use_the_champion_and_record_its_version(ml_env):
    settings, instance, _ = ml_env
    champion = client(settings).get_model_version_by_alias(settings.registered_model_name, "champion")
    result = predict(settings, instance, "2013-01-22")
    assert result.success
    stored = build_resources(settings)["warehouse"].query(
        "select * from serving.predictions where flight_date = ?", ["2013-01-22"]
    )
    features = build_resources(settings)["warehouse"].query(
        "select * from features.flight_features where flight_date = ? order by flight_id", ["2013-01-22"]
    )
    assert len(stored) == len(features) > 0
    assert set(stored.model_version) == {str(champion.version)}
    assert stored.flight_id.is_unique
    # The model reloaded from the registry scores exactly what was stored.
    model = mlflow.sklearn.load_model(f"models:/{settings.registered_model_name}@champion")
    expected = pd.Series(model.predict_proba(feature_frame(features))[:, 1], index=features.flight_id)
    got = stored.set_index("flight_id").late_probability.loc[expected.index]
    assert (got - expected).abs().max() < 1e-12


def test_a_failing_materialization_ends_its_mlflow_run_failed(settings, instance):
    @dg.asset(key=["training", "explodes"])
    def explodes(context: dg.AssetExecutionContext, mlflow: dg.ResourceParam):  # type: ignore[valid-type]
        with mlflow.materialization_run(context) as run:
            run.log_metrics({"before_failure": 1.0})
            raise RuntimeError("boom")

    resources = build_resources(settings)
    result = dg.materialize(
        [explodes], resources={"mlflow": resources["mlflow"]}, instance=instance, raise_on_error=False
    )
    assert not result.success
    runs = runs_of(settings, result.run_id)
    assert len(runs) == 1
    assert runs[0].info.status == "FAILED"
    assert runs[0].info.run_name == "training/explodes"
    assert runs[0].data.metrics["before_failure"] == 1.0


def test_plots_are_valid_png_files(ml_env, tmp_path: Path):
    settings, _, result = ml_env
    run = next(r for r in runs_of(settings, result.run_id) if r.info.run_name == LOGREG.key.to_user_string())
    local = client(settings).download_artifacts(run.info.run_id, "plots/roc.png", str(tmp_path))
    assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_monitoring_checks_pass_and_fail_on_their_configured_thresholds(ml_env):
    settings, instance, _ = ml_env
    assert predict(settings, instance, "2013-01-23").success
    relaxed = predict(settings, instance, "2013-01-23", selection=MONITORING)
    checks = {e.check_name: e for e in relaxed.get_asset_check_evaluations()}
    assert checks["auc_above_floor"].passed
    quality = build_resources(settings)["warehouse"].query(
        "select * from monitoring.prediction_quality where flight_date = ?", ["2013-01-23"]
    )
    assert len(quality) == 1 and 0.5 < quality.roc_auc[0] < 1 and quality.labelled[0] > 500
    drift = build_resources(settings)["warehouse"].query(
        "select * from monitoring.feature_drift where flight_date = ?", ["2013-01-23"]
    )
    assert {"carrier", "temp", "distance"} <= set(drift.feature) and (drift.psi >= 0).all()

    strict = ModelPolicy(quality_min_auc=0.99, drift_max_psi=0.0, drift_max_psi_weather=0.0)
    failed = predict(settings, instance, "2013-01-23", selection=MONITORING, policy=strict)
    checks = {e.check_name: e for e in failed.get_asset_check_evaluations()}
    assert not checks["auc_above_floor"].passed
    assert not checks["psi_below_threshold"].passed
    assert checks["psi_below_threshold"].metadata["drifted_features"].value != "none"


def test_backtest_reports_weekly_and_frozen_auc_with_a_plot(ml_env):
    settings, instance, _ = ml_env
    config = {
        "first_cutoff": "2013-01-15",
        "last_cutoff": "2013-01-22",
        "frozen_until": "2013-01-12",
        "window_days": 7,
        "holdout_days": 3,
        "max_iter": 30,
    }
    result = dg.materialize(
        all_definitions(),
        selection=dg.AssetSelection.assets(BACKTEST),
        resources=build_resources(settings),
        instance=instance,
        run_config={"ops": {op_name(BACKTEST): {"config": config}}},
    )
    weeks = result.output_for_node(op_name(BACKTEST))
    assert [w["week_start"] for w in weeks] == ["2013-01-15", "2013-01-18", "2013-01-21"]
    assert all(0.4 < w["auc_weekly_retrain"] < 1 and 0.4 < w["auc_frozen"] < 1 for w in weeks)
    meta = result.asset_materializations_for_node(op_name(BACKTEST))[0].metadata
    assert meta["plot"].value.startswith("![weekly AUC](data:image/png;base64,")
    # No point-in-time features here: those regimes are reported as skipped, the daily one stands.
    assert meta["regimes"].value == {
        "daily": "measured",
        "day_ahead": "its feature table has no rows",
        "nowcast": "its feature table has no rows",
    }
    run = client(settings).get_run(meta["mlflow_run_id"].value)
    assert run.data.metrics["weeks"] == 3.0 and run.info.status == "FINISHED"


def shallow_tree(max_depth: Annotated[int, Field(ge=1, le=8)] = 3):
    """A fourth candidate, registered by this test only: a shallow tree on the numeric features."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    numeric = ColumnTransformer([("num", SimpleImputer(strategy="median"), NUMERIC)])
    tree = DecisionTreeClassifier(max_depth=max_depth, random_state=0)
    return Pipeline([("features", numeric), ("model", tree)])


TREE = Candidate("tree", shallow_tree, "A shallow decision tree on the numeric features.")


def test_a_registered_fourth_candidate_is_an_asset_and_competes_in_model_selection(ml_env):
    settings, instance, _ = ml_env
    defs = build_definitions(settings, (*CANDIDATES, TREE))
    graph = defs.resolve_asset_graph()
    assert graph.get(TREE.key).group_name == "training"
    assert set(graph.get(TREE.key).parent_keys) == {TRAINING_SET}
    assert set(graph.get(MODEL_SELECTION).parent_keys) == {
        TRAINING_SET,
        *(c.key for c in CANDIDATES),
        TREE.key,
    }
    assert TREE.key in defs.resolve_job_def("retrain").asset_layer.executable_asset_keys
    # Its launchpad config is its builder's signature.
    (field,) = defs.get_assets_def(TREE.key).op.config_schema.config_type.fields.items()
    assert field[0] == "max_depth" and field[1].default_value == 3

    # The other candidates and the training set are as the last training run stored them.
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=[TREE.key, MODEL_SELECTION],
        resources=defs.resources,
        instance=instance,
        run_config={"ops": {op_name(TREE.key): {"config": {"max_depth": 4}}}},
    )
    assert result.success
    runs = {r.info.run_name: r for r in runs_of(settings, result.run_id)}
    tree_run = runs[TREE.key.to_user_string()]
    assert tree_run.data.params["max_depth"] == "4"
    assert 0.5 < tree_run.data.metrics["roc_auc"] < 0.95
    selection = runs[MODEL_SELECTION.to_user_string()]
    assert set(selection.data.metrics) >= {f"auc_{c.asset_name}" for c in (*CANDIDATES, TREE)}
    table = result.asset_materializations_for_node(op_name(MODEL_SELECTION))[0].metadata["candidates"]
    assert TREE.asset_name in table.value
    decision = result.output_for_node(op_name(MODEL_SELECTION))
    assert decision["best"]["name"] in {c.asset_name for c in (*CANDIDATES, TREE)}
