"""The embedded instance's storage: Dagster's SQLite storage, one SQLAlchemy engine per database.

Dagster's SQLite storages build a new engine for every statement they run, so nothing SQLAlchemy
compiles is ever reused: a partition materialization event cost about 19 ms, most of it
statement compilation and engine set-up, and a year backfill stores some 4,500 events. Here each
database file keeps one engine for the life of the process. Connections are still opened and
closed per use (``NullPool``, as Dagster does), so nothing is held across a fork or between
writers, and the files, schema and migrations are Dagster's own.

A ranged run reports its events per partition in batches when ``DAGSTER_EVENT_BATCH_SIZE`` is set
in the process that writes them: a year's planned events (written where the run is created: the
daemon, the webserver or an in-process ``materialize``), then each asset's 365 materializations
(written by the run). The deployment sets it for every process: the Makefile, docker-compose.yml
and the Helm values. Dagster's SQLite storage writes a batch one event at a time, two transactions each;
here a batch is one transaction per database file, with the same rows.

Selected in ``deploy/dagster.local.yaml`` with ``storage: custom``; the PostgreSQL storage of
``deploy/dagster.yaml`` is ``ml_platform.runtime.postgres_storage``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from dagster import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster_shared.serdes import serialize_value
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from ml_platform.runtime import apply_accelerators
from ml_platform.runtime.guard import SQLITE_STORAGE

_engines: dict[tuple[str, bool], Engine] = {}
_engines_lock = threading.Lock()


def engine_for(conn_string: str, busy_timeout: bool = False) -> Engine:
    """The process's engine for one SQLite file, made on first use (with Dagster's own options)."""
    key = (conn_string, busy_timeout)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS} if busy_timeout else {}
            engine = _engines[key] = create_engine(conn_string, poolclass=NullPool, connect_args=connect_args)
        return engine


class CachedEngineRunStorage(SqliteRunStorage):
    @contextmanager
    def connect(self) -> Iterator:
        with engine_for(self._conn_string).connect() as conn, conn.begin():
            yield conn


class CachedEngineScheduleStorage(SqliteScheduleStorage):
    @contextmanager
    def connect(self) -> Iterator:
        with engine_for(self._conn_string).connect() as conn, conn.begin():
            yield conn


class CachedEngineEventLogStorage(SqliteEventLogStorage):
    @contextmanager
    def _connect(self, shard: str) -> Iterator:
        with self._db_lock:
            engine = engine_for(self.conn_string_for_shard(shard), busy_timeout=True)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn


# Batches of these are written together; any other batch goes event by event, as Dagster does.
BATCHED_TOGETHER = frozenset(
    {
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_OBSERVATION,
        DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    }
)


def same_type_runs(events: Sequence[EventLogEntry]) -> Iterator[list[EventLogEntry]]:
    """Consecutive events of one type and one run, in order: a run's planned batch is its assets'
    planned events followed by its checks' planned events."""
    group: list[EventLogEntry] = []
    for event in events:
        if group and (event.dagster_event_type, event.run_id) != (
            group[0].dagster_event_type,
            group[0].run_id,
        ):
            yield group
            group = []
        group.append(event)
    if group:
        yield group


def index_asset_events(storage, conn, events: list[EventLogEntry], ids: list[int]) -> None:
    """The index rows ``store_event`` writes per asset event: its tags, and the asset table, which
    keeps each key's latest event (written once per key, with the last; the events share a type)."""
    storage._store_asset_event_tags(conn, events, ids)
    latest = {e.dagster_event.asset_key: (e, id_) for e, id_ in zip(events, ids, strict=True)}
    for event, id_ in latest.values():
        storage._store_asset_event(conn, event, id_)


class PlannedCheckRows:
    """A ranged run plans each asset check once for all its partitions; Dagster stores one row per
    partition, serializing the whole event again for each (and compiling a 365-row insert): a
    quarter of a second per check for a year. Here: the same rows, the event serialized once,
    inserted as one executemany."""

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        planned = event.dagster_event.event_specific_data
        subset = planned.partitions_subset
        partitions = subset.get_partition_keys() if subset else [None]
        common = {
            "asset_key": planned.asset_key.to_string(),
            "check_name": planned.check_name,
            "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),
            "evaluation_event_storage_id": event_id,
        }
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert(), [{**common, "partition": p} for p in partitions])


class BatchingEventLogStorage(PlannedCheckRows, CachedEngineEventLogStorage):
    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        for group in same_type_runs(events):
            if group[0].dagster_event_type in BATCHED_TOGETHER:
                self._store_together(group)
            else:
                super().store_event_batch(group)

    def _store_together(self, events: list[EventLogEntry]) -> None:
        """What ``store_event`` writes for each event, in one transaction on the run's shard and
        one on the index shard."""
        rows = [self._event_to_row(event) for event in events]  # serialized once, for both files
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_transaction() as conn:
            inserted = conn.execute(
                SqlEventLogStorageTable.insert().returning(
                    SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
                ),
                rows,
            )
            index_asset_events(self, conn, events, [row[0] for row in inserted])


class LocalSqliteStorage(DagsterSqliteStorage):
    """``storage: sqlite`` with the storages above; same ``base_dir`` layout on disk."""

    def __init__(self, base_dir: str, inst_data=None):
        self.base_dir = base_dir
        self._inst_data = inst_data
        self._run_storage = CachedEngineRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = BatchingEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = CachedEngineScheduleStorage.from_local(_schedule_directory(base_dir))
        DagsterStorage.__init__(self)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> DagsterSqliteStorage:
        """Loading the instance applies the process-wide accelerators; with this one off (switch
        or an unverified Dagster), the instance gets Dagster's stock SQLite storage."""
        apply_accelerators()
        if not SQLITE_STORAGE.on():
            return DagsterSqliteStorage.from_config_value(inst_data, config_value)
        return cls.from_local(inst_data=inst_data, **config_value)
