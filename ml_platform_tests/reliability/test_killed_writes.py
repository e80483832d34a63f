"""Killed mid-write: SIGKILL at the worst moment of a write, deterministically.

* ``ML_PLATFORM_KILL_AT=warehouse.before_commit``: the IO manager has deleted the partition
  window and inserted the new rows, the transaction is not committed;
* ``ML_PLATFORM_KILL_AT=features.before_publish_commit``: dbt has built and tested the window in
  ``features_staging``; its publication has deleted the window of ``features.flight_features``
  and inserted the staged rows, the transaction is not committed;
* ``ML_PLATFORM_KILL_AT=registry.before_alias``: the new model version is registered and
  tagged, the ``champion`` alias has not moved.

Each time the stored state is exactly the previous one (compared row for row), a day that never
existed stays absent, and running again completes.
"""

from __future__ import annotations

import time
from datetime import date

import dagster as dg
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from ml_platform.automation.jobs import IN_ONE_PROCESS
from ml_platform.features.assets import MODEL_CODE_VERSIONS
from ml_platform.ingestion.assets import raw_reference_assets
from ml_platform.ingestion.landing import land_days
from ml_platform.ingestion.source import write_frame_atomically
from ml_platform.keys import CANDIDATES, CHAMPION_MODEL, MODEL_SELECTION, RAW_DAILY, TRAINING_SET
from ml_platform.resources import build_resources
from ml_platform.resources.mlflow import CHAMPION
from ml_platform_tests.ml_support import all_definitions
from ml_platform_tests.reliability.support import (
    OUTPUT,
    claimed_slots,
    dagster_dev,
    failure_messages,
    instance_yaml,
    partition,
    platform,
    reap_killed_runs,
    run_assets,
    scalar,
    wait_for_runs,
)

D1, D2, D3 = "2013-01-02", "2013-01-03", "2013-01-04"
RAW = [key.to_user_string() for key in RAW_DAILY]
DBT = [key.to_user_string() for key in MODEL_CODE_VERSIONS]
FORCE = {"ml_platform/force_rebuild": "true"}
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@pytest.fixture(scope="module")
def landed(tmp_path_factory):
    """Three landed days; D1 ingested with its features. Run retries are off so that a killed
    run is observed as it is, not replaced by an automatic retry."""
    root = tmp_path_factory.mktemp("killed")
    config = instance_yaml(run_retries={"enabled": False})
    with platform(root, "landing", instance_config=config) as (env, settings, instance):
        land_days(date.fromisoformat(D1), 3, env.landing, echo=lambda _: None)
        resources = build_resources(settings)
        assert dg.materialize(raw_reference_assets, resources=resources, instance=instance).success
        assert materialize([*RAW, *DBT], instance, D1).success
        yield env, instance


def materialize(selection: list[str], instance, first: str, last: str | None = None, tags=None):
    """In this process, with the platform's definitions and resources."""
    from ml_platform.config import load_settings

    range_tags = {RANGE_START: first, RANGE_END: last} if last else {}
    return dg.materialize(
        all_definitions(),
        selection=[dg.AssetKey.from_user_string(k) for k in selection],
        resources=build_resources(load_settings()),
        instance=instance,
        partition_key=None if last else first,
        tags={**range_tags, **(tags or {})},
        raise_on_error=False,
    )


def correct_upstream(env, day: str, drop: int) -> int:
    """Upstream re-delivers a day with ``drop`` fewer flights; returns the new row count."""
    path = env.landing / "flights" / f"{day}.parquet"
    frame = pd.read_parquet(path)
    write_frame_atomically(frame.iloc[:-drop], path)
    return len(frame) - drop


def raw_day(env, table: str, day: str) -> pd.DataFrame:
    column = "flight_date" if table == "flights" else "weather_date"
    return partition(env.warehouse, f"raw.{table}", column, day)


def features_day(env, day: str) -> pd.DataFrame:
    return partition(env.warehouse, "features.flight_features", "flight_date", day)


def rows(env, table: str, column: str, day: str) -> int:
    return int(scalar(env.warehouse, f"select count(*) from {table} where {column} = ?::date", [day]))  # noqa: S608


def test_a_raw_write_killed_before_commit_leaves_every_partition_as_it_was(landed, record):
    """SIGKILL between insert and commit of a raw window (one existing day, one new day)."""
    env, instance = landed
    before = {t: raw_day(env, t, D1) for t in ("flights", "weather")}
    corrected = correct_upstream(env, D1, drop=5)

    killed = run_assets(
        RAW, partition=D1, last=D2, kill_at="warehouse.before_commit", log=OUTPUT / "kill" / "raw.log"
    )
    assert killed.killed, killed.output[-3000:]
    assert claimed_slots(instance), "the killed run should still hold its warehouse slot"
    reaped = reap_killed_runs(instance)
    for table in ("flights", "weather"):
        assert_frame_equal(raw_day(env, table, D1), before[table])
    assert rows(env, "raw.flights", "flight_date", D2) == 0
    assert rows(env, "raw.weather", "weather_date", D2) == 0

    again = materialize(RAW, instance, D1, D2)
    assert again.success
    assert rows(env, "raw.flights", "flight_date", D1) == corrected
    assert rows(env, "raw.flights", "flight_date", D2) == len(
        pd.read_parquet(env.landing / "flights" / f"{D2}.parquet")
    )
    record(
        fault="process SIGKILLed between insert and commit of a raw window (existing day + new day)",
        expected="existing day exactly as before, new day absent; re-run completes",
        observed=(
            f"exit {killed.returncode}; {D1}: {len(before['flights'])} flights and "
            f"{len(before['weather'])} weather rows identical to before; {D2}: absent; "
            f"{len(reaped)} run left STARTED holding the warehouse slot until marked failed; "
            f"re-run stored {corrected} corrected flights"
        ),
        rows_lost=0,
        rows_duplicated=0,
    )


def test_a_features_publish_killed_before_commit_leaves_the_features_as_they_were(landed, record):
    """SIGKILL of the run as it publishes the audited window (window deleted, uncommitted)."""
    env, instance = landed
    corrected = correct_upstream(env, D1, drop=3)
    assert materialize(RAW, instance, D1, D3).success  # raw changed: the features are now stale
    before = features_day(env, D1)
    assert len(before) != corrected

    killed = run_assets(
        DBT,
        partition=D1,
        last=D3,
        tags=FORCE,
        kill_at="features.before_publish_commit",
        log=OUTPUT / "kill" / "dbt.log",
    )
    assert killed.killed, killed.output[-3000:]
    reap_killed_runs(instance)
    assert_frame_equal(features_day(env, D1), before)
    for day in (D2, D3):
        assert rows(env, "features.flight_features", "flight_date", day) == 0

    again = materialize(DBT, instance, D1, D3, tags=FORCE)
    assert again.success
    for day in (D1, D2, D3):
        assert rows(env, "features.flight_features", "flight_date", day) == rows(
            env, "raw.flights", "flight_date", day
        )
    record(
        fault="run SIGKILLed publishing the audited window into features.flight_features (window deleted)",
        expected="features of the existing day exactly as before, new days absent; re-run completes",
        observed=(
            f"exit {killed.returncode}; {D1}: {len(before)} feature rows identical to before; "
            f"{D2}, {D3}: absent; re-run built {corrected} rows for {D1} and both new days"
        ),
        rows_lost=0,
        rows_duplicated=0,
    )


@pytest.mark.timeout(600)
def test_a_daemon_launched_run_killed_mid_write_is_marked_failed(landed, record):
    """A run launched by the daemon dies at the write: it is marked FAILURE, not left STARTED."""
    env, instance = landed
    correct_upstream(env, D1, drop=2)
    before = raw_day(env, "flights", D1)
    started = time.monotonic()
    with dagster_dev("killed-run", ML_PLATFORM_KILL_AT="warehouse.before_commit") as dev:
        # In-process executor: the run worker itself dies, so nothing inside the run can report
        # it. (With the multiprocess executor the step's process dies under a living run worker,
        # which retries the step by its retry policy and then fails the run itself.)
        run_id = dev.submit("ingest_days", tags={"dagster/partition": D1}, run_config=IN_ONE_PROCESS)
        (run,) = wait_for_runs(instance, [run_id], timeout=300, server=dev)
        detected = time.monotonic() - started
        deadline = time.monotonic() + 90
        while claimed_slots(instance) and time.monotonic() < deadline:
            time.sleep(1)
        held = claimed_slots(instance)
    messages = failure_messages(instance, run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE, messages
    crash = next((m for m in messages if "signal 9" in m or "SIGKILL" in m), None)
    assert crash is not None, messages
    assert_frame_equal(raw_day(env, "flights", D1), before)
    assert held == [], f"the killed run still holds warehouse slots: {held}"

    again = materialize([*RAW, *DBT], instance, D1, tags=FORCE)
    assert again.success
    assert rows(env, "raw.flights", "flight_date", D1) == len(before) - 2
    record(
        fault="daemon-launched run whose run worker is SIGKILLed at the write",
        expected="run marked FAILURE by the platform, partition as before, re-run completes",
        observed=(
            f"FAILURE {detected:.0f}s after launch: {crash[:110]!r}; partition identical; "
            "warehouse slot freed by run monitoring (free_slots_after_run_end_seconds); "
            "re-run stored the corrected day"
        ),
        rows_lost=0,
        rows_duplicated=0,
    )


# --- the registry ------------------------------------------------------------------------------------

TRAINING = [
    key.to_user_string()
    for key in (TRAINING_SET, *(c.key for c in CANDIDATES), MODEL_SELECTION, CHAMPION_MODEL)
]


def _versions(tracking):
    client = tracking.client()
    found = client.search_model_versions(f"name='{tracking.registered_model_name}'")
    return {
        str(v.version): client.get_model_version(tracking.registered_model_name, v.version) for v in found
    }


def _check_passes(instance, resources) -> bool:
    from ml_platform.training.selection import champion_passed_gate

    result = dg.materialize(
        all_definitions(),
        selection=dg.AssetSelection.checks(champion_passed_gate),
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation.passed


def _running_mlflow_runs(tracking) -> list[str]:
    client = tracking.client()
    experiment = client.get_experiment_by_name(tracking.experiment)
    return [
        r.info.run_id for r in client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    ]


@pytest.mark.timeout(900)
def test_a_promotion_killed_before_the_alias_moves_leaves_the_champion(trained, record):
    """SIGKILL after the new version is registered and before the champion alias moves."""
    with trained.active() as (settings, instance):
        resources = build_resources(settings)
        tracking = resources["mlflow"]
        champion = tracking.version_for(CHAMPION)
        assert champion is not None and champion.tags.get("gate") == "passed"
        known = set(_versions(tracking))

        killed = run_assets(
            TRAINING,
            run_config=trained.run_config(),
            tags=FORCE,  # refit: a new model, so a new registry version
            kill_at="registry.before_alias",
            log=OUTPUT / "kill" / "registry.log",
        )
        assert killed.killed, killed.output[-3000:]
        versions = _versions(tracking)
        new = sorted(set(versions) - known, key=int)
        assert len(new) == 1, (known, versions.keys())
        assert versions[new[0]].aliases == []
        assert tracking.version_for(CHAMPION).version == champion.version
        assert _check_passes(instance, resources)

        # A bare process has no monitor: mark its run failed as the code server does for a
        # daemon-launched run (see above), so the orphan sweep may end its MLflow run.
        assert len(reap_killed_runs(instance)) == 1
        orphans = _running_mlflow_runs(tracking)

        again = dg.materialize(
            all_definitions(),
            selection=[CHAMPION_MODEL],
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        assert again.success
        after = tracking.version_for(CHAMPION)
        assert after.tags.get("gate") == "passed"
        assert int(after.version) >= int(new[0])
        assert _check_passes(instance, resources)
        assert _running_mlflow_runs(tracking) == []
    record(
        fault="promotion SIGKILLed after registering the new version, before moving the alias",
        expected="champion still the previous gated version; new version has no alias; check passes",
        observed=(
            f"exit {killed.returncode}; champion stayed v{champion.version}; v{new[0]} registered with "
            f"no alias; champion_passed_gate passed; {len(orphans)} MLflow run(s) left RUNNING, ended "
            f"by the next materialization, which made v{after.version} champion"
        ),
    )
