"""The production instance's storage: Dagster's PostgreSQL storage, with a ranged run's planned
events written as one batch.

Creating a ranged run records one planned event per asset and partition before the run starts (a
year of raw and features: 2,190). Dagster's PostgreSQL storage writes each in its own two
autocommitted statements over a new connection, some 10 ms apiece; the run's own materializations
it already writes in batches. Here a batch of planned events is one transaction: the rows, their
indexed tags, and each asset's latest event, as ``store_event`` writes them one by one.

Selected in ``deploy/dagster.yaml`` with ``storage: custom``; the tables, migrations and every
other write are Dagster's own, so a plain ``storage: postgres`` instance reads the same database.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster_postgres import DagsterPostgresStorage, PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

from ml_platform.runtime import apply_accelerators
from ml_platform.runtime.guard import POSTGRES_STORAGE
from ml_platform.runtime.sqlite_storage import PlannedCheckRows, index_asset_events, same_type_runs


class BatchingPostgresEventLogStorage(PlannedCheckRows, PostgresEventLogStorage):
    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        for group in same_type_runs(events):
            if group[0].dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
                self._store_planned(group)
            else:
                super().store_event_batch(group)

    def _store_planned(self, events: list[EventLogEntry]) -> None:
        with self.index_transaction() as conn:
            inserted = conn.execute(
                SqlEventLogStorageTable.insert().returning(
                    SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
                ),
                [self._event_to_row(event) for event in events],
            )
            index_asset_events(self, conn, events, [row[0] for row in inserted])


class PostgresStorage(DagsterPostgresStorage):
    """``storage: postgres`` (same configuration) with the event log storage above."""

    def __init__(
        self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None
    ):
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        self._run_storage = PostgresRunStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._event_log_storage = BatchingPostgresEventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._schedule_storage = PostgresScheduleStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        DagsterStorage.__init__(self)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> DagsterPostgresStorage:
        """Loading the instance applies the process-wide accelerators; with this one off (switch
        or unverified versions), the instance gets Dagster's stock PostgreSQL storage."""
        apply_accelerators()
        if not POSTGRES_STORAGE.on():
            return DagsterPostgresStorage.from_config_value(inst_data, config_value)
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
