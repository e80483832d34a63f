"""The embedded instance's storage: Dagster's SQLite storage, one SQLAlchemy engine per database.

Dagster's SQLite storages build a new engine for every statement they run, so nothing SQLAlchemy
compiles is ever reused: a partition materialization event cost about 19 ms, most of it
statement compilation and engine set-up, and a year backfill stores some 4,500 events. Here each
database file keeps one engine for the life of the process. Connections are still opened and
closed per use (``NullPool``, as Dagster does), so nothing is held across a fork or between
writers, and the files, schema and migrations are Dagster's own.

Selected in ``deploy/dagster.local.yaml`` with ``storage: custom``; PostgreSQL deployments
(``deploy/dagster.yaml``) are unaffected.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dagster._core.storage.base_storage import DagsterStorage
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
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

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


class LocalSqliteStorage(DagsterSqliteStorage):
    """``storage: sqlite`` with the storages above; same ``base_dir`` layout on disk."""

    def __init__(self, base_dir: str, inst_data=None):
        self.base_dir = base_dir
        self._inst_data = inst_data
        self._run_storage = CachedEngineRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = CachedEngineEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = CachedEngineScheduleStorage.from_local(_schedule_directory(base_dir))
        DagsterStorage.__init__(self)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> LocalSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)
