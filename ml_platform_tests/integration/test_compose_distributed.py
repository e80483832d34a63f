"""The ``distributed`` profile of docker-compose.yml, read as compose reads it with the
"distributed" block of deploy/env.example enabled: RabbitMQ and Celery workers beside the default
services, the workers on the code server's image, settings and volumes, the lake's catalog and data
path. Its parts that run here run as processes: the documented migration into the lake the
services are given, RabbitMQ's password guard, and the worker command against the real broker
(where dagster-celery is installed)."""

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import pytest
import yaml

from ml_platform_tests.conftest import (
    PG_SERVER,
    REPO_ROOT,
    local_instance,
    throwaway_broker,
    throwaway_database,
)
from ml_platform_tests.integration import compose_files as cf
from ml_platform_tests.integration.compose_files import DAGSTER_SERVICES, DEPLOY, active_services

_mounts, _option, _under = cf._mounts, cf._option, cf._under

PROFILE = "distributed"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dotenv() -> dict[str, str]:
    """deploy/env.example with its distributed block enabled, as a user fills it in."""
    env = cf.read_env_file(DEPLOY / "env.example", uncomment=PROFILE)
    assert env["RABBITMQ_PASSWORD"] == "", "the example holds no password"
    return {**env, "POSTGRES_PASSWORD": "pg-s3cret", "RABBITMQ_PASSWORD": "mq-s3cret"}


@pytest.fixture(scope="module")
def services(raw_compose, dotenv) -> dict[str, dict]:
    return active_services(cf.interpolate(raw_compose, dotenv), PROFILE)


def libpq(params: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(params))


def test_the_profile_adds_the_broker_and_workers_and_one_machine_needs_nothing_new(
    raw_compose, dotenv, services
):
    plain = cf.read_env_file(DEPLOY / "env.example")
    assert not {"RABBITMQ_PASSWORD", "ML_PLATFORM_EXECUTOR", "COMPOSE_PROFILES"} & set(plain)
    one_machine = cf.interpolate(raw_compose, {**plain, "POSTGRES_PASSWORD": "pg-s3cret"})
    assert set(active_services(one_machine)) == {"postgres", "mlflow", *DAGSTER_SERVICES}
    code = one_machine["services"]["code"]["environment"]
    assert code["ML_PLATFORM_EXECUTOR"] == code["ML_PLATFORM_WAREHOUSE"] == ""  # the defaults

    # The enabled block selects the profile for a plain `docker compose up` too.
    assert dotenv["COMPOSE_PROFILES"] == PROFILE
    assert set(services) == {"postgres", "mlflow", *DAGSTER_SERVICES, "rabbitmq", "worker"}
    for name, service in services.items():
        assert service.get("restart") in ("unless-stopped", "always"), name
        assert service["healthcheck"]["test"], name
    worker = services["worker"]
    for dependency in ("postgres", "mlflow", "rabbitmq"):
        assert worker["depends_on"][dependency]["condition"] == "service_healthy"
    assert (worker["image"], worker["build"]) == (services["code"]["image"], services["code"]["build"])
    assert int(worker["deploy"]["replicas"]) >= 2


def test_workers_run_steps_with_the_code_servers_settings_and_volumes(services):
    code, worker = services["code"], services["worker"]
    shared = {k: v for k, v in code["environment"].items() if k != "DAGSTER_GRPC_SHUTDOWN_GRACE_PERIOD"}
    assert {k: worker["environment"].get(k) for k in shared} == shared
    assert _mounts(worker) == _mounts(code)

    # The platform's worker: the code server's settings, the broker from its environment.
    args = worker["command"]
    assert args[0] == "ml-platform-worker"
    assert worker["environment"]["ML_PLATFORM_CELERY_BROKER"]
    name = _option(args, "--hostname", "-n").split("@")[0]
    assert f"-d {name}@$HOSTNAME" in " ".join(worker["healthcheck"]["test"])
    # Every service reads the lake's instance configuration: days side by side, one run per day.
    for service in ("code", "daemon", "webserver", "worker"):
        assert _mounts(services[service])["/opt/dagster/home/dagster.yaml"] == "./deploy/dagster.lake.yaml"


def test_the_code_server_and_workers_are_given_the_lake_and_the_broker(services, monkeypatch):
    from ml_platform.config import load_settings

    postgres, rabbitmq = services["postgres"]["environment"], services["rabbitmq"]["environment"]
    init = (DEPLOY / "postgres-init.sql").read_text()
    for name in ("code", "worker"):
        env = services[name]["environment"]
        for var in list(os.environ):
            if var.startswith(("ML_PLATFORM_", "MLFLOW_", "PG")):
                monkeypatch.delenv(var)
        for var, value in env.items():
            monkeypatch.setenv(var, str(value))
        settings = load_settings()
        assert settings.warehouse_is_lake and env["ML_PLATFORM_EXECUTOR"] == "celery"
        assert _under(settings.lake_data_path, _mounts(services[name])) == "lake", name

        catalog = libpq(settings.warehouse.removeprefix("ducklake:postgres:"))
        assert re.search(rf"CREATE DATABASE {catalog['dbname']}\b", init, re.I)
        assert (catalog["host"], catalog["user"]) == ("postgres", postgres["POSTGRES_USER"])
        assert "password" not in catalog  # libpq reads it from PGPASSWORD
        assert env["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"] == "pg-s3cret"

        broker = urlsplit(env["ML_PLATFORM_CELERY_BROKER"])
        assert broker.scheme == "pyamqp" and broker.hostname == "rabbitmq" and broker.port == 5672
        assert (broker.username, broker.password) == (
            rabbitmq["RABBITMQ_DEFAULT_USER"],
            rabbitmq["RABBITMQ_DEFAULT_PASS"],
        )
        assert broker.password == "mq-s3cret"
    assert "rabbitmq-diagnostics" in services["rabbitmq"]["healthcheck"]["test"]


def test_rabbitmq_refuses_to_start_without_a_password(raw_compose, services, tmp_path):
    """The broker's entrypoint as a process, its image's own entrypoint standing in as a script
    that reports how it was started. The password has no default but empty (a required one would
    stop `docker compose up` without the profile too: compose interpolates every service)."""
    raw = raw_compose["services"]["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"]
    assert raw == "${RABBITMQ_PASSWORD:-}"
    entrypoint = services["rabbitmq"]["entrypoint"]
    image_entrypoint = tmp_path / "docker-entrypoint.sh"
    image_entrypoint.write_text('#!/bin/sh\necho "started $*"\n')
    image_entrypoint.chmod(0o755)
    path = f"{tmp_path}:{os.environ['PATH']}"
    for password, code, output in (
        ("", 1, "set RABBITMQ_PASSWORD in .env"),
        ("mq", 0, "started rabbitmq-server"),
    ):
        env = {"PATH": path, "RABBITMQ_DEFAULT_PASS": password}
        done = subprocess.run(entrypoint, env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == code and output in done.stdout + done.stderr, done


def test_the_documented_migration_fills_the_lake_the_services_are_given(services, tmp_path):
    """``ml-platform migrate-warehouse`` as a process, to the code server's lake URL on this
    machine's PostgreSQL (host and user replaced, database a throwaway one); then the lake opens
    with the code server's settings and holds the rows."""
    from ml_platform.resources.warehouse_engines import engine_for

    env = services["code"]["environment"]
    source = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(source)) as conn:
        conn.execute("create schema raw")
        conn.execute(
            "create table raw.flights (flight_date DATE NOT NULL, carrier VARCHAR, dep_delay DOUBLE)"
        )
        conn.execute("insert into raw.flights values ('2013-01-01', 'UA', 2.0), ('2013-01-02', 'AA', null)")
    with throwaway_database("mlp_lake") as name:
        catalog = libpq(env["ML_PLATFORM_WAREHOUSE"].removeprefix("ducklake:postgres:"))
        catalog.update(dbname=name, host=PG_SERVER["host"], port=PG_SERVER["port"], user=PG_SERVER["user"])
        url = "ducklake:postgres:" + " ".join(f"{k}={v}" for k, v in catalog.items())
        data = str(tmp_path / env["ML_PLATFORM_LAKE_DATA_PATH"].strip("/")) + "/"
        run_env = {**os.environ, "ML_PLATFORM_ENV": "local", "DAGSTER_HOME": str(tmp_path / "home")}
        done = subprocess.run(
            [
                str(BIN / "ml-platform"),
                "migrate-warehouse",
                "--from",
                str(source),
                "--to",
                url,
                "--data-path",
                data,
            ],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "every table and day matches" in done.stdout
        conn = engine_for(url, data).connect(read_only=True)
        try:
            rows = conn.execute("select carrier from raw.flights order by flight_date").fetchall()
        finally:
            conn.close()
        assert rows == [("UA",), ("AA",)]


def test_the_worker_command_answers_on_the_real_broker(services, tmp_path):
    """The worker's command and healthcheck as processes on this machine's RabbitMQ (guest), with
    the lake and MLflow settings the profile gives (nothing is written: no step is sent)."""
    worker = services["worker"]
    path = f"{BIN}:{os.environ['PATH']}"
    command = [shutil.which(worker["command"][0], path=path), *worker["command"][1:]]
    home = tmp_path / "home"
    home.mkdir()
    # A virtual host of its own: the worker must not take steps of another test's runs.
    with throwaway_broker("mlp_compose") as broker, local_instance(home):
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "ML_PLATFORM_EXECUTOR": "celery",
            "ML_PLATFORM_CELERY_BROKER": broker,
            "ML_PLATFORM_WAREHOUSE": worker["environment"]["ML_PLATFORM_WAREHOUSE"],
            "ML_PLATFORM_LAKE_DATA_PATH": str(tmp_path / "lake") + "/",
            "MLFLOW_TRACKING_URI": worker["environment"]["MLFLOW_TRACKING_URI"],
            "PATH": path,
        }
        (home / "dagster.yaml").touch()
        started = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=tmp_path,
        )
        try:
            health = worker["healthcheck"]["test"][1].replace("$$", "$")
            env["HOSTNAME"] = socket.gethostname()
            deadline = time.monotonic() + 120
            while True:
                check = subprocess.run(
                    ["sh", "-c", health], env=env, capture_output=True, text=True, timeout=60
                )
                if check.returncode == 0:
                    break
                assert started.poll() is None, started.stdout.read().decode()
                assert time.monotonic() < deadline, check.stdout + check.stderr
                time.sleep(2)
        finally:
            os.killpg(started.pid, 15)
            started.wait(timeout=60)


def test_helm_run_pods_share_one_lake_whose_password_is_a_secret():
    from ml_platform.resources.warehouse_engines import parse_location

    text = (DEPLOY / "helm" / "values.yaml").read_text()
    values = yaml.safe_load(text)
    [deployment] = values["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    url, data_path = parse_location(env["ML_PLATFORM_WAREHOUSE"], env["ML_PLATFORM_LAKE_DATA_PATH"])
    assert "password" not in libpq(url.removeprefix("ducklake:postgres:"))
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in deployment["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"]}
    assert claims[mounts[data_path.rstrip("/")]] == "ml-platform-lake"
    assert "`ml-platform-lake`" in text and "PGPASSWORD" in text  # the install notes name both
    # Run pods get the deployment's settings and the secret that holds PGPASSWORD.
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    secrets = values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]
    assert deployment["envSecrets"] == secrets
