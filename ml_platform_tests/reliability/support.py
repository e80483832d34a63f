"""Shared parts of the fault-injection suite: a platform environment in a temp directory, a real
``dagster dev`` (webserver, daemon, code server) over it, subprocess runs that can be killed, and
warehouse snapshots to compare before and after a fault."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd
import yaml

from ml_platform.config import Settings, load_settings
from ml_platform.resources.dbt import environment
from ml_platform_tests.conftest import REPO_ROOT, TEST_OUTPUT
from ml_platform_tests.services import BIN, DEV_ENV, free_port, process, wait_for_http

OUTPUT = TEST_OUTPUT / "reliability"
# Variables that must not leak into an environment from the developer's shell.
CLEARED = (
    "ML_PLATFORM_WAREHOUSE",
    "ML_PLATFORM_LANDING_ROOT",
    "ML_PLATFORM_KILL_AT",
    "ML_PLATFORM_ALERT_WEBHOOK_URL",
    "ML_PLATFORM_PARTITION_START",
    "ML_PLATFORM_PARTITION_END",
    "ML_PLATFORM_MLFLOW_ARTIFACTS",
    "ML_PLATFORM_PROMOTION_AUC_FLOOR",
    "ML_PLATFORM_EXECUTOR",
    "ML_PLATFORM_CELERY_BROKER",
    "ML_PLATFORM_OBJECTS_PATH",
    "DAGSTER_HOME",
)
RUN_WAIT_SECONDS = 600


def instance_yaml(**overrides) -> str:
    """The local instance configuration (deploy/dagster.local.yaml) with test overrides merged in:
    run monitoring polls every two seconds so a dead run is noticed quickly."""
    config = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.local.yaml").read_text())
    config["run_monitoring"]["poll_interval_seconds"] = 2
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return yaml.safe_dump(config)


@dataclass
class PlatformEnv:
    """A whole platform under one temp root: data directory, warehouse, landing zone, MLflow store
    and a persistent Dagster home that subprocesses and daemons share."""

    root: Path
    source: str = "packaged"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def warehouse(self) -> Path:
        return self.data / "warehouse.duckdb"

    @property
    def landing(self) -> Path:
        return self.data / "landing"

    def variables(self) -> dict[str, str]:
        values = {
            "ML_PLATFORM_ENV": "local",
            "ML_PLATFORM_DATA_DIR": str(self.data),
            "ML_PLATFORM_SOURCE": self.source,
            "MLFLOW_TRACKING_URI": f"sqlite:///{self.data / 'mlflow' / 'mlflow.db'}",
            "ML_PLATFORM_MLFLOW_ARTIFACTS": str(self.data / "mlflow" / "artifacts"),
            "ML_PLATFORM_AUTOMATION": "off",
            "DAGSTER_HOME": str(self.home),
            **self.extra,
        }
        if values["MLFLOW_TRACKING_URI"].startswith("http"):
            del values["ML_PLATFORM_MLFLOW_ARTIFACTS"]  # the server keeps the artifacts
        return values

    def settings(self) -> Settings:
        return load_settings()

    @contextmanager
    def active(self) -> Iterator[tuple[Settings, dg.DagsterInstance]]:
        """This environment applied to ``os.environ``, with its instance open."""
        # Entered, the instance is also the current one for definitions loading (Dagster keeps
        # that in a context variable, which a stale instance elsewhere must not shadow).
        with _environ(self.variables()), dg.DagsterInstance.from_config(str(self.home)) as instance:
            yield self.settings(), instance


@contextmanager
def platform(root: Path, source: str = "packaged", *, instance_config: str | None = None, **extra: str):
    """Create a ``PlatformEnv`` under ``root``, apply it to this process's environment
    (subprocesses inherit it) and open its Dagster instance."""
    env = PlatformEnv(root, source, dict(extra))
    (env.data / "mlflow").mkdir(parents=True, exist_ok=True)
    env.home.mkdir(parents=True, exist_ok=True)
    (env.home / "dagster.yaml").write_text(instance_config or instance_yaml())
    with env.active() as (settings, instance):
        yield env, settings, instance


def _environ(values: dict[str, str]):
    """These variables set and the platform's others unset, for the duration."""
    return environment({**dict.fromkeys(CLEARED), **values})


# --- the warehouse ---------------------------------------------------------------------------------


def query(path: Path, sql: str, params=None) -> pd.DataFrame:
    """Read the warehouse as a reader would: a read-only connection, opened and closed."""
    from ml_platform.resources.warehouse import connect

    conn = connect(path, read_only=True, timeout=60)
    try:
        return conn.execute(sql, list(params or [])).fetchdf()
    finally:
        conn.close()


def scalar(path: Path, sql: str, params=None):
    return query(path, sql, params).iloc[0, 0]


def partition(path: Path, table: str, column: str, day: str) -> pd.DataFrame:
    """Every row of one day of a table, in a canonical order, for exact comparison."""
    sql = f"select * from {table} where {column} = ?::date order by all"  # noqa: S608 - test constants
    return query(path, sql, [day]).reset_index(drop=True)


def table_exists(path: Path, schema: str, table: str) -> bool:
    if not path.exists():
        return False
    sql = "select count(*) from information_schema.tables where table_schema = ? and table_name = ?"
    return bool(scalar(path, sql, [schema, table]))


# --- subprocess runs ---------------------------------------------------------------------------------


@dataclass
class Finished:
    returncode: int
    output: str

    @property
    def killed(self) -> bool:
        return self.returncode == -9


def run_assets(
    selection: list[str],
    *,
    partition: str | None = None,
    last: str | None = None,
    kill_at: str | None = None,
    dbt_kill_at_insert: bool = False,
    tags: dict[str, str] | None = None,
    run_config: dict | None = None,
    log: Path,
    timeout: float = 600,
) -> Finished:
    """Materialize ``selection`` in a child process (``python -m ...run_assets``) against the
    current environment's instance and warehouse; the child may SIGKILL itself at a fault point."""
    args = [sys.executable, "-m", "ml_platform_tests.reliability.run_assets", "--select", ",".join(selection)]
    if partition:
        args += ["--partition", partition]
    if last:
        args += ["--last", last]
    if dbt_kill_at_insert:
        args += ["--dbt-kill-at-insert"]
    if tags:
        args += ["--tags", json.dumps(tags)]
    if run_config:
        args += ["--run-config", json.dumps(run_config)]
    env = {**os.environ}
    if kill_at:
        env["ML_PLATFORM_KILL_AT"] = kill_at
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT, start_new_session=True
        )
        try:
            code = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
    return Finished(proc.returncode if code is None else code, log.read_text(errors="replace"))


# --- dagster dev -------------------------------------------------------------------------------------


@dataclass
class DevServer:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query_text: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query_text, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 - loopback test server
            payload = json.loads(resp.read())
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def wait_for_code_location(self, timeout: float = 240) -> None:
        text = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
            name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.tail()
            entries = self.graphql(text)["workspaceOrError"].get("locationEntries", [])
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e["locationOrLoadError"] for e in entries]
                assert all(e["__typename"] == "RepositoryLocation" for e in errors), errors
                return
            time.sleep(1)
        raise TimeoutError(f"code location did not load within {timeout:.0f}s: {self.tail()}")

    def submit(self, job: str, *, tags: dict[str, str], run_config: dict | None = None) -> str:
        from dagster_graphql import DagsterGraphQLClient

        client = DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=120)
        return client.submit_job_execution(job, run_config=run_config or {}, tags=tags)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@contextmanager
def dagster_dev(name: str, **env: str) -> Iterator[DevServer]:
    """``dagster dev`` over the current environment's DAGSTER_HOME (queued coordinator, daemon,
    run monitoring, one code server), as ``make dev`` starts it."""
    port = free_port()
    log = OUTPUT / name / "dagster-dev.log"
    args = [str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
    with process(args, log, env={**DEV_ENV, **env}, cwd=REPO_ROOT) as proc:
        wait_for_http(f"http://127.0.0.1:{port}/server_info", timeout=240, proc=proc, log=log)
        server = DevServer(proc, port, log)
        server.wait_for_code_location()
        yield server


def wait_for_runs(
    instance: dg.DagsterInstance, run_ids: list[str], timeout: float = RUN_WAIT_SECONDS, server=None
) -> list[dg.DagsterRun]:
    deadline = time.monotonic() + timeout
    while True:
        runs = instance.get_runs(dg.RunsFilter(run_ids=run_ids))
        if len(runs) == len(run_ids) and all(r.is_finished for r in runs):
            return runs
        if server is not None:
            assert server.proc.poll() is None, server.tail()
        if time.monotonic() > deadline:
            states = {r.run_id[:8]: r.status.value for r in runs}
            raise TimeoutError(f"runs not finished after {timeout:.0f}s: {states}")
        time.sleep(1 if len(run_ids) < 30 else 5)


def failure_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Step and run failure messages of a run, with their causes."""
    out = []
    for kind in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE):
        for record in instance.get_records_for_run(run_id, of_type=kind).records:
            event = record.event_log_entry.dagster_event
            out.append(event.message or "")
            data = event.event_specific_data
            error = getattr(data, "error", None)
            while error is not None:
                out.append(error.message)
                error = error.cause
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records:
        message = record.event_log_entry.dagster_event.message or ""
        if "terminated" in message or "signal" in message or "failed" in message.lower():
            out.append(message)
    return out


def max_overlap(runs: list, instance: dg.DagsterInstance) -> int:
    """The largest number of these runs that were in progress at the same moment."""
    records = instance.get_run_records(dg.RunsFilter(run_ids=[r.run_id for r in runs]))
    edges = []
    for record in records:
        if record.start_time and record.end_time:
            edges += [(record.start_time, 1), (record.end_time, -1)]
    current = best = 0
    for _, delta in sorted(edges, key=lambda e: (e[0], e[1])):
        current += delta
        best = max(best, current)
    return best


# --- a trained platform ------------------------------------------------------------------------------

FEATURE_DAYS = ("2013-01-05", "2013-01-14")
CUTOFF, WINDOW_DAYS, HOLDOUT_DAYS = "2013-01-12", 7, 3


@dataclass
class TrainedPlatform:
    """Features for ten January days, a real ``mlflow server`` and a champion trained on them."""

    env: PlatformEnv
    mlflow_url: str

    def run_config(self, **candidates) -> dict:
        from ml_platform_tests.ml_support import training_config

        return training_config(CUTOFF, WINDOW_DAYS, HOLDOUT_DAYS, **candidates)

    def active(self):
        return self.env.active()


# --- killed runs ----------------------------------------------------------------------------------

POOL = "duckdb_warehouse"


def reap_killed_runs(instance: dg.DagsterInstance) -> list[str]:
    """For runs whose process was SIGKILLed outside the daemon, do what the platform does for a
    daemon-launched one: mark the run failed (the code server's orphan check) and free the pool
    slots it held (run monitoring's ``free_slots_after_run_end_seconds``). Without this a killed
    bare process keeps the warehouse slot and every later write waits for it forever."""
    runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    for run in runs:
        instance.report_run_failed(run, "run process was killed (fault injection)")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    return [r.run_id for r in runs]


def claimed_slots(instance: dg.DagsterInstance, pool: str = POOL) -> list:
    return list(instance.event_log_storage.get_concurrency_info(pool).claimed_slots)
