"""The instance storages: the embedded one (deploy/dagster.local.yaml), Dagster's SQLite files with
one engine per database file, and the production one (deploy/dagster.yaml) on PostgreSQL; both
write a ranged run's events in batches."""

import logging

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster_postgres import PostgresEventLogStorage

from ml_platform.runtime import guard, postgres_storage
from ml_platform.runtime import sqlite_storage as instance_storage
from ml_platform_tests.conftest import local_instance, production_instance
from ml_platform_tests.services import EVENT_BATCH_SIZE

days = dg.DailyPartitionsDefinition(start_date="2013-01-01", end_date="2013-01-31")


@dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
def daily(context) -> None:
    """Stands in for a ranged raw or feature asset: one materialization event per day."""


def test_a_ranged_run_reuses_one_engine_per_database(tmp_path, monkeypatch):
    made = []
    real = instance_storage.create_engine
    monkeypatch.setattr(instance_storage, "create_engine", lambda *a, **k: made.append(a[0]) or real(*a, **k))
    monkeypatch.setattr(instance_storage, "_engines", {})
    with local_instance(tmp_path) as instance:
        assert isinstance(instance.event_log_storage, instance_storage.CachedEngineEventLogStorage)
        tags = {
            "dagster/asset_partition_range_start": "2013-01-01",
            "dagster/asset_partition_range_end": "2013-01-30",
        }
        result = dg.materialize([daily], instance=instance, tags=tags)
        assert result.success
        assert len(instance.get_materialized_partitions(daily.key)) == 30
    # Dozens of events written, each database file opened through one engine: the run's shard,
    # the index shard, runs.db and schedules.db.
    assert len(made) == len(set(made)) <= 4, made


def test_what_it_stores_is_dagster_sqlite_storage_on_disk(tmp_path):
    """A home written through it opens with Dagster's own SQLite storage, runs and events intact."""
    with local_instance(tmp_path) as instance:
        result = dg.materialize([daily], instance=instance, partition_key="2013-01-05")
        assert result.success
    with dg.instance_for_test(temp_dir=str(tmp_path)) as plain:
        assert type(plain.event_log_storage).__name__ == "SqliteEventLogStorage"
        assert plain.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
        assert plain.get_materialized_partitions(daily.key) == {"2013-01-05"}


@dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run(), code_version="1")
def daily_with_versions(context) -> dg.Output[None]:
    """A ranged output whose per-day materializations carry data versions (stored as tags)."""
    return dg.Output(None, data_version=dg.DataVersion("v1"))


def _stored(instance, key: dg.AssetKey) -> dict:
    """What readers of the instance see: per-day materializations, their tags, the asset's latest."""
    records = instance.fetch_materializations(key, limit=1000).records
    return {
        "partitions": sorted(r.partition_key for r in records),
        "tags": sorted(
            (r.partition_key, tuple(sorted(r.asset_materialization.tags.items()))) for r in records
        ),
        "materialized": instance.get_materialized_partitions(key),
        "check_rows": sorted(
            (r.partition or "", r.status.value, r.event.dagster_event_type.value if r.event else "")
            for r in instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(key, "daily_check"), limit=1000
            )
        ),
        "latest_partition": instance.get_latest_materialization_event(key).dagster_event.partition,
        "planned": instance.get_latest_planned_materialization_info(key) is not None,
        # The indexed tag rows (data versions), found by the event id the index shard gave out.
        "indexed_tags": sorted(
            (r.partition_key, tuple(sorted(t.items())))
            for r in records
            for t in instance.event_log_storage.get_event_tags_for_asset(key, filter_event_id=r.storage_id)
        ),
    }


@dg.asset_check(asset=daily_with_versions)
def daily_check() -> dg.AssetCheckResult:
    """A check in the run: its planned event follows the assets' in the same batch."""
    return dg.AssetCheckResult(passed=True)


# Each storage, and its method that writes a run of same-type events together.
STORAGES = {
    "local": (local_instance, instance_storage.BatchingEventLogStorage, "_store_together"),
    "production": (production_instance, postgres_storage.BatchingPostgresEventLogStorage, "_store_planned"),
}


@pytest.mark.parametrize("storage", STORAGES)
def test_a_ranged_run_is_stored_in_batches_that_read_back_as_event_by_event(storage, tmp_path, monkeypatch):
    """With the platform's batch size, a ranged run hands its per-day events to the storage in
    batches (SQLite: any batch in one transaction per file; PostgreSQL: the planned events in one
    transaction); what readers see equals an event-by-event write."""
    make_instance, storage_class, together = STORAGES[storage]
    batches, failures = [], []
    real_batch, real_together = storage_class.store_event_batch, getattr(storage_class, together)

    def spy(self, events):
        # Dagster stores a batch event by event when store_event_batch raises: a failure must show.
        try:
            real_batch(self, events)
        except Exception as exc:
            failures.append(exc)
            raise

    def spy_together(self, events):
        batches.append({e.dagster_event.event_type for e in events})
        real_together(self, events)

    monkeypatch.setattr(storage_class, "store_event_batch", spy)
    monkeypatch.setattr(storage_class, together, spy_together)
    tags = {
        "dagster/asset_partition_range_start": "2013-01-01",
        "dagster/asset_partition_range_end": "2013-01-30",
    }
    seen = {}
    for size in (EVENT_BATCH_SIZE, "0"):
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", size)
        home = tmp_path / f"batch-{size}"
        home.mkdir()
        # Batched, on the platform's storage; event by event, on Dagster's own storage class.
        with make_instance(home, plain=size == "0") as instance:
            assert isinstance(instance.event_log_storage, storage_class) == (size != "0")
            # Twice: the second run's batches meet the asset's existing rows.
            for _ in range(2):
                result = dg.materialize([daily_with_versions, daily_check], instance=instance, tags=tags)
                assert result.success
            seen[size] = _stored(instance, daily_with_versions.key)
            # The run's own events (its own file on SQLite), read apart from the index: each once.
            run_events = instance.get_records_for_run(result.run_id, limit=10_000).records
            seen[size]["run_file"] = sorted(
                (r.event_log_entry.dagster_event_type.value, r.event_log_entry.dagster_event.partition or "")
                for r in run_events
                if r.event_log_entry.dagster_event and r.event_log_entry.dagster_event.asset_key
            )
    assert not failures, failures
    # The planned events are written together though the check's planned event shares their batch.
    assert {dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED} in batches
    if storage == "local":
        assert {dg.DagsterEventType.ASSET_MATERIALIZATION} in batches
    batched, one_by_one = seen[EVENT_BATCH_SIZE], seen["0"]
    assert batched == one_by_one
    # The check's planned rows: one per partition and run, as Dagster writes them.
    planned_checks = [row for row in batched["check_rows"] if row[1] == "PLANNED"]
    assert len(planned_checks) == 60 and len({row[0] for row in planned_checks}) == 30
    assert len(batched["partitions"]) == 60 and batched["latest_partition"] == "2013-01-30"
    assert len(batched["run_file"]) == 60 == len(set(batched["run_file"]))  # planned + materialized
    assert [tags for _, tags in batched["indexed_tags"]] == [(("dagster/data_version", "v1"),)] * 60


@pytest.fixture
def fresh_guard(monkeypatch):
    """Each case judges the versions anew, as a new process would."""
    guard._versions_verified.cache_clear()
    yield monkeypatch
    guard._versions_verified.cache_clear()


@pytest.mark.parametrize("storage", ["local", "production"])
@pytest.mark.parametrize("why", ["switched off", "unverified dagster"])
def test_off_the_instance_configs_give_dagster_stock_storage(tmp_path, fresh_guard, caplog, storage, why):
    if why == "switched off":
        fresh_guard.setenv(guard.SWITCH, "off")
    else:
        real = guard.installed
        fresh_guard.setattr(guard, "installed", lambda d: "1.13.99" if d == "dagster" else real(d))
    stock = {"local": SqliteEventLogStorage, "production": PostgresEventLogStorage}[storage]
    make_instance = {"local": local_instance, "production": production_instance}[storage]
    with caplog.at_level(logging.WARNING, "ml_platform.runtime"), make_instance(tmp_path) as instance:
        assert type(instance.event_log_storage) is stock
        assert dg.materialize([daily], instance=instance, partition_key="2013-01-02").success
    warnings = [r.getMessage() for r in caplog.records if r.name == "ml_platform.runtime"]
    if why == "unverified dagster":
        # One warning per accelerator, naming it and the version found.
        name = {"local": "sqlite_storage", "production": "postgres_storage"}[storage]
        assert any(name in w and "1.13.99" in w for w in warnings), warnings
        assert len(warnings) == len(set(warnings))
    else:
        assert not warnings


def test_an_unverified_dagster_turns_every_accelerator_off_with_one_warning_each(fresh_guard, caplog):
    """Every accelerator runs inside Dagster (dbt_in_process in the step that streams its events),
    so each is off on a Dagster it was not verified on, and says so once, naming the version."""
    fresh_guard.setenv(guard.SWITCH, "on")
    real = guard.installed
    fresh_guard.setattr(guard, "installed", lambda d: "1.13.99" if d == "dagster" else real(d))
    with caplog.at_level(logging.WARNING, "ml_platform.runtime"):
        assert guard.status() == {acc.name: False for acc in guard.ALL}
        assert guard.status() == {acc.name: False for acc in guard.ALL}
    warnings = [r.getMessage() for r in caplog.records if r.name == "ml_platform.runtime"]
    assert sorted(w.split()[1] for w in warnings) == sorted(acc.name for acc in guard.ALL), warnings
    assert all("dagster 1.13.27" in w and w.endswith("this process has 1.13.99") for w in warnings), warnings


def test_a_switch_naming_no_accelerator_is_refused_with_the_names_that_exist(fresh_guard):
    fresh_guard.setenv(guard.SWITCH, "pool_waits,pool_wait")
    with pytest.raises(
        guard.SwitchError, match=r"ML_PLATFORM_ACCELERATORS=.*pool_wait is not an accelerator"
    ):
        guard.status()
    fresh_guard.setenv(guard.SWITCH, "pool_waits")
    assert {acc.name for acc in guard.ALL if guard.switched_on(acc.name)} == {"pool_waits"}
