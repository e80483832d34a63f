"""Land-to-prediction latency through ``dagster dev``: the daemon and sensors alone do the work.

A champion is trained first (features for 2013-01-05..24, cutoff 2013-01-19), then ``dagster
dev`` starts with ``ML_PLATFORM_AUTOMATION=on`` and the landing directory as the source. Days
are landed one at a time; a day's latency is from the moment its files are written until its
``serving/predictions`` partition is materialized. The next day lands once the landing runs of
the previous one have finished.
"""

from __future__ import annotations

import os
import time
from datetime import date, timedelta
from pathlib import Path

from benchmarks import support
from benchmarks.load import served

FEATURE_START, FEATURE_END, CUTOFF = "2013-01-05", "2013-01-24", "2013-01-19"
REQUIRED_DAEMONS = ("SENSOR", "QUEUED_RUN_COORDINATOR")


def _train_champion(work: Path) -> float:
    from ml_platform.keys import TRAINING_SET, op_name

    picked = support.selections()
    run_config = {
        "ops": {op_name(TRAINING_SET): {"config": {"cutoff": CUTOFF, "window_days": 14, "holdout_days": 4}}}
    }
    started = time.perf_counter()
    with support.instance(work / "prep_home") as prep:
        assert support.materialize(
            prep, picked["raw_and_features"], start=FEATURE_START, end=FEATURE_END
        ).success
        assert support.materialize(prep, picked["training"], run_config=run_config).success
    return time.perf_counter() - started


def _predicted_at(instance, day: str) -> float | None:
    import dagster as dg

    from ml_platform.keys import PREDICTIONS

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=PREDICTIONS, asset_partitions=[day]), limit=1
    ).records
    return records[0].timestamp if records else None


def _active_runs(instance) -> int:
    import dagster as dg

    statuses = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    ]
    return len(
        instance.get_runs(dg.RunsFilter(statuses=statuses, tags={"ml_platform/trigger": "landing_sensor"}))
    )


def _run_phases(instance, day: str, landed_at: float) -> dict:
    """When the landing run of ``day`` was created, started and ended, in seconds after landing."""
    import dagster as dg

    records = instance.get_run_records(
        dg.RunsFilter(tags={"ml_platform/trigger": "landing_sensor", support.RANGE_START_TAG: day})
    )
    if not records:
        return {}
    record = records[-1]  # the first one requested for the day
    phases = {"run_created": record.create_timestamp.timestamp() - landed_at}
    if record.start_time:
        phases["run_started"] = record.start_time - landed_at
    if record.end_time:
        phases["run_ended"] = record.end_time - landed_at
    phases["run_status"] = record.dagster_run.status.value
    phases["runs_for_day"] = len(records)
    return phases


def land_to_prediction(
    work: Path, days: int = 5, warmup: int = 0, first_day: str = "2013-01-25", timeout_per_day: float = 300
) -> dict:
    import dagster as dg

    data = Path(os.environ["ML_PLATFORM_DATA_DIR"])
    with support.mlflow_server(work / "mlflow") as mlflow_url:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_url
        os.environ.pop("ML_PLATFORM_MLFLOW_ARTIFACTS", None)
        os.environ["ML_PLATFORM_PROMOTION_AUC_FLOOR"] = "0.5"
        os.environ.pop("ML_PLATFORM_SOURCE", None)
        prep_seconds = _train_champion(work)

        from ml_platform.ingestion.landing import land_days

        home = support.write_dagster_home(work / "dagster_home")
        env = {
            "DAGSTER_HOME": str(home),
            "DAGSTER_GRPC_SHUTDOWN_GRACE_PERIOD": "10",
            "ML_PLATFORM_SOURCE": "landing",
            "ML_PLATFORM_AUTOMATION": "on",
        }
        dev_command = [str(support.BIN / "dagster"), "dev"]
        with served(dev_command, work / "dagster-dev.log", env=env) as (dev, _, startup, started):
            os.environ["DAGSTER_HOME"] = str(home)  # the local storage's base directory
            instance = dg.DagsterInstance.from_config(str(home))
            support.wait_for(
                lambda: all(
                    instance.get_daemon_heartbeats().get(name) is not None for name in REQUIRED_DAEMONS
                ),
                timeout=120,
                proc=dev,
                what="dagster daemon",
            )
            startup["daemon_ready_seconds"] = time.perf_counter() - started
            landing_root = data / "landing"
            per_day = []
            for i in range(days):
                day = (date.fromisoformat(first_day) + timedelta(days=i)).isoformat()
                landed_at = time.time()
                land_days(date.fromisoformat(day), 1, landing_root, reference=(i == 0), echo=lambda _: None)
                deadline = time.monotonic() + timeout_per_day
                predicted = None
                while predicted is None:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"no prediction for {day} within {timeout_per_day:.0f}s; see {dev.args}"
                        )
                    if dev.poll() is not None:
                        raise RuntimeError(f"dagster dev exited with {dev.returncode}")
                    time.sleep(0.25)
                    predicted = _predicted_at(instance, day)
                support.wait_for(lambda: _active_runs(instance) == 0, timeout=180, what="landing runs")
                per_day.append(
                    {
                        "day": day,
                        "latency_seconds": predicted - landed_at,
                        "warmup": i < warmup,
                        **_run_phases(instance, day, landed_at),
                    }
                )
            runs = instance.get_runs(dg.RunsFilter(tags={"ml_platform/trigger": "landing_sensor"}))
            outcome = {
                "runs": len(runs),
                "failed_runs": sum(r.status != dg.DagsterRunStatus.SUCCESS for r in runs),
                "all_runs": len(instance.get_runs()),
            }
            instance.dispose()
    return {"prep_seconds": prep_seconds, "startup": startup, "days": per_day, **outcome}
