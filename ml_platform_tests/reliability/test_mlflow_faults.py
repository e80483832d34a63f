"""MLflow unavailable or slow: a small proxy between the platform and a real ``mlflow server``
answers 503, holds responses past the timeout, or fails one endpoint; a closed port stands for a
server that is gone.

Tracking calls retry with backoff (MLflow's HTTP retry, configured by ``MlflowTracking``) and then
fail the materialization with a message naming the server, without the credentials in its URI;
the ``champion`` alias does not move; and once the server is back, the next materialization
leaves no MLflow run RUNNING (the orphan sweep ends what a failed run left open).

The materializations are model selection and the champion (the step that moves the alias), on
the shared trained platform; retries and timeouts are set small to keep this quick.
"""

from __future__ import annotations

import re
import time

import dagster as dg
import pytest

from ml_platform.keys import MODEL_SELECTION, op_name
from ml_platform.resources import build_resources
from ml_platform.resources.mlflow import CHAMPION, MlflowTracking
from ml_platform_tests.ml_support import WEAK_CANDIDATES, all_definitions
from ml_platform_tests.reliability.fault_proxy import FaultProxy
from ml_platform_tests.services import free_port

SELECT_AND_PROMOTE = [
    dg.AssetKey(["training", "model_selection"]),
    dg.AssetKey(["training", "champion_model"]),
]
CREDENTIALS = "mlflow-user:proxy-pass-7f3a"


def tracking(settings, uri: str, **overrides) -> MlflowTracking:
    return MlflowTracking(
        tracking_uri=uri,
        experiment=settings.mlflow_experiment,
        registered_model_name=settings.registered_model_name,
        dagster_url=settings.dagster_url,
        **{"max_retries": 2, "backoff_factor": 1, "timeout_seconds": 5, **overrides},
    )


def select_and_promote(settings, instance, mlflow: MlflowTracking):
    return dg.materialize(
        all_definitions(),
        selection=SELECT_AND_PROMOTE,
        resources={**build_resources(settings), "mlflow": mlflow},
        instance=instance,
        raise_on_error=False,
    )


def failure(result) -> str:
    messages = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            messages.append(error.message.strip())
            error = error.cause
    return "\n".join(messages)


def running_runs(direct: MlflowTracking) -> list:
    client = direct.client()
    experiment = client.get_experiment_by_name(direct.experiment)
    return client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")


@pytest.fixture
def world(trained):
    with trained.active() as (settings, instance):
        direct = build_resources(settings)["mlflow"]
        champion = direct.version_for(CHAMPION)
        assert champion is not None
        with FaultProxy(trained.mlflow_url) as proxy:
            yield settings, instance, direct, proxy, champion.version


def test_transient_503s_are_retried_and_the_materialization_succeeds(world, record):
    """Two 503 answers, three retries allowed: the materialization succeeds after backing off."""
    settings, instance, direct, proxy, champion = world
    proxy.fail_next = 2
    started = time.monotonic()
    result = select_and_promote(settings, instance, tracking(settings, proxy.url(), max_retries=3))
    took = time.monotonic() - started
    assert result.success, failure(result)
    assert proxy.count(503) == 2 and proxy.count(200) > 0
    record(
        fault="tracking server answers 503 twice",
        expected="retried with backoff; materialization succeeds",
        observed=f"2 x 503 then success in {took:.1f}s ({proxy.count(200)} requests answered)",
    )


@pytest.mark.parametrize(
    "outage", ["503 on every request", "closed port", "responses slower than the timeout"]
)
def test_an_unavailable_server_fails_the_materialization_clearly(world, outage, record):
    """Retries run out: the step fails naming the server (no credentials); the champion stays."""
    settings, instance, direct, proxy, champion = world
    overrides = {}
    if outage == "503 on every request":
        proxy.down = True
        uri = proxy.url(CREDENTIALS)
    elif outage == "closed port":
        uri = f"http://{CREDENTIALS}@127.0.0.1:{free_port()}"
    else:
        proxy.delay = 3.0
        overrides = {"timeout_seconds": 1}
        uri = proxy.url(CREDENTIALS)
    mlflow = tracking(settings, uri, **overrides)
    started = time.monotonic()
    result = select_and_promote(settings, instance, mlflow)
    took = time.monotonic() - started
    proxy.heal()
    message = failure(result)
    assert not result.success
    assert result.get_failed_step_keys() == {op_name(MODEL_SELECTION)}
    # The first call to fail names the server: the registry lookup, or tracking itself.
    names_server = (f"MLflow tracking at {mlflow.where}", f"MLflow registry at {mlflow.where}")
    assert any(s in message for s in names_server), message
    assert "127.0.0.1" in mlflow.where and "proxy-pass" not in mlflow.where
    assert direct.version_for(CHAMPION).version == champion
    if outage != "closed port":
        assert proxy.count(503) >= 3 or proxy.delay == 0  # first try and two retries
    headline = next(line for line in message.splitlines() if any(s in line for s in names_server))
    # The report must not carry the (test) credentials either; whether the message does is the
    # security suite's case.
    shown = re.sub(r"//[^/@\s]+@", "//<credentials>@", headline.split(": API request")[0])
    record(
        fault=f"tracking server unavailable: {outage}",
        expected="retries with backoff, then a failed step naming the server; champion unchanged",
        observed=f"failed after {took:.1f}s: {shown[:200]}; champion still v{champion}",
    )


def test_a_run_left_open_by_an_outage_is_ended_once_the_server_is_back(world, record):
    """Ending the MLflow run fails (server gone mid-step): the next materialization closes it."""
    settings, instance, direct, proxy, champion = world
    proxy.fail_paths = (("POST", "/runs/update"),)
    broken = select_and_promote(settings, instance, tracking(settings, proxy.url()))
    assert not broken.success
    assert "failed to end run" in failure(broken)
    left_open = [r for r in running_runs(direct) if r.data.tags.get("dagster.run_id") == broken.run_id]
    assert len(left_open) == 1
    assert direct.version_for(CHAMPION).version == champion

    proxy.heal()
    again = select_and_promote(settings, instance, tracking(settings, proxy.url()))
    assert again.success, failure(again)
    assert running_runs(direct) == []
    closed = direct.client().get_run(left_open[0].info.run_id)
    assert closed.info.status == "FAILED"
    assert closed.data.tags["ml_platform.closed_as_orphan"] == again.run_id
    record(
        fault="tracking server fails the end of the MLflow run (goes away mid-materialization)",
        expected="step fails clearly; once the server is back no MLflow run stays RUNNING",
        observed=(
            f"run {left_open[0].info.run_id[:8]} left RUNNING by the failed step was ended FAILED "
            f"by the next materialization; 0 RUNNING runs"
        ),
    )


def test_a_failing_champion_lookup_never_promotes_a_worse_model(trained, record):
    """Only the alias lookup fails: a worse candidate must not become champion for want of a rival."""
    with trained.active() as (settings, instance):
        resources = build_resources(settings)
        direct = resources["mlflow"]
        champion = direct.version_for(CHAMPION)
        weak = dg.materialize(
            all_definitions(),
            selection=dg.AssetSelection.groups("training"),
            resources=resources,
            instance=instance,
            run_config=trained.run_config(**WEAK_CANDIDATES),
            tags={"ml_platform/force_rebuild": "true"},
        )
        decision = weak.output_for_node(op_name(MODEL_SELECTION))
        assert decision["alias"] == "challenger", decision["reasons"]  # healthy registry: refused
        assert direct.version_for(CHAMPION).version == champion.version
        try:
            with FaultProxy(trained.mlflow_url) as proxy:
                proxy.fail_paths = (("GET", "/registered-models/alias"),)
                result = select_and_promote(settings, instance, tracking(settings, proxy.url()))
            after = direct.version_for(CHAMPION)
            message = failure(result)
            headline = next((line for line in message.splitlines() if "MLflow registry at" in line), "")
            record(
                fault="registry alias lookup fails (503) while the rest of MLflow works",
                expected="selection fails loudly; no promotion without comparing against the champion",
                observed=(
                    f"champion moved v{champion.version} -> v{after.version} (a candidate the gate refused)"
                    if after.version != champion.version
                    else f"champion stayed v{champion.version}; model selection failed: {headline[:160]}"
                ),
            )
            assert after.version == champion.version
            assert not result.success and headline, message
        finally:
            direct.set_alias(CHAMPION, champion.version)
