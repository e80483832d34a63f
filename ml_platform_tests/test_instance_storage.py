"""The embedded instance storage (deploy/dagster.local.yaml): Dagster's SQLite files, one engine
per database file."""

import dagster as dg

from ml_platform.automation import instance_storage
from ml_platform_tests.conftest import local_instance

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
