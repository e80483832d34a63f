"""Steps on Celery workers (``ML_PLATFORM_EXECUTOR=celery``): a real RabbitMQ broker, the
production instance on PostgreSQL (``deploy/dagster.lake.yaml``), a lake warehouse, an MLflow
server and two ``ml-platform-worker`` processes, each started in a directory of its own, sharing
only those. Runs are launched through ``dagster dev`` (daemon, queued coordinator, code server).

The runs are the whole ingestion job: raw flights, raw weather and the dbt features built from
them, with their checks, every step on a worker. The case marked ``month`` (``make test-month``)
runs thirty daily runs four at a time with a reader polling the lake throughout, then trains a
champion on the lake and scores every day of the month.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from ml_platform.automation.jobs import IN_ONE_PROCESS
from ml_platform.automation.worker import worker_app
from ml_platform.ingestion.assets import raw_reference_assets
from ml_platform.keys import RAW_DAILY, RAW_FLIGHTS, op_name
from ml_platform.resources import build_resources
from ml_platform.resources.warehouse_engines import WriteScope
from ml_platform.runtime.guard import CELERY_WATCH
from ml_platform_tests.conftest import PG_SERVER, REPO_ROOT, throwaway_broker, throwaway_database
from ml_platform_tests.lake_support import lake_catalog
from ml_platform_tests.reliability.support import (
    dagster_dev,
    failure_messages,
    max_overlap,
    platform,
    wait_for_runs,
)
from ml_platform_tests.reliability.test_concurrent_backfill import (
    KEY,
    Reader,
    expected_keys,
    score_every_day,
    settle,
)
from ml_platform_tests.services import BIN, mlflow_server, process

HOST = socket.gethostname()
FLIGHTS_STEP = op_name(RAW_FLIGHTS)
FEATURES_STEP = "dbt_features"
STEPS = {op_name(key) for key in RAW_DAILY} | {FEATURES_STEP}
LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } ... on InvalidSubsetError { message } } }"""


@contextmanager
def celery_platform(tmp_path: Path, gate: dict | None = None, **instance_overrides) -> Iterator[tuple]:
    """A platform on the lake with the Celery executor: (env, settings, instance, lake); ``gate``
    holds promotion settings for a case that trains."""
    config = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.lake.yaml").read_text())
    config["run_monitoring"]["poll_interval_seconds"] = 2
    config.update(instance_overrides)
    with ExitStack() as stack:
        celery_broker = stack.enter_context(throwaway_broker("mlp_celery"))
        dagster_db = stack.enter_context(throwaway_database("mlp_celery"))
        lake = stack.enter_context(lake_catalog(tmp_path))
        mlflow_url, _ = stack.enter_context(mlflow_server(tmp_path / "mlflow"))
        variables = {
            "ML_PLATFORM_WAREHOUSE": lake.database,
            "ML_PLATFORM_LAKE_DATA_PATH": lake.data_path,
            "ML_PLATFORM_EXECUTOR": "celery",
            "ML_PLATFORM_CELERY_BROKER": celery_broker,
            "MLFLOW_TRACKING_URI": mlflow_url,
            "DAGSTER_PG_HOST": PG_SERVER["host"],
            "DAGSTER_PG_PORT": PG_SERVER["port"],
            "DAGSTER_PG_USER": PG_SERVER["user"],
            # Trust auth needs none; the instance config still requires a value to be set.
            "DAGSTER_PG_PASSWORD": os.environ.get("PGPASSWORD", "postgres"),
            "DAGSTER_PG_DB": dagster_db,
            "DAGSTER_STORAGE_DIR": str(tmp_path / "storage" / "artifacts"),
            "DAGSTER_COMPUTE_LOGS_DIR": str(tmp_path / "storage" / "compute_logs"),
            **(gate or {}),
        }
        env, settings, instance = stack.enter_context(
            platform(tmp_path, instance_config=yaml.safe_dump(config), **variables)
        )
        yield env, settings, instance, lake


@contextmanager
def celery_workers(settings, root: Path, names: list[str]) -> Iterator[dict]:
    """``ml-platform-worker`` processes, one pool process each, each in its own working
    directory; yields their processes by node name once every one answers a ping."""
    app = worker_app(settings)
    app.control.purge()  # steps left over from an interrupted session belong to no live run
    with ExitStack() as stack:
        workers = {}
        for name in names:
            cwd = root / "workers" / name
            cwd.mkdir(parents=True)
            args = [str(BIN / "ml-platform-worker"), "--concurrency", "1", "--hostname", f"{name}@%h"]
            workers[f"{name}@{HOST}"] = stack.enter_context(process(args, cwd / "worker.log", cwd=cwd))
        deadline = time.monotonic() + 180
        answered: set[str] = set()
        while answered != set(workers):
            for node, proc in workers.items():
                assert proc.poll() is None, f"worker {node} exited: {(root / 'workers').glob('*/worker.log')}"
            assert time.monotonic() < deadline, f"workers answering: {answered} of {set(workers)}"
            answered = {node for reply in app.control.ping(timeout=1.0) for node in reply}
        yield workers


def launch(dev, day: str) -> str:
    """A run of the ingestion job for ``day`` in the default executor's run config (valid on
    Celery too)."""
    params = {
        "selector": {
            "repositoryLocationName": "ml_platform",
            "repositoryName": "__repository__",
            "jobName": "ingest_days",
        },
        "runConfigData": IN_ONE_PROCESS,
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
    }
    result = dev.graphql(LAUNCH, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def step_workers(instance, run_id: str) -> dict[str, str]:
    """Step key -> the node name of the Celery worker that ran it (its engine event)."""
    out = {}
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records:
        event = record.event_log_entry.dagster_event
        worker = event.engine_event_data.metadata.get("Celery worker")
        if worker is not None:
            out[event.step_key] = worker.value
    return out


def step_pids(instance, run_id: str) -> dict[str, int]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return {r.event_log_entry.dagster_event.step_key: r.event_log_entry.dagster_event.pid for r in records}


def process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def lake_flights(lake, first: date, last: date) -> pd.DataFrame:
    stored = lake.warehouse().query(
        f"select {', '.join(KEY)}, count(*) as n from raw.flights "  # noqa: S608 - constants
        "where flight_date between ? and ? group by all",
        [first, last],
    )
    stored = stored.astype({"flight": "int64", "sched_dep_time": "int64"})
    stored["flight_date"] = pd.to_datetime(stored["flight_date"]).dt.date
    return stored


def compare(lake, first: date, last: date) -> tuple[int, int, int, int]:
    """(expected flights, lost, duplicated, unexpected) of the range in the lake."""
    expected, stored = expected_keys(first, last), lake_flights(lake, first, last)
    merged = expected.merge(stored, on=KEY, how="outer", indicator=True)
    lost = int((merged["_merge"] == "left_only").sum())
    unexpected = int((merged["_merge"] == "right_only").sum())
    return len(expected), lost, int((stored["n"] - 1).sum()), unexpected


def features(lake, first: date, last: date) -> tuple[int, int]:
    """(feature rows, distinct flight ids) of the range in the lake."""
    counts = lake.warehouse().query(
        "select count(*) as n, count(distinct flight_id) as ids from features.flight_features "
        "where flight_date between ? and ?",
        [first, last],
    )
    return int(counts.n.iloc[0]), int(counts.ids.iloc[0])


def load_reference(settings, instance) -> None:
    """Planes, airports and airlines, which the features join: loaded once, before the days (the
    lake exists from then on, as a reader needs)."""
    resources = build_resources(settings)
    assert dg.materialize(raw_reference_assets, resources=resources, instance=instance).success


def wait_for_step_on_worker(instance, run_id: str, step: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while step not in (workers := step_workers(instance, run_id)):
        assert time.monotonic() < deadline, f"step {step} never started on a worker: {workers}"
        time.sleep(0.5)
    return workers[step]


@pytest.mark.skipif(
    not CELERY_WATCH.on(), reason="without the celery_watch accelerator a lost worker's run waits forever"
)
@pytest.mark.timeout(900)
def test_steps_run_on_workers_and_a_lost_worker_fails_its_run(tmp_path, record):
    """Runs' steps execute on both workers, in the workers' processes; a worker SIGKILLed while
    it runs a step fails that run with a message naming the worker; the next two runs of that day
    succeed on the remaining worker, one after the other, and the day's flights are stored once."""
    started = time.monotonic()
    # Run retries off: the killed run's own failure is what is observed.
    with celery_platform(tmp_path, run_retries={"enabled": False}) as (env, settings, instance, lake):
        load_reference(settings, instance)
        with celery_workers(settings, tmp_path, ["w1", "w2"]) as workers, dagster_dev("celery") as dev:
            days = ["2013-01-01", "2013-01-02", "2013-01-03"]
            run_ids = [launch(dev, day) for day in days]
            runs = wait_for_runs(instance, run_ids, timeout=600, server=dev)
            ran_on = {run_id: step_workers(instance, run_id) for run_id in run_ids}
            pids = {run_id: step_pids(instance, run_id) for run_id in run_ids}
            groups = {workers[node].pid for node in workers}
            step_groups = {process_group(pid) for by_step in pids.values() for pid in by_step.values()}

            # A worker lost while its step runs: the step waits on the day's lake lock, which
            # this test holds, so the kill lands mid-step.
            day = date(2013, 1, 4)
            with lake.warehouse().engine.locked(WriteScope("raw.flights", (day,))):
                killed_run = launch(dev, day.isoformat())
                victim = wait_for_step_on_worker(instance, killed_run, FLIGHTS_STEP)
                os.killpg(workers[victim].pid, signal.SIGKILL)
                killed_at = time.monotonic()
            (killed,) = wait_for_runs(instance, [killed_run], timeout=300, server=dev)
            noticed = time.monotonic() - killed_at
            messages = failure_messages(instance, killed_run)
            # Two runs of that day at once: the instance's per-day limit makes them take turns.
            next_runs = [launch(dev, day.isoformat()) for _ in range(2)]
            after = wait_for_runs(instance, next_runs, timeout=300, server=dev)
            same_day_overlap = max_overlap(after, instance)
            survivor_ran = {node for run_id in next_runs for node in step_workers(instance, run_id).values()}
        expected, lost, duplicated, unexpected = compare(lake, date(2013, 1, 1), day)
        feature_rows, feature_ids = features(lake, date(2013, 1, 1), day)
    # A worker leaves nothing in its working directory but the log this test sends there.
    left = {d.name: sorted(p.name for p in d.iterdir()) for d in (tmp_path / "workers").iterdir()}

    used = Counter(node for steps in ran_on.values() for node in steps.values())
    record(
        fault="steps on two Celery workers; one worker SIGKILLed while it runs a step",
        expected="steps, the dbt features' included, run in the workers' processes, both used; the run "
        "with the lost step fails naming the worker; the day's next runs succeed, one at a time; every "
        "flight once, with one feature row",
        observed=(
            f"{len(runs)} runs {Counter(r.status.value for r in runs)}, steps per worker {dict(used)}; "
            f"killed run {killed.status.value} {noticed:.0f}s after the kill; the day's next two runs "
            f"{[r.status.value for r in after]} on {sorted(survivor_ran)}, up to {same_day_overlap} at "
            f"once; {expected} flights, {lost} lost, {duplicated} duplicated, {unexpected} unexpected; "
            f"{feature_rows} feature rows ({feature_ids} distinct); {time.monotonic() - started:.0f}s"
        ),
        rows_lost=lost,
        rows_duplicated=duplicated,
    )
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [r.status for r in runs]
    assert all(STEPS <= set(steps) for steps in ran_on.values()), ran_on
    assert set(used) == set(workers), f"not every worker ran a step: {used}"
    # Each step ran in a process of a worker's process group (its pool process), not in the run's.
    assert step_groups <= groups, (pids, groups)
    assert killed.status == dg.DagsterRunStatus.FAILURE
    assert any(victim in m and "stopped answering" in m for m in messages), messages
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in after), [r.status for r in after]
    assert same_day_overlap == 1
    assert survivor_ran and victim not in survivor_ran, survivor_ran
    assert (lost, duplicated, unexpected) == (0, 0, 0)
    assert feature_rows == feature_ids == expected, (feature_rows, feature_ids, expected)
    assert left == {"w1": ["worker.log"], "w2": ["worker.log"]}, left


@pytest.mark.month
@pytest.mark.timeout(1500)
def test_thirty_days_as_concurrent_runs_on_celery_workers(tmp_path, record):
    """Thirty daily runs, four in flight, their steps on two workers, a reader polling the lake:
    no run fails, every flight of the month is stored once with its features; a champion trained
    on the lake then scores every flight of the month."""
    concurrent_days(tmp_path, record, date(2013, 1, 1), date(2013, 1, 30))


@pytest.mark.year
@pytest.mark.timeout(4 * 3600)
def test_the_whole_year_as_concurrent_runs_on_celery_workers(tmp_path, record):
    """All 365 days of 2013 the same way: exactly 336,776 flights, each once, each with its
    features and its prediction."""
    assert len(expected_keys(date(2013, 1, 1), date(2013, 12, 31))) == 336_776
    concurrent_days(tmp_path, record, date(2013, 1, 1), date(2013, 12, 31))


def concurrent_days(tmp_path: Path, record, first: date, last: date) -> None:
    started = time.monotonic()
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    gate = {"ML_PLATFORM_PROMOTION_AUC_FLOOR": "0.5"}
    with celery_platform(tmp_path, gate) as (env, settings, instance, lake):
        # The lake exists before the first run (a reader cannot create it), as the file does
        # once the first write made it: the file's reader waits for it instead.
        load_reference(settings, instance)
        with celery_workers(settings, tmp_path, ["w1", "w2"]) as workers, dagster_dev("celery-month") as dev:
            reader = Reader(lake.warehouse(), pause=0.25)
            reader.start()
            run_ids = [launch(dev, day) for day in days]
            runs = wait_for_runs(instance, run_ids, timeout=300 + 30 * len(days), server=dev)
            every_run = settle(instance, dev)
            reader.stop()
        ran_on = {run_id: step_workers(instance, run_id) for run_id in run_ids}
        used = Counter(node for steps in ran_on.values() for node in steps.values())
        failed = {
            r.run_id: failure_messages(instance, r.run_id) for r in every_run if r.status.value != "SUCCESS"
        }
        overlap = max_overlap(runs, instance)
        expected, lost, duplicated, unexpected = compare(lake, first, last)
        feature_rows, feature_ids = features(lake, first, last)
        scored = score_every_day(settings, instance, lake.warehouse(), first, last)
    record(
        fault=f"{len(days)} daily runs, 4 at a time through the daemon, steps on 2 Celery workers "
        "on a lake, a reader polling throughout; a champion trained on the lake scores the month",
        expected=f"0 failed runs; {expected} flights, each once; features for all; 0 reader errors; "
        "a prediction for every flight",
        observed=(
            f"{len(every_run)} runs, {len(failed)} failed, up to {overlap} at once; steps per worker "
            f"{dict(used)}; {lost} lost, {duplicated} duplicated, {unexpected} unexpected; "
            f"{feature_rows} feature rows ({feature_ids} distinct); {reader.reads} reads, "
            f"{len(reader.errors)} reader errors; {scored.n} predictions ({scored.ids} distinct flights, "
            f"{scored.versions} model versions); {time.monotonic() - started:.0f}s"
        ),
        rows_lost=lost,
        rows_duplicated=duplicated,
        runs=len(every_run),
    )
    assert not failed, failed
    assert len(every_run) == len(days)
    assert 2 <= overlap <= 4, overlap
    assert set(used) == set(workers), used
    assert all(STEPS <= set(steps) for steps in ran_on.values()), ran_on
    assert (lost, duplicated, unexpected) == (0, 0, 0)
    assert feature_rows == feature_ids == expected, (feature_rows, feature_ids, expected)
    assert reader.reads > 0 and not reader.errors, reader.errors
    assert int(scored.n) == int(scored.ids) == expected, scored
    assert int(scored.versions) == 1, scored
