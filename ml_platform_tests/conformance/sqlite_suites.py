"""Upstream's SQLite storage suites (``dagster_tests.storage_tests``), wired to the embedded
instance's storages: each class here is upstream's SQLite class with the storage fixture replaced,
so it keeps upstream's SQLite-specific tests and capability flags.

Importable only where the runner puts the upstream test packages on the path.
"""

import os
import tempfile
from contextlib import contextmanager

import pytest
from dagster import instance_for_test

# Modules, not classes: a test class in this namespace would be collected with upstream's fixtures.
from dagster_tests.storage_tests import test_event_log, test_run_storage, test_schedule_storage
from dagster_tests.storage_tests.utils import daemon_cursor_storage, partition_status_cache

from ml_platform.runtime.sqlite_storage import (
    BatchingEventLogStorage,
    CachedEngineRunStorage,
    CachedEngineScheduleStorage,
)
from ml_platform_tests.conformance.storages import sqlite_storage_config

__all__ = [
    "TestBatchingEventLogStorage",
    "TestCachedEngineRunStorage",
    "TestCachedEngineScheduleStorage",
    "TestCachedEngineDaemonCursorStorage",
    "TestLocalSqlitePartitionStatusCache",
]


@contextmanager
def embedded_instance():
    """An instance on ``deploy/dagster.local.yaml``'s storage in a new directory (upstream's SQLite
    suites make theirs under the working directory too)."""
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as home:
        with instance_for_test(temp_dir=home, overrides={"storage": sqlite_storage_config(home)}) as instance:
            yield instance


class TestBatchingEventLogStorage(test_event_log.TestSqliteEventLogStorage):
    @pytest.fixture(name="instance")
    def instance(self):
        with embedded_instance() as instance:
            yield instance

    @pytest.fixture(name="storage")
    def event_log_storage(self, instance):
        assert type(instance.event_log_storage) is BatchingEventLogStorage
        yield instance.event_log_storage


class TestCachedEngineRunStorage(test_run_storage.TestSqliteRunStorage):
    @pytest.fixture(name="instance")
    def instance(self):
        with embedded_instance() as instance:
            yield instance

    @pytest.fixture(name="storage")
    def run_storage(self, instance):
        assert type(instance.run_storage) is CachedEngineRunStorage
        yield instance.run_storage


class TestCachedEngineScheduleStorage(test_schedule_storage.TestSqliteScheduleStorage):
    @pytest.fixture(name="storage")
    def schedule_storage(self):
        with tempfile.TemporaryDirectory() as directory:
            storage = CachedEngineScheduleStorage.from_local(directory)
            yield storage
            storage.dispose()


class TestCachedEngineDaemonCursorStorage(daemon_cursor_storage.TestDaemonCursorStorage):
    __test__ = True

    @pytest.fixture(name="storage")
    def cursor_storage(self):
        with tempfile.TemporaryDirectory() as directory:
            storage = CachedEngineRunStorage.from_local(directory)
            yield storage
            storage.dispose()


class TestLocalSqlitePartitionStatusCache(partition_status_cache.TestPartitionStatusCache):
    """The asset status cache that the event log storage keeps (written with every run's events)."""

    @pytest.fixture(name="instance")
    def instance(self):
        with embedded_instance() as instance:
            yield instance
