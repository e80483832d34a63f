"""The ML lifecycle against a real ``mlflow server`` process, as ``make dev`` runs it."""

import pytest
from mlflow.tracking import MlflowClient

from ml_platform.config import load_settings
from ml_platform_tests.conftest import local_instance
from ml_platform_tests.ml_support import materialize_features, predict, train, training_config
from ml_platform_tests.services import mlflow_server, stop


@pytest.fixture
def served(tmp_path, monkeypatch):
    with mlflow_server(tmp_path / "mlflow-server") as (url, proc):
        monkeypatch.setenv("ML_PLATFORM_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.delenv("ML_PLATFORM_MLFLOW_ARTIFACTS", raising=False)
        monkeypatch.delenv("ML_PLATFORM_SOURCE", raising=False)
        # A short February window; this test is about the served store, not the gate's floor.
        monkeypatch.setenv("ML_PLATFORM_PROMOTION_AUC_FLOOR", "0.5")
        (tmp_path / "home").mkdir()
        with local_instance(tmp_path / "home") as instance:
            yield load_settings(), instance, url, proc


def test_training_and_predictions_through_a_served_tracking_store(served):
    settings, instance, url, proc = served
    assert settings.mlflow_tracking_uri == url and settings.mlflow_artifact_location is None
    assert materialize_features(settings, instance, "2013-02-01", "2013-02-17").success
    result = train(settings, instance, training_config("2013-02-14", window_days=12, holdout_days=3))
    assert result.success
    client = MlflowClient(url, registry_uri=url)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    runs = client.search_runs([experiment.experiment_id], f"tags.`dagster.run_id` = '{result.run_id}'")
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}
    # Links from Dagster point at the served UI.
    mat = result.asset_materializations_for_node("training__candidate_logreg")[0]
    assert mat.metadata["mlflow_run"].value.startswith(
        f"{url}/#/experiments/{experiment.experiment_id}/runs/"
    )
    champion = client.get_model_version_by_alias(settings.registered_model_name, "champion")
    scored = predict(settings, instance, "2013-02-15")
    assert scored.success
    assert scored.asset_materializations_for_node("serving__predictions")[0].metadata[
        "model_version"
    ].value == str(champion.version)
    assert stop(proc) in (0, -15)
