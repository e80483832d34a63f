"""The ML lifecycle against a real ``mlflow server`` process, as ``make dev`` runs it (behind a
proxy that counts the calls): training and predictions through the served store, and a
materialization costs a fixed number of tracking calls, whatever the data's size."""

from collections import Counter

import pytest
from mlflow.tracking import MlflowClient

from ml_platform.config import load_settings
from ml_platform.keys import LOGREG, PREDICTIONS, op_name
from ml_platform.resources import build_resources
from ml_platform_tests.conftest import local_instance
from ml_platform_tests.ml_support import (
    materialize_features,
    predict,
    predict_range,
    train,
    training_config,
)
from ml_platform_tests.reliability.fault_proxy import FaultProxy
from ml_platform_tests.services import mlflow_server


@pytest.fixture
def counted(tmp_path, monkeypatch):
    with mlflow_server(tmp_path / "mlflow") as (url, _), FaultProxy(url) as proxy:
        monkeypatch.setenv("ML_PLATFORM_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.url())
        monkeypatch.setenv("ML_PLATFORM_PROMOTION_AUC_FLOOR", "0.5")
        monkeypatch.delenv("ML_PLATFORM_MLFLOW_ARTIFACTS", raising=False)
        monkeypatch.delenv("ML_PLATFORM_SOURCE", raising=False)
        (tmp_path / "home").mkdir()
        with local_instance(tmp_path / "home") as instance:
            yield load_settings(), instance, proxy


def calls(proxy: FaultProxy, since: int) -> Counter:
    """Tracking calls by endpoint (the client's one-off server-info probe is not per run)."""
    endpoints = (f"{method} {path.split('?')[0]}" for method, path, _ in proxy.seen[since:])
    return Counter(e for e in endpoints if "server-info" not in e)


def test_training_and_predictions_through_a_served_store_cost_fixed_tracking_calls(counted):
    settings, instance, proxy = counted
    assert materialize_features(settings, instance, "2013-01-05", "2013-01-24").success
    trained = train(settings, instance, training_config("2013-01-19", window_days=10, holdout_days=3))
    assert trained.success
    champion = _the_served_store_holds_the_runs_and_the_champion(settings, trained)
    mark = len(proxy.seen)
    scored = predict(settings, instance, "2013-01-22")
    assert scored.success
    one_day = calls(proxy, mark)
    metadata = scored.asset_materializations_for_node(op_name(PREDICTIONS))[0].metadata
    assert metadata["model_version"].value == str(champion.version)
    (day_run,) = MlflowClient(settings.mlflow_tracking_uri).search_runs(
        [champion_experiment(settings)], f"tags.`dagster.run_id` = '{scored.run_id}'"
    )
    assert day_run.info.run_name == "serving/predictions[2013-01-22]"
    assert day_run.data.tags["dagster.partition_key"] == "2013-01-22"
    mark = len(proxy.seen)
    five_days = predict_range(settings, instance, "2013-01-20", "2013-01-24")
    assert five_days.success
    assert calls(proxy, mark) == one_day
    # Run creation, one batched log call, one status update: no call per row, per metric or per step.
    assert one_day["POST /api/2.0/mlflow/runs/log-batch"] == 1
    assert one_day["POST /api/2.0/mlflow/runs/create"] == 1
    assert sum(one_day.values()) <= 25, one_day
    _a_ranged_run_names_its_range_and_each_day_carries_its_own_figures(settings, five_days)


def _a_ranged_run_names_its_range_and_each_day_carries_its_own_figures(settings, result):
    client = MlflowClient(settings.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    (run,) = client.search_runs([experiment.experiment_id], f"tags.`dagster.run_id` = '{result.run_id}'")
    assert run.info.run_name == "serving/predictions[2013-01-20..2013-01-24]"
    assert run.data.tags["dagster.partition_key"] == "2013-01-20..2013-01-24"
    stored = (
        build_resources(settings)["warehouse"]
        .query(
            "select strftime(flight_date, '%Y-%m-%d') as day, count(*) as n, avg(late_probability) as p"
            " from serving.predictions group by 1"
        )
        .set_index("day")
    )
    events = {e.partition: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert set(events) == {f"2013-01-{d}" for d in range(20, 25)}
    for day, metadata in events.items():
        assert metadata["dagster/partition_row_count"].value == stored.loc[day, "n"]
        assert metadata["mean_probability"].value == pytest.approx(stored.loc[day, "p"])


def _the_served_store_holds_the_runs_and_the_champion(settings, result):
    url = settings.mlflow_tracking_uri
    assert settings.mlflow_artifact_location is None  # the server stores the artifacts
    client = MlflowClient(url, registry_uri=url)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    runs = client.search_runs([experiment.experiment_id], f"tags.`dagster.run_id` = '{result.run_id}'")
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}
    # Links from Dagster point at the served UI.
    mat = result.asset_materializations_for_node(op_name(LOGREG.key))[0]
    assert mat.metadata["mlflow_run"].value.startswith(
        f"{url}/#/experiments/{experiment.experiment_id}/runs/"
    )
    return client.get_model_version_by_alias(settings.registered_model_name, "champion")


def champion_experiment(settings) -> str:
    return (
        MlflowClient(settings.mlflow_tracking_uri)
        .get_experiment_by_name(settings.mlflow_experiment)
        .experiment_id
    )
