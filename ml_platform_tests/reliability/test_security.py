"""Security: secrets come from the environment and go nowhere else; models come only from the
configured registry; ``make dev`` listens on loopback only. Untrusted input (SQL, landing-zone
paths) is in ``test_security_inputs.py``."""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

import ml_platform
from ml_platform.config import REPO_ROOT, load_settings
from ml_platform.definitions import build_definitions
from ml_platform.keys import CHAMPION_MODEL, MODEL_SELECTION, TRAINING_SET, op_name
from ml_platform.resources import build_resources
from ml_platform.resources.mlflow import CHAMPION, MlflowTracking
from ml_platform_tests.ml_support import SERVING, all_definitions
from ml_platform_tests.reliability.fault_proxy import FaultProxy
from ml_platform_tests.reliability.support import _environ

PASSWORD = "pw-5ecr3t-9c1d"
WEBHOOK_TOKEN = "XOXB-hook-token-44f1"
SELECT_AND_PROMOTE = [MODEL_SELECTION, CHAMPION_MODEL]


class Webhook:
    """A local incoming-webhook endpoint that records what it is sent."""

    def __init__(self, status: int = 200):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/{WEBHOOK_TOKEN}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def production(trained, tmp_path, proxy: FaultProxy, webhook: Webhook):
    """The trained platform with the prod resource map: the tracking URI carries credentials and,
    like the webhook URL, is read from the environment (``EnvVar``) at run time."""
    with trained.active() as (_, instance):
        prod = {
            "ML_PLATFORM_ENV": "prod",
            "ML_PLATFORM_LANDING_ROOT": str(tmp_path / "landing"),
            "ML_PLATFORM_SOURCE": "packaged",
            "ML_PLATFORM_PARTITION_END": "2014-01-01",
            "ML_PLATFORM_AUTOMATION": "off",
            "MLFLOW_TRACKING_URI": proxy.url(f"mlflow-user:{PASSWORD}"),
            "ML_PLATFORM_ALERT_WEBHOOK_URL": webhook.url,
        }
        with _environ(prod):
            yield load_settings(), instance


def leaks(text: str) -> list[str]:
    return [s for s in (PASSWORD, WEBHOOK_TOKEN) if s in text]


def everything_recorded(instance, run_ids, tracking: MlflowTracking) -> dict[str, str]:
    """Where a secret could end up: runs, event logs (messages, metadata), MLflow tags and params."""
    out = {}
    for run_id in run_ids:
        out[f"run {run_id[:8]}"] = serialize_value(instance.get_run_by_id(run_id))
        out[f"events {run_id[:8]}"] = "\n".join(serialize_value(e) for e in instance.all_logs(run_id))
    client = tracking.client()
    experiment = client.get_experiment_by_name(tracking.experiment)
    for run in client.search_runs([experiment.experiment_id], max_results=500):
        out[f"mlflow run {run.info.run_id[:8]}"] = json.dumps([run.data.tags, run.data.params])
    for version in client.search_model_versions(f"name='{tracking.registered_model_name}'"):
        out[f"model version {version.version}"] = json.dumps([version.tags, version.source])
    return out


def alert_for(instance, run_id: str, resources, defs) -> None:
    run = instance.get_run_by_id(run_id)
    (failure,) = [
        r.event_log_entry.dagster_event
        for r in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    ]
    with dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure",
        dagster_instance=instance,
        dagster_run=run,
        dagster_event=failure,
        resources={"notifier": resources["notifier"]},
    ) as context:
        defs.get_sensor_def("alert_on_run_failure")(context.for_run_failure())


def test_secrets_from_the_environment_reach_no_log_metadata_or_tag(trained, tmp_path, caplog, record):
    """Credentials in the tracking URI and the webhook URL, used for real, recorded nowhere."""
    webhook = Webhook()
    try:
        with (
            FaultProxy(trained.mlflow_url) as proxy,
            production(trained, tmp_path, proxy, webhook) as (
                settings,
                instance,
            ),
        ):
            resources = build_resources(settings)
            defs = build_definitions(settings)
            runs = [
                dg.materialize(
                    all_definitions(settings),
                    selection=SELECT_AND_PROMOTE,
                    resources=resources,
                    instance=instance,
                ),
                dg.materialize(
                    all_definitions(settings),
                    selection=SERVING,
                    resources=resources,
                    instance=instance,
                    partition_key="2013-01-13",
                ),
            ]
            assert all(r.success for r in runs)
            failed = dg.materialize(
                all_definitions(settings),
                selection=[TRAINING_SET],
                resources=resources,
                instance=instance,
                run_config=trained.run_config()
                | {"ops": {op_name(TRAINING_SET): {"config": {"cutoff": "2013-09-01"}}}},
                raise_on_error=False,
            )
            assert not failed.success
            alert_for(instance, failed.run_id, resources, defs)
            assert len(webhook.received) == 1 and webhook.received[0][0].endswith(WEBHOOK_TOKEN)
            assert any(h.startswith("Basic ") for h in proxy.authorization)  # credentials were used
            recorded = everything_recorded(
                instance,
                [r.run_id for r in [*runs, failed]],
                MlflowTracking(
                    tracking_uri=trained.mlflow_url,
                    experiment=settings.mlflow_experiment,
                    registered_model_name=settings.registered_model_name,
                ),
            )
            recorded["definitions shown in the UI"] = serialize_value(
                RepositorySnap.from_def(defs.get_repository_def())
            )
            recorded["python log"] = caplog.text
            found = {where: leaks(text) for where, text in recorded.items() if leaks(text)}
    finally:
        webhook.close()
    record(
        fault="MLflow URI with user:password@ and an alert webhook URL, both secrets in the environment",
        expected="used (auth header sent, alert delivered) but in no run, event, metadata, tag, UI or log",
        observed=f"searched {len(recorded)} records: "
        + (f"secret found in {sorted(found)}" if found else "no secret anywhere"),
    )
    assert not found


def test_a_tracking_outage_never_writes_the_credentials_into_the_error(trained, tmp_path, record):
    """The server is down: the failure message (event log, alert) must still hide the password."""
    webhook = Webhook()
    try:
        with (
            FaultProxy(trained.mlflow_url) as proxy,
            production(trained, tmp_path, proxy, webhook) as (
                settings,
                instance,
            ),
        ):
            proxy.down = True
            resources = build_resources(settings)
            resources["mlflow"] = resources["mlflow"].model_copy(update={"max_retries": 0})
            result = dg.materialize(
                all_definitions(settings),
                selection=SELECT_AND_PROMOTE,
                resources=resources,
                instance=instance,
                raise_on_error=False,
            )
            assert not result.success
            alert_for(instance, result.run_id, resources, build_definitions(settings))
            events = "\n".join(serialize_value(e) for e in instance.all_logs(result.run_id))
            alert = b"".join(body for _, body in webhook.received).decode()
    finally:
        webhook.close()
    found = {
        where: leaks(text) for where, text in {"event log": events, "alert": alert}.items() if leaks(text)
    }
    record(
        fault="tracking server down while its URI carries user:password",
        expected="failure message names the server without the credentials",
        observed=f"password found in {sorted(found)}" if found else "no credentials in event log or alert",
    )
    assert not found


# --- models -------------------------------------------------------------------------------------------


def test_models_are_loaded_only_from_the_configured_registry(trained, record):
    """``load_version`` asks the configured registry for ``models:/<name>/<version>``, nothing else."""
    with trained.active() as (settings, _):
        tracking = build_resources(settings)["mlflow"]
        version = tracking.version_for(CHAMPION).version
        import mlflow
        import mlflow.sklearn

        seen = []
        real = mlflow.sklearn.load_model

        def load_model(uri, *args, **kwargs):
            seen.append((uri, mlflow.get_registry_uri()))
            return real(uri, *args, **kwargs)

        with mock.patch("mlflow.sklearn.load_model", load_model):
            model = tracking.load_version(version)
            with pytest.raises(Exception):  # noqa: B017 - any refusal will do; it must not load
                tracking.load_version("1/../../other_model/1")
        assert hasattr(model, "predict_proba")
    assert seen[0] == (f"models:/{settings.registered_model_name}/{version}", trained.mlflow_url)
    loaders = []
    for path in sorted(Path(ml_platform.__file__).parent.rglob("*.py")):
        text = path.read_text()
        for pattern in (r"load_model\(", r"pyfunc\.load", r"runs:/", r"pickle\.load", r"joblib\.load"):
            loaders += [f"{path.name}: {pattern}" for _ in re.finditer(pattern, text)]
    assert loaders == ["mlflow.py: load_model\\("], loaders
    record(
        fault="where models are loaded from",
        expected="only models:/<configured name>/<version> from the configured registry",
        observed=f"loaded {seen[0][0]} from {seen[0][1]}; a crafted version string was refused; "
        f"the only model loader in the package is MlflowTracking.load_version",
    )


def test_make_dev_listens_on_loopback_only(record):
    """``make dev`` starts MLflow and Dagster bound to 127.0.0.1."""
    dry = subprocess.run(
        ["make", "-n", "dev"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    mlflow_cmd = re.search(r"mlflow server[^&]*", dry).group(0)
    dagster_cmd = re.search(r"dagster dev[^\n]*", dry).group(0)
    assert re.search(r"--host 127\.0\.0\.1\b", mlflow_cmd), mlflow_cmd
    assert re.search(r"-h 127\.0\.0\.1\b", dagster_cmd), dagster_cmd
    assert "0.0.0.0" not in dry
    record(
        fault="network exposure of make dev",
        expected="MLflow and the Dagster UI bound to 127.0.0.1",
        observed="make -n dev: mlflow server --host 127.0.0.1, dagster dev -h 127.0.0.1; no 0.0.0.0",
    )
