"""Security: secrets come from the environment and go nowhere else; SQL never formats a value it
has not validated; the landing zone is never left; models come only from the configured
registry; ``make dev`` listens on loopback only."""

from __future__ import annotations

import ast
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from unittest import mock

import dagster as dg
import pandas as pd
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

import ml_platform
from ml_platform.automation.alerts import alert_on_run_failure
from ml_platform.automation.landing_scan import load_cursor
from ml_platform.automation.sensors import landing_sensor
from ml_platform.config import REPO_ROOT, load_settings
from ml_platform.definitions import build_definitions
from ml_platform.ingestion.assets import raw_daily_assets
from ml_platform.ingestion.landing import land_days
from ml_platform.ingestion.source import LandingSource, SourceError
from ml_platform.partitions import day_of
from ml_platform.resources import build_resources
from ml_platform.resources.mlflow import CHAMPION, MlflowTracking
from ml_platform.resources.warehouse import WarehouseError, ident
from ml_platform_tests.ml_support import SERVING, all_definitions
from ml_platform_tests.reliability.support import FaultProxy, _environ, platform, scalar

PASSWORD = "pw-5ecr3t-9c1d"
WEBHOOK_TOKEN = "XOXB-hook-token-44f1"
SELECT_AND_PROMOTE = [
    dg.AssetKey(["training", "model_selection"]),
    dg.AssetKey(["training", "champion_model"]),
]


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


def alert_for(instance, run_id: str, resources) -> None:
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
        alert_on_run_failure(context.for_run_failure())


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
                    all_definitions(), selection=SELECT_AND_PROMOTE, resources=resources, instance=instance
                ),
                dg.materialize(
                    all_definitions(),
                    selection=SERVING,
                    resources=resources,
                    instance=instance,
                    partition_key="2013-01-13",
                ),
            ]
            assert all(r.success for r in runs)
            failed = dg.materialize(
                all_definitions(),
                selection=[dg.AssetKey(["training", "training_set"])],
                resources=resources,
                instance=instance,
                run_config=trained.run_config()
                | {"ops": {"training__training_set": {"config": {"cutoff": "2013-09-01"}}}},
                raise_on_error=False,
            )
            assert not failed.success
            alert_for(instance, failed.run_id, resources)
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
                all_definitions(),
                selection=SELECT_AND_PROMOTE,
                resources=resources,
                instance=instance,
                raise_on_error=False,
            )
            assert not result.success
            alert_for(instance, result.run_id, resources)
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


# --- SQL ---------------------------------------------------------------------------------------------

SQL_CALLS = {"execute", "query", "sql", "executemany"}
# A formatted SQL string may interpolate only validated identifiers (``ident``), names assigned
# from them, and the declared schema's DDL.
SAFE_NAMES = {"target", "cols", "sql"}


def _formatted_sql_problems() -> list[str]:
    problems = []
    package = Path(ml_platform.__file__).parent
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call) and getattr(node.func, "attr", None) in SQL_CALLS and node.args
            ):
                continue
            sql = node.args[0]
            where = f"{path.relative_to(package.parent)}:{node.lineno}"
            if isinstance(sql, ast.Constant):
                continue
            if isinstance(sql, ast.Name) and sql.id in SAFE_NAMES:
                continue
            if not isinstance(sql, ast.JoinedStr):
                problems.append(f"{where}: SQL is built as {type(sql).__name__}")
                continue
            for part in sql.values:
                if not isinstance(part, ast.FormattedValue):
                    continue
                value = part.value
                ok = (
                    (isinstance(value, ast.Call) and getattr(value.func, "id", None) == "ident")
                    or (isinstance(value, ast.Name) and value.id in SAFE_NAMES)
                    or (isinstance(value, ast.Call) and getattr(value.func, "attr", None) == "ddl_columns")
                )
                if not ok:
                    problems.append(f"{where}: formats {ast.unparse(value)} into SQL")
    return problems


def test_every_sql_statement_binds_or_validates_what_it_includes(tmp_path, record):
    """Static: SQL formats only validated identifiers; dynamic: injection attempts are refused."""
    problems = _formatted_sql_problems()
    refused = []
    for name in ['x"; drop table raw.flights; --', "raw.flights", "a b", "1=1"]:
        with pytest.raises(WarehouseError, match="not a valid"):
            ident(name)
        refused.append(f"identifier {name!r}")
    with pytest.raises(ValueError, match="is not a day"):
        day_of("2013-01-01' or '1'='1")
    refused.append("partition key in day_of")
    with pytest.raises(ValueError):
        MlflowTracking(tracking_uri="sqlite:///x.db", registered_model_name="m' or name like '%")
    refused.append("registered model name used in an MLflow filter")

    with platform(tmp_path) as (env, settings, instance):
        resources = build_resources(settings)
        assert dg.materialize(
            raw_daily_assets, resources=resources, instance=instance, partition_key="2013-01-01"
        )
        before = int(scalar(env.warehouse, "select count(*) from raw.flights"))
        with pytest.raises(Exception, match="(?i)partition"):
            dg.materialize(
                raw_daily_assets,
                resources=resources,
                instance=instance,
                partition_key="2013-01-01'; delete from raw.flights; --",
            )
        refused.append("partition key outside the partition set")
        assert int(scalar(env.warehouse, "select count(*) from raw.flights")) == before
        injected = "2013-01-01' or 1=1 --"
        # The window as Dagster passes it (the environment) and as a user passes it by hand.
        for how, extra_args, extra_env in [
            ("environment", [], {"ML_PLATFORM_DBT_MIN_DATE": injected}),
            ("--vars", ["--vars", json.dumps({"min_date": injected, "max_date": "2013-01-02"})], {}),
        ]:
            dbt = subprocess.run(
                [
                    str(Path(sys.executable).parent / "dbt"),
                    "compile",
                    *extra_args,
                    "--select",
                    "flight_features",
                ],
                cwd=REPO_ROOT / "dbt_project",
                env={**os.environ, "ML_PLATFORM_WAREHOUSE": str(env.warehouse), **extra_env},
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert dbt.returncode != 0 and "is not a YYYY-MM-DD date" in dbt.stdout + dbt.stderr, how
            refused.append(f"dbt window through {how}")
    record(
        fault="partition key, identifier, dbt variable and model-name injection attempts; SQL audit",
        expected="every attempt refused before reaching SQL; no SQL formats an unvalidated value",
        observed=f"refused: {', '.join(refused)}; formatted-SQL audit: {problems or 'clean'}",
        bad_input=True,
        clear_error=not problems,
    )
    assert problems == []


# --- the landing root ---------------------------------------------------------------------------------


def test_the_landing_sensor_and_source_never_open_a_file_outside_the_root(tmp_path, record):
    """Links out of the root (a file, a folder, a relative ``..``) are refused without a read."""
    with platform(tmp_path, "landing") as (env, settings, instance):
        root, outside = env.landing, tmp_path / "outside"
        land_days(date(2013, 1, 1), 1, root, echo=lambda _: None)
        land_days(date(2013, 1, 2), 2, outside, reference=False, echo=lambda _: None)
        (root / "flights" / "2013-01-02.parquet").symlink_to(outside / "flights" / "2013-01-02.parquet")
        (root / "flights" / "2013-01-03.parquet").symlink_to(
            Path("..") / ".." / "outside" / "flights" / "2013-01-03.parquet"
        )
        (root / "weather").rename(tmp_path / "weather-moved")
        (root / "weather").symlink_to(outside / "weather", target_is_directory=True)
        opened: list[str] = []
        listening = [True]

        def audit(event, args):  # audit hooks cannot be removed: this one goes quiet after the test
            if listening[0] and event == "open" and args and isinstance(args[0], str | Path):
                opened.append(str(args[0]))

        sys.addaudithook(audit)
        real_read_parquet = pd.read_parquet

        def read_parquet(path, *args, **kwargs):
            opened.append(str(path))
            return real_read_parquet(path, *args, **kwargs)

        defs = build_definitions(settings)
        with mock.patch("pandas.read_parquet", read_parquet):
            with dg.build_sensor_context(
                instance=instance, definitions=defs, resources=defs.resources
            ) as context:
                result = landing_sensor(context)
            runs = [
                dg.materialize(
                    raw_daily_assets,
                    resources=build_resources(settings),
                    instance=instance,
                    partition_key=day,
                    raise_on_error=False,
                )
                for day in ("2013-01-02", "2013-01-03")
            ]
        listening[0] = False
        recording = list(opened)
        states = load_cursor(result.cursor)
        refused = {rel: s.problem for rel, s in states.items() if s.status == "rejected"}
        outside_reads = [p for p in recording if Path(p).resolve().is_relative_to(outside.resolve())]
        assert not result.run_requests
        assert all("outside the landing root" in p for p in refused.values()) and len(refused) >= 4, refused
        assert all(not r.success for r in runs)
        with pytest.raises(SourceError, match="outside the landing root"):
            LandingSource(root=str(root)).resolve("../outside/flights/2013-01-02.parquet")
        assert outside_reads == []
    record(
        fault="links out of the landing root: file symlink, relative '..' link, symlinked table folder",
        expected="sensor and runs refuse them; no file outside the root is ever opened",
        observed=f"{len(refused)} files refused by the sensor, both runs failed, "
        f"{len(recording)} files opened, none outside the root",
        bad_input=True,
        clear_error=True,
    )


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
